"""Roofline arithmetic on hand-built ONNX graphs (FLOPs and bytes known in closed form), the machine
probes on small sizes, and the Jetson projection's memory model."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from exo2ego_edge.perf import jetson, roofline  # noqa: E402
from exo2ego_edge.perf.harness import summarize  # noqa: E402


def _graph(tmp_path, nodes, inputs, outputs, inits):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path


def test_flops_and_bytes_of_conv_matmul_gemm(tmp_path):
    # frames (N, 3, 16, 16) -> Conv 8x3x4x4 stride 4 -> (N, 8, 4, 4) -> reshape (N*16... kept simple:
    # Conv, then Flatten -> (N, 128) -> Gemm 128x32 -> MatMul with a (32, 10) weight.
    w_conv = numpy_helper.from_array(np.zeros((8, 3, 4, 4), np.float32), "wc")
    w_gemm = numpy_helper.from_array(np.zeros((128, 32), np.float32), "wg")
    w_mm = numpy_helper.from_array(np.zeros((32, 10), np.float16), "wm")
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], strides=[4, 4]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "wg"], ["g"]),
        helper.make_node("Cast", ["g"], ["g16"], to=TensorProto.FLOAT16),
        helper.make_node("MatMul", ["g16", "wm"], ["y"]),
    ]
    path = _graph(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 10])], [w_conv, w_gemm, w_mm])
    n = 5
    cost = roofline.analyze_graph(path, {"x": [n, 3, 16, 16]})
    conv = 2 * (n * 8 * 4 * 4) * (3 * 4 * 4)
    gemm = 2 * n * 128 * 32
    mm = 2 * n * 32 * 10
    assert cost.flops_by_op == {"Conv": conv, "Gemm": gemm, "MatMul": mm}
    assert cost.flops == conv + gemm + mm
    assert cost.weight_bytes == 8 * 3 * 4 * 4 * 4 + 128 * 32 * 4 + 32 * 10 * 2
    assert cost.weight_bytes_by_dtype == {"float": 8 * 3 * 16 * 4 + 128 * 32 * 4, "float16": 640}
    assert cost.matmul_weight_elements == 128 * 32 + 32 * 10
    assert cost.unresolved_nodes == []
    # FLOPs scale with the frame count; bytes do not.
    assert roofline.analyze_graph(path, {"x": [2 * n, 3, 16, 16]}).flops == 2 * cost.flops


def test_fused_ops_of_an_ort_optimized_graph_are_counted(tmp_path):
    # attention scores through FusedMatMul (K transposed in), Softmax, then MatMul with V, then a
    # DynamicQuantizeMatMul projection: ORT's symbolic inference leaves the first output's rows
    # symbolic (and so the later shapes) and has no rule for the INT8 op.
    b, h, s, d, out = 2, 3, 5, 4, 6
    wq = numpy_helper.from_array(np.zeros((h * d, out), np.int8), "w")
    nodes = [
        helper.make_node("FusedMatMul", ["q", "k"], ["scores"], domain="com.microsoft", alpha=0.5, transB=1),
        helper.make_node("Softmax", ["scores"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "shape"], ["flat"]),
        helper.make_node("DynamicQuantizeMatMul", ["flat", "w", "ws"], ["y"], domain="com.microsoft"),
    ]
    inits = [wq, numpy_helper.from_array(np.ones(1, np.float32), "ws"),
             numpy_helper.from_array(np.array([0, 0, h * d], np.int64), "shape")]
    qkv = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", h, "s", d]) for n in ("q", "k", "v")]
    path = _graph(tmp_path, nodes, qkv, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    cost = roofline.analyze_graph(path, {n: [b, h, s, d] for n in ("q", "k", "v")})
    attention = 2 * (b * h * s * s) * d
    assert cost.flops_by_op == {"FusedMatMul": attention, "MatMul": attention,
                                "DynamicQuantizeMatMul": 2 * (b * s * out) * h * d}
    assert cost.unresolved_nodes == []


def test_matmul_nbits_counts_its_attributes_and_packed_bytes(tmp_path):
    k, n, block = 64, 16, 32
    packed = numpy_helper.from_array(np.zeros((n, k // block, block // 2), np.uint8), "b")
    scales = numpy_helper.from_array(np.zeros(n * k // block, np.float32), "s")
    node = helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=4, block_size=block)
    path = _graph(tmp_path, [node], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, "s", k])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "s", n])], [packed, scales])
    cost = roofline.analyze_graph(path, {"a": [1, 3, k]})
    assert cost.weight_bytes == n * k // 2 + n * (k // block) * 4  # 4-bit weights + fp32 scales
    assert cost.matmul_weight_elements == k * n
    if cost.unresolved_nodes:  # onnx's own inference does not know contrib ops; ORT's does
        pytest.skip("symbolic shape inference unavailable (sympy missing)")
    assert cost.flops == 2 * 3 * k * n
    assert roofline.dominant_matmul_op(cost) == ("MatMulNBits", "nbits")
    assert roofline.analyze_graph(path).nbits == {"bits": 4, "block_size": block, "accuracy_level": 0}


def test_decode_bytes_and_kv_cache_arithmetic():
    kv = roofline.kv_cache_bytes(num_layers=24, num_kv_heads=2, head_dim=64, context=1000, itemsize=4)
    assert kv == 2 * 24 * 2 * 64 * 1000 * 4
    b = roofline.decode_bytes_per_token(10_000, kv, hidden_size=896, vocab_size=151936)
    assert b["total"] == b["weights"] + b["kv_cache"] + b["io"] and b["io"] == 896 * 4 + 151936 * 4
    assert roofline.bound_fraction(2.0, 4.0) == 0.5
    assert roofline.bound_fraction(1.0, 0.0) is None


def test_machine_probes_return_positive_figures():
    bw = roofline.measure_memory_bandwidth(threads=2, array_bytes=8 << 20, repeats=2)
    assert bw.copy_gbps > 0 and bw.triad_gbps > 0 and bw.best_gbps >= bw.copy_gbps
    for kind in ("MatMul", "MatMulInteger", "MatMulNBits"):
        g = roofline.measure_gemm(kind, size=128, repeats=2)
        assert g.gflops > 0 and g.kind == kind


def test_summarize_percentiles_are_ordered():
    s = summarize([0.003, 0.001, 0.002, 0.010, 0.004])
    assert s["n"] == 5 and s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["p50"] == pytest.approx(3.0)
    assert summarize([]) == {"n": 0}


def _footprint(**kw) -> jetson.Footprint:
    base = dict(weight_bytes=1 << 30, kv_bytes_per_position=12 << 10, vision_activation_bytes_per_frame=50 << 20,
                prefill_activation_bytes_per_token=1 << 20, attention_score_bytes_per_token_sq=56,
                tokens_per_frame=49, text_tokens=60, max_positions=32768)
    base.update(kw)
    return jetson.Footprint(**base)


def test_jetson_projection_fits_and_limits():
    fp = _footprint()
    per_token = 1_000_000_000  # 1 GB per token: 68 GB/s -> 14.7 ms
    proj = jetson.project(fp, per_token, frames=8, kv_bytes_per_position=fp.kv_bytes_per_position)
    assert proj["kind"] == "projection"
    nano, agx = proj["boards"][0], proj["boards"][-1]
    assert nano["decode_ms_per_token_lower_bound"] == pytest.approx(1e3 / 68, rel=1e-6)
    assert agx["decode_ms_per_token_lower_bound"] < nano["decode_ms_per_token_lower_bound"]
    assert nano["fits"] and nano["largest_frames"] >= 8
    assert agx["largest_frames"] >= nano["largest_frames"]
    budget = nano["available_bytes"]
    f = nano["largest_frames"]
    assert fp.total_bytes(f) <= budget and (fp.total_bytes(f + 1) > budget or fp.context(f + 1) > fp.max_positions)
    # A model bigger than the board fits nowhere and allows no frames.
    huge = _footprint(weight_bytes=70 << 30)
    assert not any(b["fits"] for b in jetson.project(huge, per_token, 8, huge.kv_bytes_per_position)["boards"])
    assert jetson.largest_frames(huge, 6 << 30) == 0


def test_tegrastats_line_parsing():
    line = ("08-30-2024 10:12:01 RAM 2931/7620MB (lfb 1x4MB) SWAP 0/3810MB CPU [2%@729,1%@729] "
            "GR3D_FREQ 37% cpu@46.5C VDD_IN 5127mW/4127mW VDD_CPU_GPU_CV 480mW/480mW")
    s = jetson.parse_tegrastats_line(line, 1.0)
    assert s.power_mw == 5127 and s.ram_used_bytes == 2931 << 20 and s.gpu_util_pct == 37
    old = jetson.parse_tegrastats_line("RAM 1000/3964MB POM_5V_IN 3103/3103 GR3D_FREQ 0%", 2.0)
    assert old.power_mw == 3103
    t = jetson.Tegrastats()
    t.samples = [s, jetson.TegrastatsSample(2.0, 3000.0, None, None)]
    assert t.mean_power_w([(0.5, 1.5)]) == pytest.approx(5.127)


def test_vision_cost_at_one_frame_scales_to_any_frame_count():
    """The manifest records the vision graph's cost at one frame; the bench scales it (no onnx on a device)."""
    from exo2ego_edge.assets import SHIPPED_BUNDLE
    from exo2ego_edge.bundle import load_manifest

    m = load_manifest(SHIPPED_BUNDLE)
    path, s = SHIPPED_BUNDLE / m.graphs["vision"].file, m.preprocessing.image_size
    one = roofline.analyze_graph(path, {"frames": [1, s, s, 3]})
    three = roofline.analyze_graph(path, {"frames": [3, s, s, 3]})
    assert one.flops > 0 and one.times(3).flops == three.flops and one.times(3).weight_bytes == three.weight_bytes
    assert m.costs["vision_per_frame"]["flops"] == one.flops  # what the exporter recorded
