"""TensorRT 10 + pycuda backend: the bundle's engines, one execution context per graph.

``tensorrt`` and ``pycuda`` are imported only when this backend is chosen (JetPack ships both).
Before an engine is deserialized its :class:`EngineSpec` is checked against this machine: a
TensorRT engine only runs on the TensorRT version and GPU architecture it was built for, so a
mismatch is refused with the command that rebuilds it.

Memory plan (mirrors the ONNX Runtime backend): device KV buffers sized from ``decoder.max_seq``
used ping/pong, a shared prefix written straight into buffers of its own, the mask uploaded once,
positions copied per call into a buffer of their own (TensorRT wants tensor addresses 256-byte
aligned, which an offset into one arange is not), pinned host staging for embeddings and logits,
every copy asynchronous on one CUDA stream with one synchronise per call. Only the last
position's logits come back to the host (engines compute no other row: see
``export.onnx_graphs.keep_last_logits``, written by the exporter as ``GraphSpec.trt_file``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exo2ego_edge.bundle import EngineSpec, Manifest, past_names, present_names
from exo2ego_edge.runtime.errors import BackendError
from exo2ego_edge.runtime.kv_cache import KVPrefix, PingPongDecoder

log = logging.getLogger(__name__)

REBUILD_HINT = "rebuild the engines on this machine: exo2ego-edge engines build BUNDLE, or use --backend ort"


@dataclass(frozen=True)
class GpuTarget:
    tensorrt_version: str
    compute_capability: str  # "8.7"
    gpu_name: str


def _major_minor_patch(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:3])


def check_engine(spec: EngineSpec, here: GpuTarget) -> None:
    """Refuse an engine built for another TensorRT version or GPU architecture (one line)."""
    if _major_minor_patch(spec.tensorrt_version) != _major_minor_patch(here.tensorrt_version):
        raise BackendError(
            f"engine {spec.file} was built with TensorRT {spec.tensorrt_version}, this machine has "
            f"{here.tensorrt_version}; {REBUILD_HINT}"
        )
    if spec.compute_capability != here.compute_capability:
        raise BackendError(
            f"engine {spec.file} was built for {spec.gpu_name} (sm {spec.compute_capability}), this GPU is "
            f"{here.gpu_name} (sm {here.compute_capability}); {REBUILD_HINT}"
        )
    if spec.gpu_name != here.gpu_name:
        # Same architecture: TensorRT runs it, possibly with tactics tuned for the other part.
        log.warning("engine %s was built on %s, running on %s (same sm %s)", spec.file, spec.gpu_name,
                    here.gpu_name, here.compute_capability)


def pick_engine(manifest: Manifest, graph: str) -> EngineSpec:
    found = [e for e in manifest.engines if e.graph == graph]
    if not found:
        raise BackendError(f"bundle has no TensorRT engine for the {graph} graph; {REBUILD_HINT}")
    return found[0]


def _import_trt():
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except ImportError as e:
        raise BackendError(
            f"the tensorrt backend needs TensorRT and pycuda ({e.name} is not installed; JetPack ships "
            "both, on x86 pip install tensorrt pycuda); or use --backend ort"
        ) from None
    return trt, cuda


class _Graph:
    """One engine, its execution context and tensor metadata."""

    def __init__(self, trt, runtime, path: Path):
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"{path.name}: TensorRT could not deserialize it; {REBUILD_HINT}")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

    def set_shape(self, name: str, shape: tuple[int, ...]) -> None:
        # TensorRT returns False rather than raising: a shape outside the engine's profile would
        # otherwise surface later as an unexplained execution failure.
        if not self.context.set_input_shape(name, shape):
            raise BackendError(f"{name}: shape {tuple(shape)} is outside the engine's optimization profile "
                               f"(export limits: --max-frames / --max-seq); {REBUILD_HINT}")

    def bind(self, name: str, ptr: int, shape: tuple[int, ...] | None = None) -> None:
        if shape is not None and name in self.inputs:
            self.set_shape(name, shape)
        if not self.context.set_tensor_address(name, int(ptr)):
            raise BackendError(f"{name}: TensorRT refused the buffer address")

    def run(self, stream) -> None:
        if not self.context.execute_async_v3(stream.handle):
            raise BackendError("TensorRT execution failed (see the TensorRT log)")


class _Device:
    """Device and pinned host allocations through pycuda."""

    def __init__(self, cuda):
        self.cuda = cuda

    def alloc(self, nbytes: int):
        return self.cuda.mem_alloc(max(int(nbytes), 1))

    def pinned(self, shape, dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)


class TrtVision:
    def __init__(self, graph: _Graph, stream, dev: _Device, input_name: str, output_name: str):
        self.g, self.stream, self.dev = graph, stream, dev
        self.input_name, self.output_name = input_name, output_name
        self.calls = self.frames_encoded = 0
        self._capacity = 0

    def _grow(self, frames: np.ndarray) -> None:
        n = frames.shape[0]
        if n <= self._capacity:
            return
        self.g.set_shape(self.input_name, frames.shape)
        out_shape = tuple(self.g.context.get_tensor_shape(self.output_name))
        self.host_in = self.dev.pinned(frames.shape, np.uint8)
        self.host_out = self.dev.pinned(out_shape, self.g.dtypes[self.output_name])
        self.dev_in, self.dev_out = self.dev.alloc(self.host_in.nbytes), self.dev.alloc(self.host_out.nbytes)
        self._capacity = n

    def encode(self, frames: np.ndarray) -> np.ndarray:
        cuda, n = self.dev.cuda, frames.shape[0]
        self._grow(frames)
        self.host_in[:n] = frames
        self.g.bind(self.input_name, self.dev_in, frames.shape)
        self.g.bind(self.output_name, self.dev_out)
        out = self.host_out[:n]
        cuda.memcpy_htod_async(self.dev_in, self.host_in[:n], self.stream)
        self.g.run(self.stream)
        cuda.memcpy_dtoh_async(out, self.dev_out, self.stream)
        self.stream.synchronize()
        self.calls += 1
        self.frames_encoded += n
        return out.copy()  # the pinned buffer is reused by the next call


class TrtDecoder(PingPongDecoder):
    def __init__(self, graph: _Graph, stream, dev: _Device, manifest: Manifest):
        d = manifest.decoder
        self.g, self.stream, self.dev = graph, stream, dev
        self.max_seq, self.vocab, self.kv_heads, self.head_dim = d.max_seq, d.vocab_size, d.num_kv_heads, d.head_dim
        self.past, self.present = past_names(d.num_layers), present_names(d.num_layers)
        for name in ("attention_mask", "position_ids"):  # the buffers below are int64
            if graph.dtypes[name] != np.int64:
                raise BackendError(f"{name} is {graph.dtypes[name]} in this engine, int64 expected; {REBUILD_HINT}")
        self.embed_dtype = graph.dtypes["inputs_embeds"]
        self.kv_dtype = graph.dtypes[self.past[0]]
        self.logits_dtype = graph.dtypes["logits"]
        row = self.kv_heads * self.head_dim * self.kv_dtype.itemsize
        self.ping = [dev.alloc(row * self.max_seq) for _ in self.past]
        self.pong = [dev.alloc(row * self.max_seq) for _ in self.past]
        cuda = dev.cuda
        # TensorRT wants tensor addresses 256-byte aligned: positions are copied per call into a
        # buffer of their own rather than addressed at an offset into one arange.
        self.host_positions = dev.pinned((self.max_seq,), np.int64)
        self.positions = dev.alloc(8 * self.max_seq)
        self.mask = dev.alloc(8 * self.max_seq)  # int64 ones
        cuda.memcpy_htod(self.mask, np.ones(self.max_seq, dtype=np.int64))
        self.host_embeds = dev.pinned((self.max_seq, d.hidden_size), self.embed_dtype)
        self.dev_embeds = dev.alloc(self.host_embeds.nbytes)
        self.host_logits = dev.pinned((self.vocab,), self.logits_dtype)
        self._logits_rows = 0
        self.calls = self.tokens_processed = 0

    def extend(self, prefix: KVPrefix | None, embeds: np.ndarray):
        prefix = prefix or KVPrefix(0, [])
        total = prefix.length + embeds.shape[0]
        self._check_room(total)
        row = self.kv_heads * self.head_dim * self.kv_dtype.itemsize
        out = [self.dev.alloc(row * total) for _ in self.present]
        logits = self._run(embeds, prefix.length, prefix.buffers, out)
        return KVPrefix(total, out), logits

    def _logits_buffer(self, rows: int):
        if rows > self._logits_rows:  # grows to the longest prefill seen, then stays
            self.dev_logits = self.dev.alloc(rows * self.vocab * self.logits_dtype.itemsize)
            self._logits_rows = rows
        return self.dev_logits

    def _run(self, embeds: np.ndarray, past_len: int, past: list, out: list) -> np.ndarray:
        cuda, g, s = self.dev.cuda, self.g, embeds.shape[0]
        total = past_len + s
        self.host_embeds[:s] = embeds
        cuda.memcpy_htod_async(self.dev_embeds, self.host_embeds[:s], self.stream)
        g.bind("inputs_embeds", self.dev_embeds, (1, s, self.host_embeds.shape[1]))
        g.bind("attention_mask", self.mask, (1, total))
        self.host_positions[:s] = np.arange(past_len, total)
        cuda.memcpy_htod_async(self.positions, self.host_positions[:s], self.stream)
        g.bind("position_ids", self.positions, (1, s))
        for i, name in enumerate(self.past):
            g.bind(name, past[i] if past else self.ping[i], (1, self.kv_heads, past_len, self.head_dim))
        for name, buf in zip(self.present, out):
            g.bind(name, buf)
        # (1, K, V): K = 1 for engines built with logits_to_keep fixed to 1, S for older ones.
        rows = int(g.context.get_tensor_shape("logits")[1])
        logits = self._logits_buffer(rows)
        g.bind("logits", logits)
        g.run(self.stream)
        last = int(logits) + (rows - 1) * self.vocab * self.logits_dtype.itemsize
        cuda.memcpy_dtoh_async(self.host_logits, last, self.stream)
        self.stream.synchronize()
        self.calls += 1
        self.tokens_processed += s
        return self.host_logits


class TrtBackend:
    name = "tensorrt"

    def __init__(self, bundle: str | Path, manifest: Manifest, device_index: int = 0):
        bundle = Path(bundle)
        specs = {g: pick_engine(manifest, g) for g in ("vision", "decoder")}
        trt, cuda = _import_trt()
        cuda.init()
        device = cuda.Device(device_index)
        here = GpuTarget(trt.__version__, "%d.%d" % device.compute_capability(), device.name())
        for spec in specs.values():
            check_engine(spec, here)
        self._cuda_context = device.make_context()  # popped in close(); pycuda needs a current context
        self.stream = cuda.Stream()
        dev = _Device(cuda)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        vision_graph = _Graph(trt, runtime, bundle / specs["vision"].file)
        decoder_graph = _Graph(trt, runtime, bundle / specs["decoder"].file)
        vspec = manifest.graphs["vision"]
        self.vision = TrtVision(vision_graph, self.stream, dev, vspec.inputs[0].name, vspec.outputs[0].name)
        self.decoder = TrtDecoder(decoder_graph, self.stream, dev, manifest)
        self.description = f"TensorRT {trt.__version__} on {here.gpu_name}"

    def close(self) -> None:
        # TensorRT objects and device buffers go while their context is current; then the context.
        self.vision = self.decoder = None
        self._cuda_context.pop()
        self._cuda_context.detach()
