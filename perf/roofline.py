"""Rooflines: what this machine can do at best, and how much of it a bundle's graphs ask for.

Two ceilings bound a video MLLM on the edge:

- decode is **memory-bound**: each new token reads every decoder weight and the whole KV cache
  once, for about two FLOPs per weight, far below any machine's FLOP/byte balance. Its floor is
  ``bytes read per token / memory bandwidth``.
- the vision graph is **compute-bound**: N frames x P patches through a ViT reuse every weight
  hundreds of times. Its floor is ``FLOPs per call / matrix throughput``.

So this module measures the two machine figures (a STREAM-style copy and triad with numpy in as
many threads as the graph runs, a large GEMM at the graph's precision through ONNX Runtime) and
derives the two model figures from the ONNX files themselves (initializer bytes; MatMul / Gemm /
Conv / attention shapes after shape inference), not from a formula that can drift from the export.

Torch-free. The graph walk needs the ``onnx`` package (pure protobuf, no torch); without it the
bench still runs and says the roofline is unavailable.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.runtime.sysinfo import last_level_cache_bytes

log = logging.getLogger(__name__)

# ONNX TensorProto data types -> bytes per element (int4/uint4 pack two per byte).
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2,
                17: 1, 18: 1, 19: 1, 20: 1, 21: 0.5, 22: 0.5}
# Ops whose FLOPs we count: they are >99% of a transformer's arithmetic.
_INT8_MATMUL_OPS = {"MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_MATMUL_OPS = {"MatMul", "FusedMatMul", "MatMulNBits", *_INT8_MATMUL_OPS}


# --- machine ceilings ----------------------------------------------------------------------------
@dataclass
class BandwidthResult:
    copy_gbps: float  # STREAM convention: (read + write) bytes of the two arrays per pass
    triad_gbps: float  # STREAM convention: 3 arrays per pass (numpy makes 2 passes: a lower bound)
    single_thread_copy_gbps: float
    threads: int
    array_bytes: int
    repeats: int

    @property
    def best_gbps(self) -> float:
        """The ceiling decode is held to: the best sustained rate any kernel reached."""
        return max(self.copy_gbps, self.triad_gbps, self.single_thread_copy_gbps)


def measure_memory_bandwidth(
    threads: int | None = None, array_bytes: int | None = None, repeats: int = 8
) -> BandwidthResult:
    """STREAM copy (b = a) and triad (a = b + s*c) with numpy, best of ``repeats``.

    Arrays are at least 4x the last-level cache (STREAM's rule) so every pass goes to DRAM.
    numpy releases the GIL inside copy/add/multiply, so splitting the arrays across a thread
    pool measures the machine's multi-core bandwidth, which is what ONNX Runtime's intra-op
    threads see; STREAM reports the best pass, not the mean, as the sustainable ceiling.
    """
    threads = threads or os.cpu_count() or 1
    array_bytes = array_bytes or max(4 * last_level_cache_bytes(), 64 << 20)
    n = array_bytes // 8
    a = np.full(n, 1.0)
    b = np.full(n, 2.0)
    c = np.full(n, 0.5)
    scalar = 3.0

    def best_time(kernel, parts: int) -> float:
        pieces = list(zip(np.array_split(a, parts), np.array_split(b, parts), np.array_split(c, parts)))
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(kernel, pieces))  # first touch: page faults are not bandwidth
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                list(pool.map(kernel, pieces))
                best = min(best, time.perf_counter() - start)
        return best

    def copy(p) -> None:
        np.copyto(p[1], p[0])

    def triad(p) -> None:
        np.multiply(p[2], scalar, out=p[0])
        np.add(p[0], p[1], out=p[0])

    copy_gbps = 2 * n * 8 / best_time(copy, threads) / 1e9
    triad_gbps = 3 * n * 8 / best_time(triad, threads) / 1e9
    single = 2 * n * 8 / best_time(copy, 1) / 1e9 if threads > 1 else copy_gbps
    return BandwidthResult(copy_gbps, triad_gbps, single, threads, int(n * 8), repeats)


@dataclass
class GemmResult:
    kind: str  # "MatMul-fp32" | "MatMulInteger-int8" | "MatMulNBits-int4" | "numpy-fp32" ...
    m: int
    n: int
    k: int
    gflops: float  # best of the repeats (2*M*N*K / time)
    p50_ms: float
    threads: int
    engine: str


def measure_gemm(kind: str = "MatMul", bits: int = 4, block_size: int = 32, size: int = 1024,
                 threads: int | None = None, repeats: int = 10, accuracy_level: int = 0) -> GemmResult:
    """Matrix throughput at a graph's precision: one large GEMM through ONNX Runtime.

    ``kind`` names the op the graph spends its FLOPs in (see :func:`dominant_matmul_op`): fp32
    MatMul, MatMulInteger (int8 from dynamic quantization) or MatMulNBits (int4/int8 blocks),
    so the ceiling is the one that graph's kernels can reach. Falls back to numpy fp32 when the
    onnx package is missing (the graph cannot be built).
    """
    threads = threads or os.cpu_count() or 1
    m = n = k = size
    try:
        session, feeds, engine = gemm_session(kind, m, n, k, bits, block_size, threads, accuracy_level)
        run = lambda: session.run(None, feeds)  # noqa: E731
    except ImportError:
        log.info("onnx is not installed: measuring fp32 GEMM with numpy instead of ONNX Runtime")
        kind, engine = "numpy-fp32", f"numpy {np.__version__}"
        x = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
        y = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
        run = lambda: x @ y  # noqa: E731
    run()  # warm-up: pre-packing, thread pool start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return GemmResult(kind, m, n, k, 2 * m * n * k / min(times) / 1e9, float(np.median(times)) * 1e3,
                      threads, engine)


def weight_product(kind: str, x: str, y: str, k: int, n: int, rng: np.random.Generator, bits: int = 4,
                   block_size: int = 32, accuracy_level: int = 0) -> tuple[Any, list]:
    """The node computing ``y = x @ W`` (float in and out, W random (k, n)) in ``kind``'s kernel,
    and its initializers (named after ``y``): MatMul (fp32), DynamicQuantizeMatMul (int8 weights per
    column, activations quantized per call: what dynamic quantization's pattern fuses to) or
    MatMulNBits (int4 / int8 blocks)."""
    from onnx import helper, numpy_helper

    if kind == "DynamicQuantizeMatMul":
        inits = [numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), f"{y}.B"),
                 numpy_helper.from_array(rng.random(n, dtype=np.float32) * 0.01, f"{y}.scale"),
                 numpy_helper.from_array(np.zeros(n, dtype=np.int8), f"{y}.zp")]
        return helper.make_node(kind, [x, *(t.name for t in inits)], [y], domain="com.microsoft"), inits
    if kind == "MatMulNBits":
        blocks = math.ceil(k / block_size)
        inits = [numpy_helper.from_array(rng.integers(0, 255, (n, blocks, block_size * bits // 8), dtype=np.uint8), f"{y}.B"),
                 numpy_helper.from_array(rng.random(n * blocks, dtype=np.float32) * 0.01, f"{y}.scales")]
        return helper.make_node(kind, [x, *(t.name for t in inits)], [y], domain="com.microsoft", K=k, N=n, bits=bits,
                                block_size=block_size, accuracy_level=accuracy_level), inits
    inits = [numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), f"{y}.B")]
    return helper.make_node("MatMul", [x, inits[0].name], [y]), inits


def cpu_session(model, threads: int):
    """An ONNX Runtime CPU session of an in-memory model (IR 8: readable by every ORT we support),
    with the runtime's session options (no spinning), so a ceiling is measured as bundles run."""
    import onnxruntime as ort

    from exo2ego_edge.runtime.ort_backend import session_options

    model.ir_version = 8
    opts = session_options(threads)
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def gemm_session(kind: str, m: int, n: int, k: int, bits: int = 4, block_size: int = 32, threads: int = 1,
                 accuracy_level: int = 0):
    """An ONNX Runtime session of one (m, k) x (k, n) product in ``kind``'s kernel, and its feeds:
    MatMulInteger (uint8 x int8) or one of :func:`weight_product`'s."""
    import onnx  # noqa: F401 - ImportError here means "fall back to numpy"
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    opset = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    if kind == "MatMulInteger":
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])
        out = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
        w = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "B")
        zp = numpy_helper.from_array(np.array(128, dtype=np.uint8), "a_zp")
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])
        inits = [w, zp]
        feeds = {"A": rng.integers(0, 255, (m, k), dtype=np.uint8)}
    else:
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
        node, inits = weight_product(kind, "A", "Y", k, n, rng, bits, block_size, accuracy_level)
        feeds = {"A": rng.standard_normal((m, k), dtype=np.float32)}
    model = helper.make_model(helper.make_graph([node], "gemm", [a], [out], initializer=inits), opset_imports=opset)
    return cpu_session(model, threads), feeds, f"onnxruntime {ort.__version__} CPU"


# --- model figures -------------------------------------------------------------------------------
@dataclass
class GraphCost:
    """What one ONNX graph asks of the machine at one set of input shapes."""

    file: str
    weight_bytes: int  # initializers + Constant nodes: what a memory-bound pass reads
    weight_bytes_by_dtype: dict[str, int]
    flops: int  # multiply-adds x 2 in MatMul / Gemm / Conv / attention at the given shapes
    flops_by_op: dict[str, int]
    op_counts: dict[str, int]
    matmul_weight_elements: int  # weights that feed a MatMul-like op: ~FLOPs/2 per decoded token
    unresolved_nodes: list[str] = field(default_factory=list)  # matmul-like nodes shape inference missed
    nbits: dict[str, int] = field(default_factory=dict)  # the first MatMulNBits' bits / block_size / accuracy_level

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def times(self, frames: int) -> GraphCost:
        """The cost at ``frames`` frames of a per-frame graph measured at one frame (the vision
        graph: every op is per frame, so its FLOPs grow linearly; its weights do not)."""
        return dataclasses.replace(self, flops=self.flops * frames,
                                   flops_by_op={k: v * frames for k, v in self.flops_by_op.items()})


def analyze_graph(path: str | Path, input_shapes: dict[str, list[int]] | None = None,
                  count_flops: bool = True) -> GraphCost:
    """Weight bytes and (with ``input_shapes``) FLOPs of an ONNX graph, from the file itself.

    Weights are counted from initializer dims, never loaded (a 2 GB decoder costs nothing to
    walk). FLOPs need every MatMul's shapes: the graph inputs are pinned to ``input_shapes`` and
    shapes are inferred with ONNX Runtime's symbolic inference (it knows the com.microsoft ops
    a quantized graph uses), falling back to onnx's own.
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    by_dtype: Counter[str] = Counter()
    init_dims: dict[str, list[int]] = {}
    for t in graph.initializer:
        init_dims[t.name] = list(t.dims)
        by_dtype[onnx.TensorProto.DataType.Name(t.data_type).lower()] += _tensor_bytes(t.dims, t.data_type)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    t = attr.t
                    init_dims[node.output[0]] = list(t.dims)
                    by_dtype[onnx.TensorProto.DataType.Name(t.data_type).lower()] += _tensor_bytes(t.dims, t.data_type)
    op_counts = Counter(n.op_type for n in graph.node)
    mm_weights = 0
    for node in graph.node:
        if node.op_type in _MATMUL_OPS | {"Gemm"}:
            weight = node.input[1] if len(node.input) > 1 else ""
            if node.op_type == "MatMulNBits":
                mm_weights += _attr(node, "K", 0) * _attr(node, "N", 0)
            elif weight in init_dims:
                mm_weights += int(np.prod(init_dims[weight]))
            else:
                # A weight reached through a Transpose / DequantizeLinear (tied lm_head, QDQ graphs).
                mm_weights += _weight_through_cast(graph, weight, init_dims)
    flops: Counter[str] = Counter()
    unresolved: list[str] = []
    if count_flops and input_shapes is not None:
        shapes = _infer_shapes(model, path, input_shapes)
        shapes.dims.update(init_dims)
        for node in graph.node:
            f = _node_flops(node, shapes)
            if f is None:
                unresolved.append(node.name or node.op_type)
            elif f:
                flops[node.op_type] += f
    return GraphCost(
        file=path.name,
        weight_bytes=int(sum(by_dtype.values())),
        weight_bytes_by_dtype={k: int(v) for k, v in by_dtype.items()},
        flops=int(sum(flops.values())),
        flops_by_op=dict(flops),
        op_counts=dict(op_counts),
        matmul_weight_elements=int(mm_weights),
        unresolved_nodes=unresolved,
        nbits=_nbits_attrs(graph),
    )


def bundle_costs(folder: Path, vision_file: str, decoder_file: str, frame_input: str, image_size: int) -> dict[str, Any]:
    """The graph costs a bundle's manifest records at export, so that the roofline and the Jetson
    projection run on a device without the onnx package: the decoder's weights, the vision
    graph's weights and FLOPs at one frame."""
    vision = analyze_graph(folder / vision_file, {frame_input: [1, image_size, image_size, 3]})
    return {"vision_per_frame": vision.to_dict(),
            "decoder": analyze_graph(folder / decoder_file, count_flops=False).to_dict()}


def _tensor_bytes(dims, data_type: int) -> int:
    return int(math.ceil(int(np.prod(dims, dtype=np.int64)) * _DTYPE_BYTES.get(data_type, 4)))


def _attr(node, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _weight_through_cast(graph, name: str, init_dims: dict[str, list[int]]) -> int:
    producers = {o: n for n in graph.node for o in n.output}
    for _ in range(3):  # Transpose / Cast / DequantizeLinear chains are short
        node = producers.get(name)
        if node is None or not node.input:
            return 0
        name = node.input[0]
        if name in init_dims:
            return int(np.prod(init_dims[name]))
    return 0


class _Shapes:
    """Inferred tensor shapes; a symbolic dim left by inference counts once it is bound."""

    def __init__(self, dims: dict[str, list[int | str | None]]):
        self.dims, self.bound = dims, {}

    def get(self, name: str) -> list[int] | None:
        """The concrete shape, or None while any dim is unknown."""
        dims = [self.bound.get(d, d) if isinstance(d, str) else d for d in self.dims.get(name, [None])]
        return dims if all(isinstance(d, int) for d in dims) else None

    def bind(self, name: str, concrete: list[int]) -> None:
        """``name`` has shape ``concrete``: every other shape with the same symbols resolves too."""
        for d, v in zip(self.dims.get(name, []), concrete):
            if isinstance(d, str):
                self.bound[d] = v
        self.dims[name] = list(concrete)


def _infer_shapes(model, path: Path, input_shapes: dict[str, list[int]]) -> _Shapes:
    """Shapes of every tensor once the graph inputs are pinned to ``input_shapes``."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # do not mutate the caller's copy
    for inp in model.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[inp.name]):
                d.Clear()
                d.dim_value = int(v)
    inferred = None
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        # Shape-computing constants are small and stay inside the .onnx file; the big weights in
        # external data are not needed to infer shapes, so they are never read.
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception as e:  # noqa: BLE001 - sympy missing or an op it does not know
        log.debug("symbolic shape inference failed (%s); using onnx.shape_inference", e)
    if inferred is None:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | str | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims:
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return _Shapes(shapes)


def _matmul_output(node, shapes: _Shapes) -> list[int] | None:
    """A MatMul-like node's output shape from its inputs'. ORT's symbolic inference leaves the rows
    of a FusedMatMul symbolic and has no rule for the fused INT8 ops (DynamicQuantizeMatMul,
    MatMulIntegerToFloat) that a saved ORT-optimized graph contains."""
    a = shapes.get(node.input[0])
    if node.op_type == "MatMulNBits":
        return None if a is None else [*a[:-1], _attr(node, "N", 0)]
    b = shapes.get(node.input[3 if node.op_type == "QLinearMatMul" else 1])
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return None
    rows = a[-1] if _attr(node, "transA", 0) else a[-2]
    cols = b[-2] if _attr(node, "transB", 0) else b[-1]
    return [*np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])), rows, cols]


def _node_flops(node, shapes: _Shapes) -> int | None:
    """2 x multiply-adds of one node; 0 for ops we do not count; None when shapes are missing.
    Nodes come in graph (topological) order: a MatMul output shape worked out here binds its
    symbolic dims for the nodes after it."""
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if out is None and op in _MATMUL_OPS:
        out = _matmul_output(node, shapes)
        if out is not None:
            shapes.bind(node.output[0], out)
    if op in _MATMUL_OPS:
        a = shapes.get(node.input[0])
        k = _attr(node, "K", None) if op == "MatMulNBits" else (a[-1] if a else None)
        if op == "FusedMatMul" and a and _attr(node, "transA", 0):
            k = a[-2]
        if out is None or k is None:
            return None
        return 2 * int(np.prod(out)) * int(k)
    if op == "Gemm":
        a = shapes.get(node.input[0])
        if out is None or a is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return 2 * int(np.prod(out)) * int(k)
    if op == "Conv":
        w = shapes.get(node.input[1])
        if out is None or w is None:
            return None
        return 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    if op in ("Attention", "MultiHeadAttention", "GroupQueryAttention"):
        q, kk = shapes.get(node.input[0]), shapes.get(node.input[1]) if len(node.input) > 1 else None
        if q is None or kk is None:
            return None
        keys = kk[-2] if len(kk) == 4 else kk[1]
        return 4 * int(np.prod(q)) * int(keys)  # Q.K^T and A.V, each 2*B*H*S*L*hd
    return 0


def dominant_matmul_op(cost: GraphCost) -> tuple[str, str]:
    """The op a graph spends most of its arithmetic (or, at decode, its weights) in, and its precision."""
    ranked = sorted(cost.flops_by_op.items(), key=lambda kv: -kv[1])
    ops = [op for op, _ in ranked] or [op for op in ("MatMulNBits", "MatMulInteger", "MatMul") if op in cost.op_counts]
    op = ops[0] if ops else "MatMul"
    if op in _INT8_MATMUL_OPS:
        return "MatMulInteger", "int8"
    if op == "MatMulNBits":
        return "MatMulNBits", "nbits"
    return "MatMul", "fp32"


def _nbits_attrs(graph) -> dict[str, int]:
    """bits / block_size / accuracy_level of the first MatMulNBits node (for a matching GEMM)."""
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            return {"bits": int(_attr(node, "bits", 4)), "block_size": int(_attr(node, "block_size", 32)),
                    "accuracy_level": int(_attr(node, "accuracy_level", 0))}
    return {}


# --- the roofline ratios -------------------------------------------------------------------------
def kv_cache_bytes(num_layers: int, num_kv_heads: int, head_dim: int, context: int, itemsize: int) -> int:
    """Keys + values of every layer at ``context`` positions (batch 1)."""
    return 2 * num_layers * num_kv_heads * head_dim * context * itemsize


def decode_bytes_per_token(decoder_weight_bytes: int, kv_bytes: int, hidden_size: int, vocab_size: int,
                           embed_itemsize: int = 4) -> dict[str, int]:
    """Bytes one decoded token moves: every weight, the whole KV cache, and its own small I/O."""
    io = hidden_size * embed_itemsize + vocab_size * 4  # one embedding row in, one logits row out
    return {"weights": int(decoder_weight_bytes), "kv_cache": int(kv_bytes), "io": int(io),
            "total": int(decoder_weight_bytes + kv_bytes + io)}


def bound_fraction(bound_ms: float, measured_ms: float) -> float | None:
    """Achieved fraction of a roofline: 1.0 means the stage ran at the machine's ceiling."""
    if measured_ms <= 0 or not math.isfinite(measured_ms):
        return None
    return bound_ms / measured_ms
