"""Export layer: graphs, precisions, parity gate, bundle integrity, CLI refusals.

Everything runs on a tiny student overfit in the fixture (so greedy answers are real captions
with clear logit margins) and on real H.264 clips written by ``video_fixtures``.
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
from video_fixtures import write_test_mp4

from exo2ego_edge.bundle import MANIFEST, BundleError, load_manifest
from exo2ego_edge.cli import cli
from exo2ego_edge.errors import UserError
from exo2ego_edge.export import onnx_graphs, quantize
from exo2ego_edge.export.fixtures import CAPTIONS, QUESTION, clip_frames_for, make_tiny_student
from exo2ego_edge.export.parity import OrtBundle, ParityThresholds
from exo2ego_edge.export.pipeline import export_bundle, load_student

FLOAT_ONLY_OPS = {"Add", "LayerNormalization", "SimplifiedLayerNormalization", "Softmax"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return make_tiny_student(work / "student", overfit_steps=40)


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


def test_fp32_bundle_reproduces_pytorch_greedy_token_for_token(fp32_bundle, checkpoint):
    student = load_student(checkpoint)
    model, tok, cfg = student.model, student.tokenizer, student.model.cfg
    bundle = OrtBundle(fp32_bundle)
    prompt = tok.prompt_ids(cfg.system_prompt, QUESTION)
    for i, caption in enumerate(CAPTIONS):
        frames = clip_frames_for(i, cfg.num_frames, cfg.vision.image_size)
        with torch.no_grad():
            want = model.generate(model(torch.from_numpy(frames)[None]), [prompt], tok.stop_id, 32)[0]
        got = bundle.greedy(frames, prompt, 32)
        assert got == want
        assert len(want) >= 3 and len(set(want)) > 1  # the overfit fixture really answers (non-degenerate)
        assert caption.startswith(tok.decode(want).strip())
    parity = bundle.manifest.parity
    assert parity["passed"] and parity["token_agreement"] == 1.0 and parity["visual_cosine_min"] > 0.9999


def test_graphs_run_at_two_frame_counts_and_two_sequence_lengths(fp32_bundle, checkpoint):
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
    decoder = ort.InferenceSession(str(fp32_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in decoder.get_inputs()]
    for batch, seq, past in ((1, 3, 0), (2, 7, 4)):
        args = onnx_graphs.decoder_example(cfg, batch=batch, seq=seq, past=past)
        got = decoder.run(None, dict(zip(names, (a.numpy() for a in args))))
        want = onnx_graphs.DecoderGraph(model)(*args)
        assert got[0].shape == (batch, seq, cfg.llm.vocab_size)
        assert got[1].shape[2] == past + seq
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4)


def test_int8_cpu_keeps_parity_and_shrinks(int8_bundle, fp32_bundle):
    m = load_manifest(int8_bundle)
    assert {g.precision for g in m.graphs.values()} == {"int8"}
    assert m.parity["passed"]
    assert m.parity["visual_cosine_mean"] >= 0.99 and m.parity["token_agreement"] >= 0.9
    ops_v = quantize.count_ops(onnx.load(str(int8_bundle / "vision.onnx")))
    ops_d = quantize.count_ops(onnx.load(str(int8_bundle / "decoder.onnx")))
    assert ops_v.get("MatMulInteger", 0) > 0 and ops_d.get("MatMulNBits", 0) > 0
    size = lambda b: sum(p.stat().st_size for p in b.iterdir())  # noqa: E731
    assert size(int8_bundle) < 0.6 * size(fp32_bundle)


def test_inspect_prints_the_manifest_table(int8_bundle):
    result = CliRunner().invoke(cli, ["export", "inspect", str(int8_bundle)], catch_exceptions=False)
    assert result.exit_code == 0
    for needle in ("vision.onnx", "decoder.onnx", "int8", "PASSED", "checkpoint", "opset 17", "every sha256 matches"):
        assert needle in result.output


def test_gpu_int8_qdq_only_around_weight_matmuls(work, checkpoint, clips):
    out = export_bundle(checkpoint, work / "qdq", "int8", "tensorrt", calib_data=clips, calib_samples=3,
                        calib_method="minmax", parity_samples=2).out
    for graph in ("vision.onnx", "decoder.onnx"):
        model = onnx.load(str(out / graph))
        ops = quantize.count_ops(model)
        assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
        assert quantize.qdq_violations(model) == []
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


def test_fp16_and_int4_bundles(work, checkpoint, clips):
    fp16 = export_bundle(checkpoint, work / "fp16", "fp16", eval_data=clips, parity_samples=2)
    assert fp16.manifest.graphs["decoder"].inputs[0].dtype == "float16"
    ops = quantize.count_ops(onnx.load(str(work / "fp16" / "decoder.onnx")))
    assert ops.get("Cast", 0) > 0  # the blocked norm / softmax ops run fp32 behind casts
    int4 = export_bundle(checkpoint, work / "int4", "int4", eval_data=clips, parity_samples=2)
    assert int4.manifest.graphs["decoder"].precision == "int4"
    assert quantize.count_ops(onnx.load(str(work / "int4" / "decoder.onnx"))).get("MatMulNBits", 0) > 0
    assert fp16.manifest.parity["passed"] and int4.manifest.parity["passed"]


def test_tampered_file_and_newer_format_are_refused(fp32_bundle, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(fp32_bundle, tampered)
    data = bytearray((tampered / "decoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "decoder.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        OrtBundle(tampered)
    newer = tmp_path / "newer"
    shutil.copytree(fp32_bundle, newer)
    manifest = json.loads((newer / MANIFEST).read_text())
    manifest["format_version"] = 99
    (newer / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer"):
        load_manifest(newer)


def test_parity_failure_writes_nothing_unless_forced(work, checkpoint):
    impossible = ParityThresholds(visual_cosine_mean=1.5)
    out = work / "failing"
    with pytest.raises(UserError, match="parity check failed"):
        export_bundle(checkpoint, out, "fp32", thresholds=impossible, parity_samples=1)
    assert not out.exists() and not list(work.glob(".failing.*"))
    kept = export_bundle(checkpoint, out, "fp32", thresholds=impossible, parity_samples=1, force=True)
    assert load_manifest(out).parity["passed"] is False and not kept.manifest.parity_passed


def test_existing_bundle_needs_overwrite(fp32_bundle, checkpoint):
    with pytest.raises(UserError, match="--overwrite"):
        export_bundle(checkpoint, fp32_bundle, "fp32")


def test_invalid_options_are_collected_into_one_line(checkpoint, tmp_path):
    with pytest.raises(UserError) as e:
        export_bundle(checkpoint, tmp_path / "x", "int3", "tpu", parity_samples=0)
    assert "int3" in str(e.value) and "tpu" in str(e.value) and "parity-samples" in str(e.value)
    assert "\n" not in str(e.value)
