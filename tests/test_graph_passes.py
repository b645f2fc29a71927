"""graph_passes: the rewritten graphs give the same outputs at lengths no probe used, the shape
arithmetic the probes cannot tell apart is folded, and what depends on a length is left alone."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers.students import tiny_config
from onnx import TensorProto, helper, numpy_helper

from exo2ego_edge.bundle import KV_CACHES
from exo2ego_edge.errors import UserError
from exo2ego_edge.export import graph_passes, onnx_graphs
from exo2ego_edge.model import Exo2Ego

# batch, seq, past, logits_to_keep: none of them among onnx_graphs.PROBE_DECODER
UNPROBED_DECODER = ((1, 1, 40, 1), (1, 30, 0, 1), (2, 3, 8, 0), (4, 6, 1, 3))


@pytest.fixture(scope="module")
def model() -> Exo2Ego:
    torch.manual_seed(0)
    return Exo2Ego(tiny_config(96), student=True).eval()


def outputs(graph: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = graph if isinstance(graph, str) else graph.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_same_outputs(before: str, after: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> None:
    for f in feeds:
        for want, got in zip(outputs(before, f), outputs(after, f), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rotary", [False, True], ids=["rotary-as-exported", "rotary-fused"])
@pytest.mark.parametrize("kv_cache", KV_CACHES)
def test_decoder_keeps_its_outputs_with_fused_projections_and_no_per_layer_shape_chains(model, tmp_path, kv_cache, rotary):
    path = tmp_path / "decoder.onnx"
    io = onnx_graphs.export_decoder(model, path, kv_cache=kv_cache)
    proto = onnx.load(str(path))
    before = Counter(n.op_type for n in proto.graph.node)
    tables = onnx_graphs.rotary_tables(model, model.cfg.llm.max_position_embeddings) if rotary else None
    done = graph_passes.simplify(proto, onnx_graphs.probe_feeds(model.cfg, "decoder"), tmp_path, tables)
    onnx.checker.check_model(proto)
    layers = model.cfg.llm.num_layers
    assert done["fused_matmuls"] == 5 * layers  # q, k, v and gate, up
    ops = Counter(n.op_type for n in proto.graph.node)
    # rotate_half's Slice, Neg and Concat for q and k of every layer, or one RotaryEmbedding each
    assert (done["fused_rotary"], ops["RotaryEmbedding"], ops["Neg"]) == ((2 * layers, 2 * layers, 0) if rotary
                                                                          else (0, 0, 2 * layers))
    named = Counter((n.op_type, n.name.split("/")[-2]) for n in proto.graph.node if "+" in n.name)
    assert named[("MatMul", "q_proj+k_proj+v_proj")] == named[("MatMul", "gate_proj+up_proj")] == layers
    assert named[("Add", "q_proj+k_proj+v_proj")] == layers  # one bias Add, which ORT folds into the GEMM
    after = Counter(n.op_type for n in proto.graph.node)
    # what stays: the mask and rotary's lengths, and each layer's past length (it varies)
    assert after["Shape"] <= 4 + layers < before["Shape"]
    assert done["removed_nodes"] == len(onnx.load(str(path)).graph.node) - len(proto.graph.node) > 0
    feeds = [dict(zip(io.input_names, (t.numpy() for t in onnx_graphs.decoder_example(model.cfg, *p))))
             for p in UNPROBED_DECODER]
    assert_same_outputs(str(path), proto, feeds)


def test_rotary_tables_that_do_not_match_the_graph_are_refused(model, tmp_path):
    path = tmp_path / "decoder.onnx"
    onnx_graphs.export_decoder(model, path, kv_cache="in-place")
    cos, sin = onnx_graphs.rotary_tables(model, model.cfg.llm.max_position_embeddings)
    with pytest.raises(UserError, match="--no-graph-passes"):
        graph_passes.simplify(onnx.load(str(path)), onnx_graphs.probe_feeds(model.cfg, "decoder"), tmp_path, (sin, cos))


def test_vision_keeps_its_outputs_with_fused_kernels(model, tmp_path):
    path = tmp_path / "vision.onnx"
    io = onnx_graphs.export_vision(model, path, fused=True)
    proto = onnx.load(str(path))
    done = graph_passes.simplify(proto, onnx_graphs.probe_feeds(model.cfg, "vision"), tmp_path)
    assert done["fused_matmuls"] == 3 * model.cfg.vision.num_layers  # q, k, v
    assert not [n for n in proto.graph.node if n.op_type == "Shape"]  # frames is the only length, and no op reads it
    feeds = [dict(zip(io.input_names, (t.numpy() for t in onnx_graphs.vision_example(model.cfg, n)))) for n in (4, 7)]
    assert_same_outputs(str(path), proto, feeds)


def shape_graph() -> onnx.ModelProto:
    """x (b, s, 8) -> x.view(b, s, 2, 4) and x[:, : s - 1]: one target the probes fix, one end they do not."""
    shape = helper.make_node("Shape", ["x"], ["shape"])
    dims = [helper.make_node("Gather", ["shape", f"i{k}"], [f"d{k}"], axis=0) for k in (0, 1)]
    target = helper.make_node("Concat", ["d0", "d1", "tail"], ["target"], axis=0)
    view = helper.make_node("Reshape", ["x", "target"], ["viewed"])
    end = helper.make_node("Sub", ["d1", "one"], ["end"])
    cut = helper.make_node("Slice", ["x", "zero", "end", "one"], ["cut"])
    consts = [numpy_helper.from_array(np.array([k], np.int64), f"i{k}") for k in (0, 1)] + [
        numpy_helper.from_array(np.array([2, 4], np.int64), "tail"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    graph = helper.make_graph(
        [shape, *dims, target, view, end, cut], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", 8])],
        [helper.make_tensor_value_info("viewed", TensorProto.FLOAT, ["b", "s", 2, 4]),
         helper.make_tensor_value_info("cut", TensorProto.FLOAT, ["b", "s1", 8])], initializer=consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_folds_a_view_target_and_keeps_a_length_dependent_slice(tmp_path):
    proto = shape_graph()
    path = tmp_path / "g.onnx"
    onnx.save(proto, str(path))
    rng = np.random.default_rng(0)
    probes = [{"x": rng.standard_normal((b, s, 8), dtype=np.float32)} for b, s in ((1, 3), (2, 5), (3, 2))]
    assert graph_passes.fold_shape_arithmetic(proto, probes, tmp_path) == 1
    view = next(n for n in proto.graph.node if n.op_type == "Reshape")
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert inits[view.input[1]].tolist() == [0, 0, 2, 4]  # batch and length kept, the split fixed
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Shape"] == 1 and ops["Sub"] == 1 and "Concat" not in ops  # the slice's end still follows s
    assert_same_outputs(str(path), proto, [{"x": rng.standard_normal((b, s, 8), dtype=np.float32)}
                                           for b, s in ((4, 9), (1, 1))])


def test_joins_matmuls_on_one_input_but_not_a_shared_weight(tmp_path):
    rng = np.random.default_rng(0)
    weights = {n: numpy_helper.from_array(rng.standard_normal((8, w), dtype=np.float32), n)
               for n, w in (("wq", 4), ("wk", 6), ("wt", 8))}
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="/a/q_proj/MatMul"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="/a/k_proj/MatMul"),
        helper.make_node("MatMul", ["x", "wt"], ["t"], name="/a/tied/MatMul"),  # its weight is read twice
        helper.make_node("MatMul", ["z", "wt"], ["u"], name="/b/tied/MatMul"),
    ]
    proto = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["n", 8]) for i in ("x", "z")],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("q", "k", "t", "u")],
        initializer=list(weights.values())), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "g.onnx"
    onnx.save(proto, str(path))
    assert graph_passes.fuse_sibling_matmuls(proto) == 2
    matmuls = [n.name for n in proto.graph.node if n.op_type == "MatMul"]
    assert matmuls == ["/a/q_proj+k_proj/MatMul", "/a/tied/MatMul", "/b/tied/MatMul"]
    assert {t.name for t in proto.graph.initializer} >= {"wt"} and not {"wq", "wk"} & {t.name for t in proto.graph.initializer}
    assert_same_outputs(str(path), proto, [{i: rng.standard_normal((5, 8), dtype=np.float32) for i in ("x", "z")}])


def test_a_rewrite_that_changes_an_output_is_refused(tmp_path, monkeypatch):
    proto = shape_graph()
    monkeypatch.setattr(graph_passes, "_reshape_target", lambda pairs: np.array([0, 0, 4, 2], np.int64))
    probes = [{"x": np.ones((b, s, 8), np.float32)} for b, s in ((1, 3), (2, 5))]
    with pytest.raises(UserError, match="changed 'viewed'.*--no-graph-passes"):
        graph_passes.simplify(proto, probes, tmp_path)
