"""Precision transforms of an exported FP32 graph, all through ONNX Runtime's own tools.

- ``preprocess``: ORT's pre-quantization shape inference + basic optimization.
- ``quantize_dynamic_int8``: INT8 MatMul/Gemm weights, activations quantized per call (ORT CPU);
  the patch embedding weight-only.
- ``quantize_static_int8``: INT8 weights + calibrated activations, QDQ or QOperator format.
- ``quantize_qdq_for_gpu``: explicit Q/DQ for TensorRT / CUDA: per-channel symmetric weights,
  calibrated symmetric activations, Q/DQ only on the inputs of weight MatMul/Gemm/Conv (the patch
  embedding's pixels excepted).
- ``quantize_weight_only``: MatMulNBits block-wise INT8 / INT4 weights (the decoder's option).
- ``quantize_integer_decoder``: the CPU INT8 decoder on integer GEMMs (dynamic INT8), lm_head weight-only.
- ``convert_fp16``: float16 graph with overflow-prone ops kept in float32.

What is hand-written here is only what those tools lack: choosing which MatMuls carry weights (so
attention's activation x activation MatMuls stay float) and walking a graph to prove where the
Q/DQ pairs ended up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger(__name__)

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
# Ops whose fp16 overflow or precision loss is known to hurt: RMSNorm's x^2 and mean, LayerNorm,
# softmax, rotary cos/sin and anything exponential. ORT inserts the Casts around them.
FP16_BLOCK_OPS = (
    "Pow", "ReduceMean", "Sqrt", "Reciprocal", "LayerNormalization", "SimplifiedLayerNormalization",
    "Softmax", "Exp", "Cos", "Sin", "Range", "CumSum",
)
CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
# CPU INT8 uses 7-bit weights (ORT's reduce_range). Without VNNI, ORT's x86 u8 x s8 kernel adds
# pairs of products in int16 (VPMADDUBSW), which saturates on full-range weights: measured on
# edge-0.5b's vision graph on this AVX2 machine, visual-token cosine to PyTorch 0.933 with 8-bit
# weights, 0.9994 with 7-bit, at the same speed. ARM and VNNI kernels do not saturate; 7 bits
# cost them little, and a bundle may be exported on one machine and run on another.
CPU_REDUCE_RANGE = True
# Weight-only INT8 barely loses accuracy, so its blocks are as large as MatMulNBits' fast kernels take.
WEIGHT_ONLY_INT8_BLOCK = 128


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    names = {t.name for t in model.graph.initializer}
    # TorchScript folds some weights into Constant nodes rather than initializers.
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def weight_nodes(model: onnx.ModelProto, ops: Iterable[str] = WEIGHT_OPS) -> list[str]:
    """Names of MatMul/Gemm/Conv nodes whose second input is a constant weight."""
    consts = _initializer_names(model)
    return [n.name for n in model.graph.node if n.op_type in ops and len(n.input) > 1 and n.input[1] in consts]


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls of two activations (attention's Q.K^T and P.V): quantizing them costs accuracy."""
    consts = _initializer_names(model)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in consts]


def preprocess(src: Path, dst: Path) -> None:
    """ORT's recommended step before quantizing: ONNX shape inference + ORT's basic graph
    optimizations (constant folding, redundant-node removal; standard ops only). It drops ~70 of
    the tiny preset's vision nodes and ~250 of its decoder's, which at that size is 5-10% of an
    INT8 graph's bytes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = any(t.data_location == onnx.TensorProto.EXTERNAL
                   for t in onnx.load(str(src), load_external_data=False).graph.initializer)
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True, save_as_external_data=external,
                      all_tensors_to_one_file=True, external_data_location=f"{dst.name}.data")


def pixel_matmuls(model: onnx.ModelProto) -> list[str]:
    """Weight MatMuls that read raw pixels: the vision graph's patch embedding (exported as a
    MatMul by :class:`~exo2ego_edge.export.onnx_graphs.PatchEmbeddingMatMul`)."""
    return [n for n in weight_nodes(model, ("MatMul",)) if "patch_embedding" in n]


def output_projection(model: onnx.ModelProto, output: str = "logits") -> list[str]:
    """The weight MatMul that makes ``output`` (the decoder's lm_head), found by walking back
    from the graph output; empty when there is none."""
    producer = {out: n for n in model.graph.node for out in n.output}
    weights = set(weight_nodes(model, ("MatMul",)))
    todo, seen = [output], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        if node.name in weights:
            return [node.name]
        seen.add(node.name)
        todo += list(node.input)
    return []


def quantize_dynamic_int8(src: Path, dst: Path, per_channel: bool = False, exclude: list[str] = ()) -> None:
    """INT8 weights of every weight MatMul/Gemm but ``exclude``; activations quantized on the fly
    (no calibration).

    The patch embedding gets weight-only INT8 (MatMulNBits) instead: quantizing its pixel input
    per call collapsed some visual tokens of the trained tiny student on noise frames (min cosine
    -0.14), weight-only keeps 0.997 there and 0.9999 on real frames.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pixels = pixel_matmuls(onnx.load(str(src), load_external_data=False))
    quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], per_channel=per_channel,
        weight_type=QuantType.QInt8, nodes_to_exclude=pixels + list(exclude),
        extra_options={"MatMulConstBOnly": True}, reduce_range=CPU_REDUCE_RANGE,
    )
    if pixels:
        quantize_weight_only(dst, dst, bits=8, block_size=32, nodes=pixels)


def quantize_integer_decoder(src: Path, dst: Path) -> None:
    """The CPU decoder on integer GEMMs: INT8 weights per output channel and INT8 activations
    quantized per call (ORT fuses them to DynamicQuantizeMatMul, whose GEMM runs on VNNI / AMX /
    Arm dot-product instructions: prefill ~8x MatMulNBits' GFLOP/s on an AMX Xeon, see
    benchmarks/results/matmul_kernels.md). The lm_head stays weight-only INT8: the runtime runs it
    at one position only, where MatMulNBits reads its 100+ MB fastest."""
    head = output_projection(onnx.load(str(src), load_external_data=False))
    quantize_dynamic_int8(src, dst, per_channel=True, exclude=head)
    quantize_weight_only(dst, dst, bits=8, block_size=WEIGHT_ONLY_INT8_BLOCK, nodes=head)


def _calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                "minmax": CalibrationMethod.MinMax}[name]
    except KeyError:
        from exo2ego_edge.errors import UserError

        raise UserError(f"unknown calibration method '{name}'; choose one of: {', '.join(CALIBRATION_METHODS)}") from None


@contextlib.contextmanager
def _quiet_calibration() -> Iterator[None]:
    """ORT's calibrators print their progress to stdout and advise pre-processing on the root
    logger: keep both out of the user's terminal, where export's own progress bar runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())  # a failure keeps ORT's own account of it
        raise
    finally:
        root.setLevel(level)


class FeedReader:
    """An ORT ``CalibrationDataReader`` over a list of input feeds (dicts name -> array)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def quantize_static_int8(
    src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], qdq: bool = True, method: str = "minmax",
) -> None:
    """CPU static INT8: calibrated uint8 activations, int8 weights, weight MatMul/Gemm only."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src))
    with _quiet_calibration():
        quantize_static(
            str(src), str(dst), FeedReader(feeds),
            quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
            op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=activation_matmuls(model),
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=_calibration_method(method), reduce_range=CPU_REDUCE_RANGE,
        )


def quantize_qdq_for_gpu(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], method: str = "entropy") -> None:
    """Explicit Q/DQ for TensorRT's INT8-from-Q/DQ mode (and the CUDA EP).

    Per-channel symmetric int8 weights, symmetric int8 activations calibrated on ``feeds``, Q/DQ on
    the inputs of weight MatMul/Gemm/Conv only: TensorRT then fuses each DQ -> MatMul pair into an
    INT8 GEMM, and residual Adds, norms and softmax stay in float where their range needs it.

    The patch embedding stays float, as stems usually do: on the shipped tiny student its int8
    pixels alone took the visual-token cosine to PyTorch from 0.9994 (min 0.995) to 0.989 (min
    0.90); the other 18 weight GEMMs moved it by under 0.002 each. It is one small GEMM per frame.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(src))
    pixels = set(pixel_matmuls(model))
    with _quiet_calibration():
        quantize_static(
            str(src), str(dst), FeedReader(feeds), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(WEIGHT_OPS),
            nodes_to_quantize=[n for n in weight_nodes(model) if n not in pixels],
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=_calibration_method(method),
            extra_options={
                "ActivationSymmetric": True, "WeightSymmetric": True,
                # One Q/DQ pair per consumer: TensorRT wants to fuse each pair into its own GEMM.
                "DedicatedQDQPair": True,
                # Inputs only: a Q/DQ on a GEMM's output would sit in front of the bias / residual Add.
                "OpTypesToExcludeOutputQuantization": list(WEIGHT_OPS),
                # MatMul weights are (in, out): per output channel is axis 1.
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                "CalibMovingAverage": method == "minmax",
            },
        )


def quantize_weight_only(
    src: Path, dst: Path, bits: int = 4, block_size: int = 32, nodes: list[str] | None = None
) -> None:
    """Block-wise weight-only quantization to ORT's MatMulNBits (activations stay float) of every
    weight MatMul, or of ``nodes`` only."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    model = onnx.load(str(src))
    # accuracy_level 4: int8 activations inside the kernel on CPU, the fast path for both widths.
    quantizer = nbits.MatMulNBitsQuantizer(
        model, bits=bits, block_size=block_size, is_symmetric=True, accuracy_level=4,
        op_types_to_quantize=("MatMul",), nodes_to_include=nodes,
    )
    quantizer.process()
    onnx.save(quantizer.model.model, str(dst))


def convert_fp16(src: Path, dst: Path, keep_io_types: list[str] | bool = False) -> None:
    """Float16 graph; ``FP16_BLOCK_OPS`` stay float32 behind Casts."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(
        onnx.load(str(src)), keep_io_types=keep_io_types, op_block_list=list(FP16_BLOCK_OPS),
    )
    onnx.save(model, str(dst))


def qdq_violations(model: onnx.ModelProto, allowed: Iterable[str] = WEIGHT_OPS) -> list[str]:
    """Every place a Q/DQ pair feeds something other than a weight MatMul/Gemm/Conv input.

    Walks the graph: each DequantizeLinear's consumers must be in ``allowed`` (so no residual Add,
    LayerNorm, Softmax sees quantized data) and each QuantizeLinear may feed only DequantizeLinear.
    """
    allowed = set(allowed)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            for c in consumers.get(node.output[0], []):
                if c.op_type not in allowed:
                    problems.append(f"{node.name} -> {c.op_type} {c.name}")
        elif node.op_type == "QuantizeLinear":
            for c in consumers.get(node.output[0], []):
                if c.op_type != "DequantizeLinear":
                    problems.append(f"{node.name} -> {c.op_type} {c.name}")
    return problems


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
