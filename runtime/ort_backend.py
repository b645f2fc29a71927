"""ONNX Runtime backend: the vision graph and the KV-cached decoder, with IOBinding.

Provider: TensorRT EP > CUDA EP > CPU from what this onnxruntime build offers, or forced, each with
options from the manifest (``provider_options``): TensorRT engine and timing caches beside the
bundle, fp16 / int8 from the graph's precision and explicit profiles from the export limits.

The decoder's KV cache lives in buffers the runtime allocates once, sized from the manifest
(``decoder.max_seq``). For a "concat" graph, two per layer and key/value ("ping" and "pong"): a
decode step binds the past to one and the present to the other, both by raw pointer, so the only
copy is the graph's own concat of past and the new token. For an "in-place" graph, one buffer
per layer and key/value, grown in chunks of rows: a step binds it whole as the past (the mask hides
the rows not yet filled) and gets only the new rows back, which it stores after the filled ones,
so no step copies the cache (see kv_cache.py). Positions and the attention mask are
views of ``arange(max_seq)`` / ``ones(max_seq)`` made once. Every generation call, prefill
included, asks the graph for the last position's logits only (``logits_to_keep = 1``), which land
in one preallocated row. A shared prefix (prompt text, then a clip's visual tokens) is written by
its prefill straight into buffers of its own, which later questions read as their past, untouched.
A bundle with a step graph (``decoder_step``) runs one-token calls on it and longer ones on
``decoder``, both bound to the same buffers.

Not thread-safe: one decoder runs one generation at a time (the ping/pong buffers are shared).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.bundle import LOGITS_TO_KEEP, GraphSpec, Manifest, decode_graph, past_names, present_names
from exo2ego_edge.runtime.errors import BackendError
from exo2ego_edge.runtime.kv_cache import CachedDecoder, InPlaceDecoder, KVPrefix, PingPongDecoder

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


# --- provider options (ONNX Runtime's TensorRT EP and CUDA EP pages name every key) -----------
# Export targets whose int8 graphs carry explicit symmetric Q/DQ (export/pipeline.py). A CPU
# target's int8 is ORT's dynamic quantization and MatMulNBits, which TensorRT cannot run.
GPU_TARGETS = ("cuda", "tensorrt")
PROFILE_KEYS = ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")
CACHE_KEYS = ("trt_engine_cache_enable", "trt_engine_cache_path",
              "trt_timing_cache_enable", "trt_timing_cache_path")
CUDA_OPTIONS: dict[str, Any] = {
    # A Jetson's GPU memory is its system RAM: grow the arena by what is asked, not to the next
    # power of two (the default), which can hold up to twice the memory in use.
    "arena_extend_strategy": "kSameAsRequested",
    # EXHAUSTIVE (the default) benchmarks every cuDNN conv algorithm for each new input shape,
    # i.e. each new frame count; a tower whose patch embedding stays a Conv would stall on it.
    "cudnn_conv_algo_search": "HEURISTIC",
}


def trt_cache_root(bundle: str | os.PathLike) -> Path:
    """Folder for the TensorRT EP's engines and timing cache: beside the bundle, never in it.

    ``verify_files`` ignores unlisted files, but a bundle is a checksummed artifact that is copied
    to other devices (engines are per GPU and TensorRT version), replaced whole by a re-export,
    and shipped read-only with the package; a cache has none of those lives.
    """
    bundle = Path(os.path.abspath(bundle))
    return bundle.parent / f".{bundle.name}.trt-cache"


def trt_profile(manifest: Manifest, graph: str) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) per dynamic axis of ``graph`` from the manifest's export limits: the profiles
    `engines build` gives its engines (a clip's frames; a decode step after a prompt, since decode
    steps dominate generation time). The past starts at 0: a first prefill has an empty past, and
    ORT does not widen explicit profiles at run time."""
    from exo2ego_edge.runtime.engines import axis_profiles

    d = manifest.decoder
    axes = axis_profiles(graph, d.max_frames, d.max_seq, opt_frames=manifest.preprocessing.num_frames)
    return {axis: tuple(points) for axis, points in axes.items()}


def trt_shape_values(manifest: Manifest) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) values of the scalar inputs TensorRT takes as shape tensors: a profile
    gives their values, not their (empty) shape. ``logits_to_keep`` sizes the logits; 0 means
    all positions, and the runtime passes 1..max_seq."""
    return {LOGITS_TO_KEEP: (0, 1, manifest.decoder.max_seq)}


def _profile_strings(spec: GraphSpec, axes: dict[str, tuple[int, int, int]],
                     values: dict[str, tuple[int, int, int]]) -> tuple[str, str, str] | None:
    """``name:d1xd2,...`` at min, opt and max for every input with a dynamic axis, and
    ``name:value`` for shape-tensor scalars; None when an axis has no profile, so that ORT sizes
    the profile from the shapes it sees."""
    points: tuple[list[str], list[str], list[str]] = ([], [], [])
    for t in spec.inputs:
        if not t.shape and t.name in values:
            dims = [[v] for v in values[t.name]]
        elif any(isinstance(a, str) for a in t.shape):
            if any(isinstance(a, str) and a not in axes for a in t.shape):
                return None
            dims = [[axes[a][i] if isinstance(a, str) else a for a in t.shape] for i in range(3)]
        else:
            continue
        for i in range(3):
            points[i].append(f"{t.name}:{'x'.join(map(str, dims[i]))}")
    return tuple(",".join(p) for p in points) if points[0] else None


def _export_target(manifest: Manifest) -> str | None:
    return (manifest.provenance.get("options") or {}).get("target")


def _trt_takes_whole_graph(manifest: Manifest, graph: str) -> bool:
    """Whether TensorRT can run all of ``graph``. ORT refuses a session whose explicit profiles
    miss a dynamic input of any TensorRT subgraph, and a split graph's subgraph inputs are inner
    tensors no manifest names. Split: graphs saved ORT-optimized (contrib ops such as
    SimplifiedLayerNormalization), MatMulNBits (int4; the CPU target's int8 decoder), and the CPU
    target's int8 vision (DynamicQuantizeLinear and MatMulInteger, or uint8 Q/DQ)."""
    precision = manifest.graphs[graph].precision
    if manifest.provenance.get("ort_graph_optimization") or precision == "int4":
        return False
    return precision != "int8" or _export_target(manifest) in GPU_TARGETS


def _tensorrt_options(bundle: str | os.PathLike, manifest: Manifest, graph: str) -> dict[str, Any]:
    spec = manifest.graphs[graph]
    root = trt_cache_root(bundle)
    qdq = spec.precision == "int8" and _export_target(manifest) in GPU_TARGETS
    fp16 = spec.precision == "fp16" or qdq  # with int8: layers left in float may run in fp16
    options: dict[str, Any] = {
        # ORT names an engine after the graph's file, tensor names, ORT / CUDA / TensorRT versions
        # and GPU, not its weights: a folder per graph checksum keeps a re-exported bundle of the
        # same architecture from loading the old engines.
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(root / f"{graph}-{(manifest.files.get(spec.file) or 'unlisted')[:16]}"),
        # Layer timings depend on the GPU and TensorRT version, not the model: both graphs share them.
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(root),
        "trt_fp16_enable": fp16,
        "trt_int8_enable": qdq,  # scales from the graph's Q/DQ nodes: no calibration table
    }
    if fp16:  # keep RMSNorm's Pow + ReduceMean in fp32: squares overflow fp16 past |x| ~ 256
        options["trt_layer_norm_fp32_fallback"] = True
    shapes = (_profile_strings(spec, trt_profile(manifest, graph), trt_shape_values(manifest))
              if _trt_takes_whole_graph(manifest, graph) else None)
    if shapes:  # else ORT sizes the profile from the shapes it sees, rebuilding as they grow
        options.update(zip(PROFILE_KEYS, shapes))
    return options


def provider_options(bundle: str | os.PathLike, manifest: Manifest, graph: str,
                     providers: list[str]) -> list[dict[str, Any]]:
    """One ONNX Runtime options dict per provider for ``graph`` ("vision" or "decoder") of the
    bundle; the CPU provider gets none. Pure: computes paths, creates nothing."""
    out = []
    for p in providers:
        if p == PROVIDER_ORDER[0]:
            out.append(_tensorrt_options(bundle, manifest, graph))
        elif p == PROVIDER_ORDER[1]:
            out.append(dict(CUDA_OPTIONS))
        else:
            out.append({})
    return out


def _with_cache_dirs(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create the TensorRT cache folders (ORT creates at most the last level); where that fails
    (a read-only location) run without caches rather than not at all."""
    out = []
    for opts in options:
        for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
            if key not in opts:
                continue
            try:
                Path(opts[key]).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                log.warning("TensorRT caches off: cannot create %s (%s); engines are rebuilt at each start",
                            opts[key], e.strerror or e)
                opts = {k: v for k, v in opts.items() if k not in CACHE_KEYS}
                break
        out.append(opts)
    return out


def _first_line(e: Exception) -> str:
    text = str(e).strip()  # ORT raises its own Fail/InvalidGraph types with multi-line text
    return text.splitlines()[0] if text else type(e).__name__


def _session(path: Path, providers: list[str], threads: int | None, spin: bool,
             options: list[dict[str, Any]] | None = None):
    import onnxruntime as ort

    options = _with_cache_dirs(options or [{} for _ in providers])

    def create(opts: list[dict[str, Any]]):
        return ort.InferenceSession(str(path), sess_options=session_options(threads, spin), providers=providers,
                                    provider_options=opts)

    try:
        return create(options)
    except Exception as e:
        error = e
    plain = [{k: v for k, v in o.items() if k not in PROFILE_KEYS} for o in options]
    if plain != options:  # e.g. an older bundle ORT splits after all: let ORT size the profiles
        log.warning("%s: TensorRT EP refused the explicit profiles (%s); retrying without them",
                    path.name, _first_line(error))
        try:
            return create(plain)
        except Exception as e:
            error = e
    raise BackendError(f"{path.name}: ONNX Runtime cannot load it ({_first_line(error)})")


def _device_of(providers: list[str]) -> str:
    return "cpu" if providers[0] == PROVIDER_ORDER[2] else "cuda"


class OrtVision:
    """``frames`` uint8 (N, H, W, 3) -> ``visual_tokens`` (N, P, D); counts its calls."""

    def __init__(self, bundle: Path, spec: GraphSpec, providers: list[str], threads: int | None, spin: bool = False,
                 options: list[dict[str, Any]] | None = None):
        self.session = _session(bundle / spec.file, providers, threads, spin, options)
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


class _OrtDecoder(CachedDecoder):
    """The decoder graph with IOBinding over preallocated buffers (see the module docstring);
    the two cache layouts differ in the shapes they bind and in how a prefix is kept."""

    def __init__(self, bundle: Path, manifest: Manifest, providers: list[str], threads: int | None,
                 spin: bool = False, options: list[dict[str, Any]] | None = None):
        spec = manifest.graphs["decoder"]
        d = manifest.decoder
        self.session = _session(bundle / spec.file, providers, threads, spin, options)
        # A bundle with a step graph runs one-token calls on it (bundle.STEP_DECODER): same
        # interface, same cache buffers.
        step = decode_graph(manifest.graphs)
        self.step_session = self.session if step is spec else _session(bundle / step.file, providers, threads, spin, options)
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
        self.positions = np.arange(self.max_seq, dtype=np.int64)[None]  # (1, max_seq)
        self.mask = np.ones((1, self.max_seq), dtype=np.int64)
        self.keep_last = np.ones((), dtype=np.int64)  # logits_to_keep = 1
        self.step_logits = np.empty((1, 1, self.vocab), dtype=self.logits_dtype)
        # (session, its binding) by "is the call one token?"
        self.runners = {one: (sess, sess.io_binding()) for one, sess in ((False, self.session), (True, self.step_session))}
        self.bound: dict[bool, tuple | None] = {False: None, True: None}  # each binding's cache layout (_bind)
        # Counters the tests and benchmarks read: graph calls and tokens pushed through them.
        self.calls = 0
        self.tokens_processed = 0

    def _buffer(self, rows: int) -> _Buffer:
        return _Buffer(self.kv_shape[1] * self.kv_shape[2] * rows, self.kv_dtype, self.device)

    def _logits_rows(self, embeds: np.ndarray, logits_to_keep: int) -> tuple[np.ndarray, int]:
        """A (1, rows, V) array for :meth:`logits` and how many of its last rows are asked for."""
        s = embeds.shape[0]
        keep = s if logits_to_keep <= 0 else min(logits_to_keep, s)
        rows = keep if self.keeps_logits else s
        return np.empty((1, rows, self.vocab), dtype=self.logits_dtype), keep

    def _kv_binding(self, past_len: int, new: int, past: list[_Buffer], out: list[_Buffer] | None):
        """Per past input its shape and pointer, per present output its shape and pointer (None:
        ORT allocates the present); called first, so it may make room for the call."""
        raise NotImplementedError

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
        session, b = self.runners[s == 1]
        past_shapes, past_ptrs, out_shapes, out_ptrs = self._kv_binding(past_len, s, past, out)
        # The cache and logits bindings (about 100 calls into ORT) are redone only when a buffer or
        # shape changes: an in-place step keeps them for CHUNK tokens. On an edge-0.5b INT8 step
        # (27 ms, 2-core EPYC) the time outside ORT went from 0.83 to 0.52 ms. Rebinding a name
        # replaces it: the small inputs below are bound at every call.
        layout = (tuple(past_shapes), tuple(past_ptrs), out_ptrs and (tuple(out_shapes), tuple(out_ptrs)),
                  logits.shape, logits.ctypes.data)
        if out_ptrs is None or self.bound[s == 1] != layout:
            b.clear_binding_inputs()
            b.clear_binding_outputs()
            for name, shape, ptr in zip(self.past, past_shapes, past_ptrs):
                b.bind_input(name, self.device, 0, self.kv_dtype, shape, ptr)
            for i, name in enumerate(self.present):
                if out_ptrs is None:
                    b.bind_output(name, self.device)
                else:
                    b.bind_output(name, self.device, 0, self.kv_dtype, out_shapes[i], out_ptrs[i])
            b.bind_output("logits", "cpu", 0, self.logits_dtype, logits.shape, logits.ctypes.data)
            self.bound[s == 1] = layout if out_ptrs is not None else None
        x = np.ascontiguousarray(embeds[None], dtype=self.embed_dtype)  # (1, S, D)
        b.bind_cpu_input("inputs_embeds", x)
        mask = self._attention_mask(past_len, total)  # alive until run, like the arrays below
        b.bind_cpu_input("attention_mask", mask)
        b.bind_cpu_input("position_ids", self.positions[:, past_len:total])
        keep_value = self.keep_last if keep == 1 else np.array(keep, dtype=np.int64)
        if self.keeps_logits:
            b.bind_cpu_input(LOGITS_TO_KEEP, keep_value)
        session.run_with_iobinding(b)
        self._store(past_len, s)
        self.calls += 1
        self.tokens_processed += s

    def _attention_mask(self, past_len: int, total: int) -> np.ndarray:
        return self.mask[:, :total]

    def _store(self, past_len: int, new: int) -> None:
        """After a call: put the present where the next call reads it (nothing to do for concat)."""


class OrtDecoder(_OrtDecoder, PingPongDecoder):
    """A "concat" graph: a prefix is written straight into exact-size buffers of its own, and
    generations alternate between the ping and pong buffer sets."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ping = [self._buffer(self.max_seq) for _ in self.past]
        self.pong = [self._buffer(self.max_seq) for _ in self.past]

    def extend(self, prefix: KVPrefix | None, embeds: np.ndarray) -> tuple[KVPrefix, np.ndarray]:
        """Run ``embeds`` (S, D) after ``prefix`` and keep the result as a new shared prefix.

        Returns it and the last position's logits (V,), a view of the row the next call
        overwrites (copy it to keep it). The present is written straight into exact-size buffers
        of its own, so freezing the prefix costs no copy.
        """
        prefix = prefix or _EMPTY
        total = prefix.length + embeds.shape[0]
        self._check_room(total)
        out = [self._buffer(total) for _ in self.present]
        logits = self._run(embeds, prefix.length, prefix.buffers, out)
        return KVPrefix(total, out), logits

    def logits(self, prefix: KVPrefix | None, embeds: np.ndarray, logits_to_keep: int) -> np.ndarray:
        """Logits (K, V) of the last ``logits_to_keep`` of ``embeds`` (S, D) run after ``prefix``
        (0: all S), leaving every cache untouched: for teacher-forced checks and option scoring."""
        prefix = prefix or _EMPTY
        self._check_room(prefix.length + embeds.shape[0])
        logits, keep = self._logits_rows(embeds, logits_to_keep)
        self._bind(embeds, prefix.length, prefix.buffers, None, logits, keep)
        return logits[0, logits.shape[1] - keep :]

    def _kv_binding(self, past_len: int, new: int, past: list[_Buffer], out: list[_Buffer] | None):
        h, d = self.kv_shape[1:]
        n = len(self.past)
        past_ptrs = [b.ptr for b in past or self.ping]  # a zero-length past: any valid pointer
        return [(1, h, past_len, d)] * n, past_ptrs, [(1, h, past_len + new, d)] * n, out and [b.ptr for b in out]


class OrtInPlaceDecoder(_OrtDecoder, InPlaceDecoder):
    """An "in-place" graph: one (kv_heads, capacity, head_dim) buffer per layer and key / value,
    bound whole as the past; the new positions come back in scratch buffers and are stored after
    the filled ones. The capacity is the filled
    positions rounded up to ``CHUNK``: the graph reads at most ``CHUNK - 1`` masked ones, and growing
    copies the filled ones once per ``CHUNK`` tokens. A prefix keeps a compact copy of its
    positions (CPU memory only)."""

    CHUNK = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        InPlaceDecoder.__init__(self)
        if self.device != "cpu":
            raise BackendError("this bundle's in-place KV cache runs on ONNX Runtime's CPU provider: run with "
                               "--device cpu, or export with --target cuda for a GPU")
        self.capacity = 0
        self.cache: list[np.ndarray] = []
        self.scratch: list[np.ndarray] = []  # flat: a call's new positions, in the present's layout
        self._reserve(self.CHUNK, 0)

    def extend(self, prefix: KVPrefix | None, embeds: np.ndarray) -> tuple[KVPrefix, np.ndarray]:
        """As :meth:`OrtDecoder.extend`; the new prefix's positions are copied out of the cache once."""
        prefix = prefix or _EMPTY
        total = prefix.length + embeds.shape[0]
        self._check_room(total)
        self._claim(prefix)
        logits = self._run(embeds, prefix.length, self.cache, self.cache)
        kept = KVPrefix(total, [buffer[:, :total].copy() for buffer in self.cache])
        self.resident.append(kept)
        return kept, logits

    def logits(self, prefix: KVPrefix | None, embeds: np.ndarray, logits_to_keep: int) -> np.ndarray:
        """As :meth:`OrtDecoder.logits`: prefixes are untouched (a generation in progress is not)."""
        prefix = prefix or _EMPTY
        self._check_room(prefix.length + embeds.shape[0])
        self._claim(prefix)
        logits, keep = self._logits_rows(embeds, logits_to_keep)
        self._bind(embeds, prefix.length, self.cache, self.cache, logits, keep)
        return logits[0, logits.shape[1] - keep :]

    def _shape(self, positions: int) -> tuple[int, int, int]:
        return (self.kv_shape[1], positions, self.kv_shape[2])

    def _reserve(self, positions: int, filled: int) -> None:
        """Room for ``positions``, keeping the first ``filled``."""
        if positions <= self.capacity:
            return
        capacity = min(self.max_seq, -(-positions // self.CHUNK) * self.CHUNK)
        # Zeros, not garbage: the mask hides unfilled positions from the softmax, but a NaN bit
        # pattern there would still reach every output through 0 * NaN.
        grown = [np.zeros(self._shape(capacity), dtype=self.kv_dtype) for _ in self.past]
        for old, new in zip(self.cache, grown):
            new[:, :filled] = old[:, :filled]
        self.cache, self.capacity = grown, capacity

    def _load(self, prefix: KVPrefix) -> None:
        self._reserve(prefix.length, 0)
        for buffer, positions in zip(self.cache, prefix.buffers):
            buffer[:, : prefix.length] = positions

    def _kv_binding(self, past_len: int, new: int, past: list, out: list | None):
        self._reserve(past_len, past_len)  # room for the new positions is made when they are stored
        h, d = self.kv_shape[1:]
        if not self.scratch or self.scratch[0].size < h * new * d:  # grows to the longest call, then stays
            self.scratch = [np.empty(h * new * d, dtype=self.kv_dtype) for _ in self.present]
        n = len(self.past)
        return ([(1, *self._shape(self.capacity))] * n, [buffer.ctypes.data for buffer in self.cache],
                [(1, *self._shape(new))] * n, [rows.ctypes.data for rows in self.scratch])

    def _attention_mask(self, past_len: int, total: int) -> np.ndarray:
        # The whole buffer is the past: positions after the filled ones are masked out.
        mask = np.ones((1, self.capacity + total - past_len), dtype=np.int64)
        mask[0, past_len : self.capacity] = 0
        return mask

    def _store(self, past_len: int, new: int) -> None:
        self._reserve(past_len + new, past_len)
        h, d = self.kv_shape[1:]
        for buffer, rows in zip(self.cache, self.scratch):
            buffer[:, past_len : past_len + new] = rows[: h * new * d].reshape(self._shape(new))


class OrtBackend:
    """Both graphs on one set of providers."""

    name = "ort"

    def __init__(self, bundle: str | os.PathLike, manifest: Manifest, device: str = "auto",
                 threads: int | None = None, spin: bool = False):
        bundle = Path(bundle)
        self.providers = choose_providers(device)
        log.info("ONNX Runtime providers: %s", ", ".join(self.providers))
        self.vision = OrtVision(bundle, manifest.graphs["vision"], self.providers, threads, spin,
                                provider_options(bundle, manifest, "vision", self.providers))
        decoder, providers = OrtDecoder, self.providers
        if manifest.decoder.kv_cache == "in-place":
            decoder = OrtInPlaceDecoder
            if device == "auto" and providers[0] != PROVIDER_ORDER[2]:
                log.info("the decoder's in-place KV cache runs on the CPU provider (a CPU-target bundle)")
                providers = [PROVIDER_ORDER[2]]
        self.decoder = decoder(bundle, manifest, providers, threads, spin,
                               provider_options(bundle, manifest, "decoder", providers))

    @property
    def description(self) -> str:
        return f"onnxruntime ({self.providers[0]})"
