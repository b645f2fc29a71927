"""ONNX Runtime backend: the vision graph and the KV-cached decoder, with IOBinding.

Provider: TensorRT EP > CUDA EP > CPU from what this onnxruntime build offers, or forced.

The decoder's KV cache lives in buffers the runtime allocates once, sized from the manifest
(``decoder.max_seq``): two per layer and key/value ("ping" and "pong"). A decode step binds the
past to one and the present to the other, both by raw pointer, so the only copy is the graph's own
concat of past and the new token; the runtime copies nothing. Positions and the attention mask are
views of ``arange(max_seq)`` / ``ones(max_seq)`` made once. Every generation call, prefill
included, asks the graph for the last position's logits only (``logits_to_keep = 1``), which land
in one preallocated row. A shared prefix (prompt text, then a clip's visual tokens) is written by
its prefill straight into buffers of its own, which later questions read as their past, untouched.

Not thread-safe: one decoder runs one generation at a time (the ping/pong buffers are shared).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from exo2ego_edge.bundle import LOGITS_TO_KEEP, GraphSpec, Manifest, past_names, present_names
from exo2ego_edge.runtime.errors import BackendError
from exo2ego_edge.runtime.kv_cache import KVPrefix, PingPongDecoder

log = logging.getLogger(__name__)

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_PROVIDER_ALIASES = {"tensorrt": PROVIDER_ORDER[0], "trt": PROVIDER_ORDER[0], "cuda": PROVIDER_ORDER[1], "cpu": PROVIDER_ORDER[2]}


def choose_providers(device: str = "auto") -> list[str]:
    """Providers for ``device`` ("auto", "cpu", "cuda", "tensorrt"); CPU is always the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "auto":
        chosen = [p for p in PROVIDER_ORDER if p in available]
    else:
        wanted = _PROVIDER_ALIASES.get(device.lower())
        if wanted is None:
            raise BackendError(f"unknown device '{device}'; choose auto, cpu, cuda or tensorrt")
        if wanted not in available:
            raise BackendError(
                f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}); "
                "install onnxruntime-gpu (or JetPack's wheel) or pick --device cpu"
            )
        chosen = [wanted] + ([PROVIDER_ORDER[2]] if wanted != PROVIDER_ORDER[2] else [])
    return chosen


def session_options(threads: int | None, spin: bool = False):
    """ORT session options. ``spin``: let idle intra-op threads busy-wait for the next op.

    Off by default: on a CPU shared with other work (a camera pipeline on a Jetson, other jobs on
    a shared host) spinning threads take cycles from the thread doing the work; an edge-0.5b-wide
    FP32 decode step measured 15-30% slower with spinning on this project's loaded 2-core host.
    On an otherwise idle machine spinning can save a little wake-up latency per op.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1  # the graphs are sequential chains: one op at a time
    return opts


def _session(path: Path, providers: list[str], threads: int | None, spin: bool):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, spin), providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types with multi-line text
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"{path.name}: ONNX Runtime cannot load it ({first})") from None


def _device_of(providers: list[str]) -> str:
    return "cpu" if providers[0] == PROVIDER_ORDER[2] else "cuda"


class OrtVision:
    """``frames`` uint8 (N, H, W, 3) -> ``visual_tokens`` (N, P, D); counts its calls."""

    def __init__(self, bundle: Path, spec: GraphSpec, providers: list[str], threads: int | None, spin: bool = False):
        self.session = _session(bundle / spec.file, providers, threads, spin)
        self.input_name = spec.inputs[0].name
        self.output_name = spec.outputs[0].name
        self.calls = 0
        self.frames_encoded = 0

    def encode(self, frames: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.frames_encoded += int(frames.shape[0])
        (tokens,) = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(frames)})
        return tokens


class _Buffer:
    """A flat block of memory on the decoder's device that tensors of any shape can be bound to."""

    def __init__(self, elements: int, dtype: np.dtype, device: str):
        import onnxruntime as ort

        self.dtype, self.device = np.dtype(dtype), device
        self.elements = max(int(elements), 1)  # a zero-length past still needs a valid pointer
        if device == "cpu":
            self.array = np.empty(self.elements, dtype=self.dtype)
            self.ptr = self.array.ctypes.data
        else:
            self.value = ort.OrtValue.ortvalue_from_shape_and_type([self.elements], self.dtype, device, 0)
            self.ptr = self.value.data_ptr()


_EMPTY = KVPrefix(0, [])


class OrtDecoder(PingPongDecoder):
    """The decoder graph with IOBinding over preallocated KV buffers (see the module docstring)."""

    def __init__(self, bundle: Path, manifest: Manifest, providers: list[str], threads: int | None,
                 spin: bool = False):
        spec = manifest.graphs["decoder"]
        d = manifest.decoder
        self.session = _session(bundle / spec.file, providers, threads, spin)
        self.device = _device_of(providers)
        self.max_seq = d.max_seq
        self.vocab = d.vocab_size
        self.kv_shape = (1, d.num_kv_heads, d.head_dim)  # (B, kv_heads, ., head_dim)
        dtypes = {t.name: np.dtype(t.dtype) for t in spec.inputs + spec.outputs}
        self.embed_dtype = dtypes["inputs_embeds"]
        self.logits_dtype = dtypes["logits"]
        self.past, self.present = past_names(d.num_layers), present_names(d.num_layers)
        missing = sorted(set(self.past + self.present) - set(dtypes))
        if missing:
            raise BackendError(f"decoder graph lacks KV tensors the manifest implies: {missing[:3]}")
        self.kv_dtype = dtypes[self.past[0]]
        # Bundles exported before ``logits_to_keep`` existed return logits for every position.
        self.keeps_logits = LOGITS_TO_KEEP in dtypes
        row = d.num_kv_heads * d.head_dim
        self.ping = [_Buffer(row * self.max_seq, self.kv_dtype, self.device) for _ in self.past]
        self.pong = [_Buffer(row * self.max_seq, self.kv_dtype, self.device) for _ in self.past]
        self.positions = np.arange(self.max_seq, dtype=np.int64)[None]  # (1, max_seq)
        self.mask = np.ones((1, self.max_seq), dtype=np.int64)
        self.keep_last = np.ones((), dtype=np.int64)  # logits_to_keep = 1
        self.step_logits = np.empty((1, 1, self.vocab), dtype=self.logits_dtype)
        self.binding = self.session.io_binding()
        # Counters the tests and benchmarks read: graph calls and tokens pushed through them.
        self.calls = 0
        self.tokens_processed = 0

    # --- public ---------------------------------------------------------------------------
    def extend(self, prefix: KVPrefix | None, embeds: np.ndarray) -> tuple[KVPrefix, np.ndarray]:
        """Run ``embeds`` (S, D) after ``prefix`` and keep the result as a new shared prefix.

        Returns it and the last position's logits (V,), a view of the row the next call
        overwrites (copy it to keep it). The present is written straight into exact-size buffers
        of its own, so freezing the prefix costs no copy.
        """
        prefix = prefix or _EMPTY
        total = prefix.length + embeds.shape[0]
        self._check_room(total)
        row = self.kv_shape[1] * self.kv_shape[2]
        out = [_Buffer(row * total, self.kv_dtype, self.device) for _ in self.present]
        logits = self._run(embeds, prefix.length, prefix.buffers, out)
        return KVPrefix(total, out), logits

    def logits(self, prefix: KVPrefix | None, embeds: np.ndarray, logits_to_keep: int) -> np.ndarray:
        """Logits (K, V) of the last ``logits_to_keep`` of ``embeds`` (S, D) run after ``prefix``
        (0: all S), leaving every cache untouched: for teacher-forced checks and option scoring."""
        prefix = prefix or _EMPTY
        s = embeds.shape[0]
        self._check_room(prefix.length + s)
        keep = s if logits_to_keep <= 0 else min(logits_to_keep, s)
        rows = keep if self.keeps_logits else s
        logits = np.empty((1, rows, self.vocab), dtype=self.logits_dtype)
        self._bind(embeds, prefix.length, prefix.buffers, None, logits, keep)
        return logits[0, rows - keep :]

    # --- internals ------------------------------------------------------------------------
    def _run(self, embeds: np.ndarray, past_len: int, past: list[_Buffer], out: list[_Buffer]) -> np.ndarray:
        """One call keeping only the last position's logits, returned as a (V,) view of a buffer
        the next call overwrites."""
        s = embeds.shape[0]
        if self.keeps_logits or s == 1:
            logits = self.step_logits
        else:  # an older bundle computes every position's logits; only the last is used
            logits = np.empty((1, s, self.vocab), dtype=self.logits_dtype)
        self._bind(embeds, past_len, past, out, logits, 1)
        return logits[0, -1]

    def _bind(self, embeds: np.ndarray, past_len: int, past: list[_Buffer], out: list[_Buffer] | None,
              logits: np.ndarray, keep: int) -> None:
        """Bind one call's inputs and outputs and run it. ``out`` None: ORT allocates the present."""
        s = embeds.shape[0]
        total = past_len + s
        b = self.binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        x = np.ascontiguousarray(embeds[None], dtype=self.embed_dtype)  # (1, S, D)
        b.bind_cpu_input("inputs_embeds", x)
        b.bind_cpu_input("attention_mask", self.mask[:, :total])
        b.bind_cpu_input("position_ids", self.positions[:, past_len:total])
        keep_value = self.keep_last if keep == 1 else np.array(keep, dtype=np.int64)  # alive until run
        if self.keeps_logits:
            b.bind_cpu_input(LOGITS_TO_KEEP, keep_value)
        kv_past = (1, self.kv_shape[1], past_len, self.kv_shape[2])
        kv_out = (1, self.kv_shape[1], total, self.kv_shape[2])
        for i, name in enumerate(self.past):
            ptr = past[i].ptr if past else self.ping[i].ptr  # zero-length past: any valid pointer
            b.bind_input(name, self.device, 0, self.kv_dtype, kv_past, ptr)
        for i, name in enumerate(self.present):
            if out is None:
                b.bind_output(name, self.device)
            else:
                b.bind_output(name, self.device, 0, self.kv_dtype, kv_out, out[i].ptr)
        b.bind_output("logits", "cpu", 0, self.logits_dtype, logits.shape, logits.ctypes.data)
        self.session.run_with_iobinding(b)
        self.calls += 1
        self.tokens_processed += s


class OrtBackend:
    """Both graphs on one set of providers."""

    name = "ort"

    def __init__(self, bundle: str | os.PathLike, manifest: Manifest, device: str = "auto",
                 threads: int | None = None, spin: bool = False):
        bundle = Path(bundle)
        self.providers = choose_providers(device)
        log.info("ONNX Runtime providers: %s", ", ".join(self.providers))
        self.vision = OrtVision(bundle, manifest.graphs["vision"], self.providers, threads, spin)
        self.decoder = OrtDecoder(bundle, manifest, self.providers, threads, spin)

    @property
    def description(self) -> str:
        return f"onnxruntime ({self.providers[0]})"
