"""Export layer: graphs, precisions, parity gate, bundle integrity, CLI refusals.

Everything runs on a tiny student overfit in the fixture (so greedy answers are real captions
with clear logit margins) and on real H.264 clips written by ``helpers.videos``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from helpers.videos import write_test_mp4

from exo2ego_edge.assets import SHIPPED_STUDENT
from exo2ego_edge.bundle import KV_CACHES, MANIFEST, BundleError, load_manifest, present_names
from exo2ego_edge.cli import cli
from exo2ego_edge.errors import UserError
from exo2ego_edge.export import onnx_graphs, ort_offline, quantize
from helpers.students import CAPTIONS, QUESTION, clip_frames_for, make_tiny_student
from exo2ego_edge.export.clip_frames import load_clips
from exo2ego_edge.export.parity import ParityThresholds
from exo2ego_edge.export.pipeline import export_bundle
from exo2ego_edge.model import load_student
from exo2ego_edge.export.onnx_graphs import keep_last_logits
from exo2ego_edge.runtime import Runtime
from exo2ego_edge.runtime.video import decode_clip
from exo2ego_edge.data.clips import split_clip_files
from exo2ego_edge.data.simulator import synthesize_world

FLOAT_ONLY_OPS = {"Add", "LayerNormalization", "SimplifiedLayerNormalization", "Softmax"}


@pytest.fixture(autouse=True)
def _inference_only():
    """These tests compare PyTorch outputs with graphs: no autograd (and no global switch)."""
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return make_tiny_student(work / "student")


@pytest.fixture(scope="module")
def clips(work) -> Path:
    video = write_test_mp4(work / "ego.mp4", frames=30, size=(64, 48))
    rows = [{"ego_video": str(video), "start": 0.25 * i, "end": 0.25 * i + 0.8, "question": QUESTION} for i in range(8)]
    path = work / "clips.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def fp32_bundle(work, checkpoint, clips) -> Path:
    return export_bundle(checkpoint, work / "fp32", "fp32", eval_data=clips, parity_samples=2).out


@pytest.fixture(scope="module")
def decoders(work, checkpoint) -> dict[str, Path]:
    """The fp32 decoder graph with each KV cache, exported alone (no bundle around it)."""
    model = load_student(checkpoint).model
    paths = {}
    for kv_cache in KV_CACHES:
        folder = work / f"decoder-{kv_cache}"
        folder.mkdir()
        paths[kv_cache] = folder / "decoder.onnx"
        onnx_graphs.export_decoder(model, paths[kv_cache], kv_cache=kv_cache)
    return paths


@pytest.fixture(scope="module")
def int8_bundle(work, checkpoint, clips) -> Path:
    out = work / "int8"
    out.mkdir()  # an existing folder: the CLI must be told --overwrite
    runner = CliRunner()
    args = ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--int8", "--eval-data", str(clips),
            "--parity-samples", "2"]
    refused = runner.invoke(cli, args)
    assert refused.exit_code != 0 and "--overwrite" in str(refused.exception or refused.output)
    result = runner.invoke(cli, [*args, "--overwrite"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.isa
def test_fp32_bundle_reproduces_pytorch_greedy_token_for_token(fp32_bundle, checkpoint):
    student = load_student(checkpoint)
    model, tok, cfg = student.model, student.tokenizer, student.model.cfg
    rt = Runtime.load(fp32_bundle, backend="ort", device="cpu", threads=1)
    prompt = tok.prompt_ids(cfg.system_prompt, QUESTION)
    for i, caption in enumerate(CAPTIONS):
        frames = clip_frames_for(i, cfg.num_frames, cfg.vision.image_size)
        with torch.no_grad():
            want = model.generate(model(torch.from_numpy(frames)[None]), [prompt], tok.stop_id, 32)[0]
        got = rt.session(frames=frames).ask(QUESTION, 32).token_ids
        assert got == want
        assert len(want) >= 3 and len(set(want)) > 1  # the overfit fixture really answers (non-degenerate)
        assert caption.startswith(tok.decode(want).strip())
    parity = rt.manifest.parity
    assert parity["passed"] and parity["token_agreement"] == 1.0 and parity["visual_cosine_min"] > 0.9999
    assert parity["exact_sequences"] == parity["clips"] and parity["prompt_ids_match"]
    assert parity["logits_max_abs"] < 1e-4  # the multi-position pass included


def test_graphs_run_at_two_frame_counts_and_two_sequence_lengths(fp32_bundle, decoders, checkpoint):
    import onnxruntime as ort

    model = load_student(checkpoint).model
    cfg = model.cfg
    vision = ort.InferenceSession(str(fp32_bundle / "vision.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        (frames,) = onnx_graphs.vision_example(cfg, frames=n)
        got = vision.run(None, {"frames": frames.numpy()})[0]
        want = onnx_graphs.VisionGraph(model)(frames).numpy()
        assert got.shape == (n, cfg.tokens_per_frame, cfg.llm.hidden_size)
        np.testing.assert_allclose(got, want, atol=1e-4)
    decoder = ort.InferenceSession(str(decoders["concat"]), providers=["CPUExecutionProvider"])
    names = [i.name for i in decoder.get_inputs()]
    assert names[:4] == ["inputs_embeds", "attention_mask", "position_ids", "logits_to_keep"]
    for batch, seq, past in ((1, 3, 0), (2, 7, 4)):
        args = onnx_graphs.decoder_example(cfg, batch=batch, seq=seq, past=past, logits_to_keep=0)
        got = decoder.run(None, dict(zip(names, (a.numpy() for a in args))))
        want = onnx_graphs.DecoderGraph(model)(*args)
        assert got[0].shape == (batch, seq, cfg.llm.vocab_size)
        assert got[1].shape[2] == past + seq
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4)


def test_in_place_decoder_reads_the_cache_as_it_lies_and_returns_the_new_rows(decoders, checkpoint):
    import onnxruntime as ort

    model = load_student(checkpoint).model
    decoder = ort.InferenceSession(str(decoders["in-place"]), providers=["CPUExecutionProvider"])
    names = [i.name for i in decoder.get_inputs()]
    graph = onnx.load(str(decoders["in-place"])).graph
    for name in names[4:]:  # the past is only read: by MatMuls (keys through a Transpose), shape queries
        readers = {n.op_type for n in graph.node if name in n.input}
        assert readers and readers <= {"MatMul", "Transpose", "Shape"}, (name, readers)
    # a first prefill, a question after the video, a decode step of two sequences; `room` unfilled
    # positions after the past, which the mask hides, as the runtime's buffers have
    for batch, seq, past, room in ((1, 4, 0, 0), (1, 6, 3, 5), (2, 1, 5, 2)):
        args = onnx_graphs.decoder_example(model.cfg, batch=batch, seq=seq, past=past, logits_to_keep=0)
        want = onnx_graphs.DecoderGraph(model)(*args)
        filler = torch.full((batch, model.cfg.llm.num_kv_heads, room, model.cfg.llm.head_dim), 1e4)
        cache = [torch.cat([kv, filler], dim=2) for kv in args[4:]]
        mask = torch.cat([torch.ones(batch, past), torch.zeros(batch, room), torch.ones(batch, seq)], 1).long()
        got = decoder.run(None, dict(zip(names, (a.numpy() for a in (args[0], mask, *args[2:4], *cache)))))
        np.testing.assert_allclose(got[0], want[0].numpy(), atol=1e-4)
        for new, concat in zip(got[1:], want[1:]):
            np.testing.assert_allclose(new, concat[:, :, past:].numpy(), atol=1e-5)


@pytest.mark.parametrize("kv_cache", KV_CACHES)
def test_logits_to_keep_returns_the_last_k_positions(fp32_bundle, decoders, checkpoint, kv_cache):
    import onnxruntime as ort

    cfg = load_student(checkpoint).model.cfg
    spec = load_manifest(fp32_bundle).graphs["decoder"]
    assert "logits_to_keep" in [t.name for t in spec.inputs]  # the manifest tells a runtime it may ask
    decoder = ort.InferenceSession(str(decoders[kv_cache]), providers=["CPUExecutionProvider"])
    names = [i.name for i in decoder.get_inputs()]
    batch = 2
    args = onnx_graphs.decoder_example(cfg, batch=batch, seq=6, past=3, logits_to_keep=0)
    feeds = dict(zip(names, (a.numpy() for a in args)))
    full, *present = decoder.run(None, feeds)
    for k, rows in ((1, 1), (4, 4), (6, 6), (9, 6)):  # k >= seq keeps every position, like k = 0
        feeds["logits_to_keep"] = np.array(k, dtype=np.int64)
        kept, *kept_present = decoder.run(None, feeds)
        assert kept.shape == (batch, rows, cfg.llm.vocab_size)
        np.testing.assert_allclose(kept, full[:, 6 - rows :], rtol=0, atol=1e-5)
        for a, b in zip(present, kept_present):
            np.testing.assert_array_equal(a, b)


def test_attention_reads_the_kv_cache_without_repeating_it(decoders):
    graph = onnx.load(str(decoders["concat"])).graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    assert not [n.name for n in graph.node if n.op_type == "Expand" and "self_attn" in n.name]
    # K (through its transpose, which the CPU bundle's saved ORT fusions fold in) and V go straight
    # into MatMuls
    for present in present_names(2):
        ops = [n for n in consumers[present] if n.op_type != "Shape"]
        ops = [c for n in ops for c in (consumers[n.output[0]] if n.op_type == "Transpose" else [n])]
        assert ops and all(n.op_type in ("MatMul", "FusedMatMul") for n in ops), (present, [n.op_type for n in ops])


def test_tensorrt_copy_of_the_decoder_keeps_one_row(fp32_bundle, decoders, checkpoint):
    import onnxruntime as ort

    cfg = load_student(checkpoint).model.cfg
    frozen = decoders["concat"].with_name("decoder.trt.onnx")  # beside its source: it references the weights
    assert keep_last_logits(decoders["concat"], frozen)
    vision_copy = frozen.with_name("v.onnx")
    assert not keep_last_logits(fp32_bundle / "vision.onnx", vision_copy) and not vision_copy.exists()
    args = [a.numpy() for a in onnx_graphs.decoder_example(cfg, seq=5, past=2, logits_to_keep=0)]
    full = ort.InferenceSession(str(decoders["concat"]), providers=["CPUExecutionProvider"])
    one = ort.InferenceSession(str(frozen), providers=["CPUExecutionProvider"])
    assert "logits_to_keep" not in [i.name for i in one.get_inputs()]
    want = full.run(None, dict(zip([i.name for i in full.get_inputs()], args)))[0]
    got = one.run(None, dict(zip([i.name for i in one.get_inputs()], args[:3] + args[4:])))[0]
    np.testing.assert_array_equal(got, want[:, -1:])


def test_calibration_frames_are_the_runtime_decoders(clips):
    row = json.loads(clips.read_text().splitlines()[0])
    (frames, got_row), = load_clips(clips, 1, 3, 16)
    assert got_row == row
    np.testing.assert_array_equal(frames, decode_clip(row["ego_video"], row["start"], row["end"], 3, 16))


@pytest.mark.isa
def test_int8_cpu_keeps_parity_and_shrinks(int8_bundle, fp32_bundle, checkpoint):
    m = load_manifest(int8_bundle)
    assert {g.precision for g in m.graphs.values()} == {"int8"}
    assert m.parity["passed"]
    assert m.parity["visual_cosine_mean"] >= 0.99 and m.parity["token_agreement"] >= 0.9
    ops_v = quantize.count_ops(onnx.load(str(int8_bundle / "vision.onnx")))
    ops_d = quantize.count_ops(onnx.load(str(int8_bundle / "decoder.onnx")))
    # integer decoder: the layers on INT8 GEMMs (portable ops: ORT fuses them at load), the lm_head weight-only
    assert ops_v.get("MatMulInteger", 0) > 0 and ops_d.get("MatMulInteger", 0) > 0 and ops_d.get("MatMulNBits") == 1
    # the tower's attention and GELU on ONNX Runtime's fused kernels, one each per layer
    layers = load_student(checkpoint).model.cfg.vision.num_layers
    assert ops_v.get("MultiHeadAttention") == ops_v.get("FastGelu") == layers and "Tanh" not in ops_v
    # graph passes: q/k/v and gate/up each one GEMM, so four per decoder layer
    assert ops_d["MatMulInteger"] == 4 * load_student(checkpoint).model.cfg.llm.num_layers
    assert m.provenance["options"]["graph_passes"] is True
    assert {k: g.matmuls for k, g in m.graphs.items()} == {"vision": "integer-dynamic", "decoder": "integer-dynamic"}
    assert m.requires == {"onnxruntime": ">=1.22"}  # 8-bit MatMulNBits (1.21 refuses it)
    # the patch embedding is a weight-only INT8 MatMul: no float Conv weights are left behind
    assert "Conv" not in ops_v and ops_v.get("MatMulNBits") == 1
    size = lambda b: sum(p.stat().st_size for p in b.iterdir())  # noqa: E731
    assert size(int8_bundle) < 0.6 * size(fp32_bundle)


@pytest.mark.isa
def test_weight_only_int8_decoder_keeps_parity(work, checkpoint, clips, int8_bundle):
    out = export_bundle(checkpoint, work / "int8-weight-only", "int8", eval_data=clips, parity_samples=2,
                        cpu_decoder="weight-only")
    ops = quantize.count_ops(onnx.load(str(out.out / "decoder.onnx")))
    assert ops.get("MatMulInteger", 0) == 0 and ops.get("MatMulNBits", 0) > 1
    assert out.manifest.graphs["decoder"].matmuls == "weight-only" and out.manifest.parity["passed"]
    integer = load_manifest(int8_bundle).parity  # the default, on the same clips
    assert abs(integer["token_agreement"] - out.manifest.parity["token_agreement"]) <= 0.1, (integer, out.manifest.parity)


def _decoder_call(session, embeds: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """One in-place decoder call on ``session`` after the exact-size ``past``: last logits, new rows."""
    n, s = past[0].shape[2], embeds.shape[0]
    feeds = {"inputs_embeds": embeds[None], "attention_mask": np.ones((1, n + s), np.int64),
             "position_ids": np.arange(n, n + s, dtype=np.int64)[None], "logits_to_keep": np.array(1, np.int64)}
    names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values")]
    logits, *new = session.run(None, {**feeds, **dict(zip(names, past))})
    return logits[0, -1], new


@pytest.mark.isa
def test_hybrid_int8_decoder_prefills_on_integer_gemms_and_steps_on_weight_only(work, checkpoint, clips):
    import onnxruntime as ort

    from exo2ego_edge.runtime.ort_backend import OrtBackend

    out = work / "int8-hybrid"
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--int8",
                                      "--cpu-decoder", "hybrid", "--eval-data", str(clips), "--parity-samples", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    m = load_manifest(out)
    assert {k: (g.file, g.matmuls) for k, g in m.graphs.items()} == {
        "vision": ("vision.onnx", "integer-dynamic"), "decoder": ("decoder.onnx", "integer-dynamic"),
        "decoder_step": ("decoder_step.onnx", "weight-only")}
    assert m.graphs["decoder_step"].inputs == m.graphs["decoder"].inputs and m.parity["passed"]
    assert quantize.count_ops(onnx.load(str(out / "decoder_step.onnx"))).get("MatMulInteger", 0) == 0
    # The runtime: a prefill on decoder.onnx, a one-token step on decoder_step.onnx, one cache.
    decoder = OrtBackend(out, m, device="cpu", threads=1).decoder
    embeds = np.random.default_rng(0).standard_normal((6, m.decoder.hidden_size)).astype(np.float32)
    prefix, prefill = decoder.extend(None, embeds[:5])
    prefill = prefill.copy()
    step = decoder.step(decoder.start(prefix), embeds[5:]).copy()
    integer, weight_only = (ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                            for f in ("decoder.onnx", "decoder_step.onnx"))
    empty = [np.zeros((1, m.decoder.num_kv_heads, 0, m.decoder.head_dim), np.float32)] * (2 * m.decoder.num_layers)
    want_prefill, rows = _decoder_call(integer, embeds[:5], empty)
    np.testing.assert_allclose(prefill, want_prefill, rtol=1e-4, atol=1e-4)
    want_step, _ = _decoder_call(weight_only, embeds[5:], rows)
    integer_step, _ = _decoder_call(integer, embeds[5:], rows)
    np.testing.assert_allclose(step, want_step, rtol=1e-4, atol=1e-4)
    assert np.abs(step - integer_step).max() > 1e-3  # the two graphs do differ: the step graph is what ran


def test_no_graph_passes_keeps_the_exporters_graph(work, checkpoint, fp32_bundle):
    out = work / "fp32-as-exported"
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(checkpoint), "--out", str(out),
                                      "--parity-samples", "1", "--no-graph-passes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    as_exported = quantize.count_ops(onnx.load(str(out / "decoder.onnx")))
    rewritten = quantize.count_ops(onnx.load(str(fp32_bundle / "decoder.onnx")))
    layers = load_student(checkpoint).model.cfg.llm.num_layers
    # q, k, v -> 1 and gate, up -> 1; the rotary tables' product (inverse frequencies x positions)
    # now made at export, and applied by one RotaryEmbedding per query and key
    assert as_exported["MatMul"] - rewritten["MatMul"] == 3 * layers + 1
    assert rewritten["RotaryEmbedding"] == 2 * layers and "RotaryEmbedding" not in as_exported
    assert as_exported["Shape"] > rewritten["Shape"] and "Split" not in as_exported
    assert load_manifest(out).provenance["options"]["graph_passes"] is False and load_manifest(out).parity["passed"]


def test_int8_bundle_embeddings_are_int8_rows_with_scales(int8_bundle, fp32_bundle):
    m = load_manifest(int8_bundle)
    assert m.embeddings.dtype == "int8" and m.embedding_scales.shape == m.embeddings.shape[:1]
    exact = Runtime.load(fp32_bundle).prompt
    quant = Runtime.load(int8_bundle).prompt
    ids = list(range(exact.table.shape[0]))
    step = np.abs(exact.embed(ids)).max(axis=1, keepdims=True) / 127  # one int8 step per row
    assert np.all(np.abs(quant.embed(ids) - exact.embed(ids)) <= 0.5 * step + 1e-7)


def test_int4_embedding_rows_round_trip_within_half_a_step():
    from exo2ego_edge.export.pipeline import int4_rows
    from exo2ego_edge.runtime.prompting import _int4_values

    table = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32) * 3
    table[7, 5] = 40.0  # an outlier widens only its own block's step
    packed, scales = int4_rows(table)
    assert packed.shape == (50, 32) and packed.dtype == np.uint8 and scales.shape == (50, 2)
    back = _int4_values(packed, scales)
    step = np.repeat(scales.astype(np.float32), 32, axis=1)
    assert np.all(np.abs(back - table) <= 0.5 * step + 1e-3 * np.abs(table))
    assert np.abs(back[8] - table[8]).max() < 0.5


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_patch_embedding_as_matmul_equals_the_conv(family):
    from exo2ego_edge.config import PRESETS
    from exo2ego_edge.model import Exo2Ego

    cfg = PRESETS["egosim-tiny"]()
    cfg.vision.family = family
    torch.manual_seed(0)
    model = Exo2Ego(cfg).eval()
    frames = torch.randint(0, 256, (2, cfg.num_frames, cfg.vision.image_size, cfg.vision.image_size, 3),
                           dtype=torch.uint8)
    conv = model.ego_encoder.tower.vision_model.embeddings.patch_embedding
    with onnx_graphs.patch_embeddings_as_matmul(model.ego_encoder):
        swapped = model.ego_encoder.tower.vision_model.embeddings.patch_embedding
        as_matmul = model(frames)
    assert isinstance(swapped, onnx_graphs.PatchEmbeddingMatMul)
    assert model.ego_encoder.tower.vision_model.embeddings.patch_embedding is conv  # restored
    torch.testing.assert_close(as_matmul, model(frames), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family, activation", [("siglip", "FastGelu"), ("clip", "QuickGelu")])
def test_fused_vision_kernels_compute_what_the_standard_graph_does(family, activation, tmp_path):
    import onnxruntime as ort

    from exo2ego_edge.config import PRESETS
    from exo2ego_edge.model import Exo2Ego

    cfg = PRESETS["egosim-tiny"]()
    cfg.vision.family = family
    torch.manual_seed(0)
    model = Exo2Ego(cfg).eval()
    tower = model.ego_encoder.tower
    attention, mlp = tower.config._attn_implementation, tower.vision_model.encoder.layers[0].mlp.activation_fn
    frames = np.random.default_rng(0).integers(0, 256, (3, cfg.vision.image_size, cfg.vision.image_size, 3), np.uint8)
    tokens = {}
    for fused in (False, True):
        path = tmp_path / f"vision-{fused}.onnx"
        onnx_graphs.export_vision(model, path, fused=fused)
        ops = quantize.count_ops(onnx.load(str(path)))
        assert (ops.get("MultiHeadAttention"), ops.get(activation)) == ((cfg.vision.num_layers,) * 2 if fused else (None, None))
        assert fused != ("Softmax" in ops)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        tokens[fused] = session.run(None, {"frames": frames})[0]
    assert tower.config._attn_implementation == attention and tower.vision_model.encoder.layers[0].mlp.activation_fn is mlp
    np.testing.assert_allclose(tokens[True], tokens[False], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tokens[True], model(torch.from_numpy(frames)[:, None]).numpy(), rtol=1e-4, atol=1e-5)


def test_inspect_prints_the_manifest_table(int8_bundle):
    result = CliRunner().invoke(cli, ["export", "inspect", str(int8_bundle)], catch_exceptions=False)
    assert result.exit_code == 0
    for needle in ("vision.onnx", "decoder.onnx", "int8", "PASSED", "checkpoint", "opset 17", "every sha256 matches",
                   "fused kernels; decoder INT8 weights and activations (integer GEMM)"):
        assert needle in result.output


def test_gpu_int8_qdq_only_around_weight_matmuls(work, checkpoint, clips):
    out = export_bundle(checkpoint, work / "qdq", "int8", "tensorrt", calib_data=clips, calib_samples=3,
                        calib_method="minmax", parity_samples=2).out
    for graph in ("vision.onnx", "decoder.onnx"):
        model = onnx.load(str(out / graph))
        ops = quantize.count_ops(model)
        assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
        assert quantize.qdq_violations(model) == []
        assert not [n.op_type for n in model.graph.node if n.domain == "com.microsoft"]  # TensorRT parses standard ops
        producers = {o: n for n in model.graph.node for o in n.output}
        for node in model.graph.node:  # no residual Add / norm / softmax touches quantized data
            if node.op_type in FLOAT_ONLY_OPS:
                assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
        # attention's activation x activation MatMuls stay float: a DQ'd MatMul has a DQ'd weight
        weights = {i.name for i in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "MatMul" and any(producers.get(i) and producers[i].op_type == "DequantizeLinear" for i in node.input):
                b = producers[node.input[1]]
                assert b.op_type == "DequantizeLinear" and b.input[0] in weights, node.name
    assert load_manifest(out).parity["passed"]


def test_the_shipped_student_keeps_parity_under_gpu_qdq(tmp_path):
    """On simulator ego clips, as a user exports it. Its patch embedding stays float: int8 pixels
    alone took the visual-token cosine to 0.989 (min 0.90) and failed the gate."""
    synthesize_world(tmp_path / "world", takes=3, seed=1, size=64, val_frac=0.34, jobs=1, progress=False)
    train, val = split_clip_files(tmp_path / "world", tmp_path / "clips")
    out = export_bundle(SHIPPED_STUDENT, tmp_path / "b", "int8", "tensorrt", calib_data=train, eval_data=val).out
    parity = load_manifest(out).parity
    assert parity["passed"] and parity["visual_cosine_min"] > 0.98, parity
    model = onnx.load(str(out / "vision.onnx"))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    (patch,) = [n for n in model.graph.node if n.name in quantize.pixel_matmuls(model)]
    assert producers.get(patch.input[0]) != "DequantizeLinear"


def test_fp16_and_int4_bundles(work, checkpoint, clips):
    fp16 = export_bundle(checkpoint, work / "fp16", "fp16", eval_data=clips, parity_samples=2)
    assert fp16.manifest.graphs["decoder"].inputs[0].dtype == "float16"
    assert "MultiHeadAttention" not in quantize.count_ops(onnx.load(str(work / "fp16" / "vision.onnx")))
    ops = quantize.count_ops(onnx.load(str(work / "fp16" / "decoder.onnx")))
    assert ops.get("Cast", 0) > 0  # the blocked norm / softmax ops run fp32 behind casts
    int4 = export_bundle(checkpoint, work / "int4", "int4", eval_data=clips, parity_samples=2)
    assert int4.manifest.graphs["decoder"].precision == "int4" and int4.manifest.embeddings.dtype == "int4"
    assert quantize.count_ops(onnx.load(str(work / "int4" / "decoder.onnx"))).get("MatMulNBits", 0) > 0
    assert fp16.manifest.parity["passed"] and int4.manifest.parity["passed"]


def test_tampered_file_and_newer_format_are_refused(fp32_bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(fp32_bundle, tampered)
    data = bytearray((tampered / "decoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        Runtime.load(tampered)
    newer = tmp_path / "newer"
    shutil.copytree(fp32_bundle, newer)
    manifest = json.loads((newer / MANIFEST).read_text())
    manifest["format_version"] = 99
    (newer / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer"):
        load_manifest(newer)
    manifest["format_version"] = 1  # a format-1 bundle (float embeddings, no scales) still loads
    (newer / MANIFEST).write_text(json.dumps(manifest))
    assert load_manifest(newer).embedding_scales is None
    manifest["graphs"]["audio"] = manifest["graphs"]["vision"]  # a graph this runtime would not run
    (newer / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"unknown entries \['audio'\]"):
        load_manifest(newer)


def test_parity_failure_writes_nothing_unless_forced(work, checkpoint, caplog):
    impossible = ParityThresholds(visual_cosine_mean=1.5)
    out = work / "failing"
    with pytest.raises(UserError, match="parity check failed"):
        export_bundle(checkpoint, out, "fp32", thresholds=impossible, parity_samples=1)
    assert not out.exists() and not list(work.glob(".failing.*"))
    kept = export_bundle(checkpoint, out, "fp32", thresholds=impossible, parity_samples=1, force=True)
    assert load_manifest(out).parity["passed"] is False and not kept.manifest.parity_passed
    with caplog.at_level("WARNING"):
        Runtime.load(out)
    assert "failed its parity check" in caplog.text  # the runtime says so before answering


def test_existing_bundle_needs_overwrite(fp32_bundle, checkpoint):
    with pytest.raises(UserError, match="--overwrite"):
        export_bundle(checkpoint, fp32_bundle, "fp32")


def test_overwrite_replaces_bundles_only(checkpoint, tmp_path):
    """--overwrite removes the old folder: never the checkpoint, a folder of other files, or a file."""
    shutil.copytree(checkpoint, tmp_path / "ckpt")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    cases = {tmp_path / "ckpt": "holds the checkpoint", tmp_path: "holds the checkpoint",
             tmp_path / "notes": "not a bundle", tmp_path / "file": "is a file",
             tmp_path / "file" / "bundle": "is a file, not a folder"}
    for out, message in cases.items():
        with pytest.raises(UserError, match=message):
            export_bundle(tmp_path / "ckpt", out, "fp32", overwrite=True)
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "notes" / "keep.txt").is_file()
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--fp16", "--int8"], "--fp16 and --int8 exclude each other"),
    (["--max-seq", "-5"], "--max-seq must be >= 1 (got -5)"),
    (["--max-seq", "99999"], "--max-seq 99999 is above the LLM's"),
    (["--calib-samples", "0"], "--calib-samples must be >= 1 (got 0)"),
    (["--kv-cache", "in-place", "--target", "tensorrt"], "--kv-cache in-place runs on ONNX Runtime's CPU"),
    (["--vision-kernels", "fused", "--fp16"], "--vision-kernels fused exports ONNX Runtime's CPU kernels"),
])
def test_cli_refuses_bad_options_in_one_line(checkpoint, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b"), *args])
    assert isinstance(result.exception, UserError) and not (tmp_path / "b").exists()  # main(): one line, exit 2
    assert message in str(result.exception), result.exception


def test_an_unused_calib_data_is_named_but_not_when_parity_reads_it(checkpoint, clips, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        export_bundle(checkpoint, tmp_path / "a", "fp32", calib_data=clips, parity_samples=1)
    assert "--calib-data is not used" not in caplog.text  # without --eval-data, parity reads its end
    with caplog.at_level("WARNING"):
        export_bundle(checkpoint, tmp_path / "b", "fp32", calib_data=clips, eval_data=clips, parity_samples=1)
    assert "--calib-data is not used" in caplog.text


def test_inspect_exits_nonzero_when_a_file_is_tampered(fp32_bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(fp32_bundle, tampered)
    (tampered / "vision.onnx").write_bytes((tampered / "vision.onnx").read_bytes()[:-1])
    result = CliRunner().invoke(cli, ["export", "inspect", str(tampered)])
    assert result.exit_code == 1 and "integrity  FAILED" in result.output
    assert CliRunner().invoke(cli, ["export", "inspect", str(fp32_bundle)]).exit_code == 0


def test_invalid_options_are_collected_into_one_line(checkpoint, tmp_path):
    with pytest.raises(UserError) as e:
        export_bundle(checkpoint, tmp_path / "x", "int3", "tpu", parity_samples=0)
    assert "int3" in str(e.value) and "tpu" in str(e.value) and "parity-samples" in str(e.value)
    assert "\n" not in str(e.value)


def test_max_frames_below_the_clip_length_is_refused(checkpoint, tmp_path):
    with pytest.raises(UserError, match="--max-frames 1 is below the model's 2 frames per clip"):
        export_bundle(checkpoint, tmp_path / "x", max_frames=1)
    assert not (tmp_path / "x").exists()


def test_cpu_graphs_are_saved_ort_fused_with_the_same_outputs(work, checkpoint, fp32_bundle):
    import onnxruntime as ort

    default = load_manifest(fp32_bundle)  # portable by default: what a device's older ORT loads
    assert default.provenance["ort_graph_optimization"] is None and default.requires == {"onnxruntime": ">=1.18"}
    optimized = load_manifest(export_bundle(checkpoint, work / "ort-optimized", "fp32", ort_optimize=True,
                                            parity_samples=1).out)
    assert optimized.provenance["ort_graph_optimization"] == ort_offline.LEVEL
    assert optimized.requires == {"onnxruntime": f"=={ort.__version__}"}
    model = load_student(checkpoint).model
    folder = work / "offline"
    folder.mkdir()
    path = folder / "vision.onnx"
    onnx_graphs.export_vision(model, path)
    # the >2 GiB path: weights in one .data file beside the graph, which must stay there
    onnx.save(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="vision.onnx.data", size_threshold=1024)
    frames = {"frames": clip_frames_for(3, model.cfg.num_frames, model.cfg.vision.image_size)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, frames)[0]
    nodes_before = len(onnx.load(str(path), load_external_data=False).graph.node)
    ort_offline.optimize_for_cpu(path)
    saved = onnx.load(str(path), load_external_data=False)
    assert len(saved.graph.node) < nodes_before
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in saved.graph.initializer)
    assert sorted(p.name for p in folder.iterdir()) == ["vision.onnx", "vision.onnx.data"]
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, frames)[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_bundle_needing_another_onnxruntime_is_refused_in_one_line(fp32_bundle, tmp_path):
    import onnxruntime as ort

    from exo2ego_edge.runtime import BackendError, Runtime

    for spec, fix in ((">=99.0", "install onnxruntime>=99.0"), ("==1.0.0", "re-export without --ort-optimize")):
        bundle = tmp_path / spec
        shutil.copytree(fp32_bundle, bundle)
        manifest = json.loads((bundle / MANIFEST).read_text())
        manifest["requires"] = {"onnxruntime": spec}
        (bundle / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(BackendError) as e:
            Runtime.load(bundle, backend="ort", device="cpu")
        message = str(e.value)
        assert spec in message and ort.__version__ in message and fix in message and "\n" not in message
