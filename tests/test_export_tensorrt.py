"""TensorRT: what can be tested without it (profiles, the refusal); the build needs a GPU."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from exo2ego_edge.cli import main
from exo2ego_edge.config import ModelConfig
from exo2ego_edge.errors import UserError
from exo2ego_edge.export import onnx_graphs
from exo2ego_edge.runtime.engines import axis_profiles, input_shapes, require_tensorrt
from exo2ego_edge.bundle import GraphSpec
from helpers.tensorrt import FakeTrt

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _spec(io: onnx_graphs.GraphIO) -> GraphSpec:
    return GraphSpec(file="g.onnx", precision="fp16", inputs=io.inputs, outputs=io.outputs)


def test_vision_profile_covers_one_to_max_frames():
    cfg = ModelConfig.from_name("egosim-tiny")
    axes = axis_profiles("vision", max_frames=16, max_seq=512, opt_frames=4)
    assert axes == {"frames": [1, 4, 16]}
    shapes = input_shapes(_spec(onnx_graphs.vision_io(cfg)), axes)
    s = cfg.vision.image_size
    assert shapes["frames"] == ((1, s, s, 3), (4, s, s, 3), (16, s, s, 3))


def test_a_dla_vision_profile_is_fixed_at_max_frames():
    assert axis_profiles("vision", max_frames=8, max_seq=512, opt_frames=4, dla=True) == {"frames": [8, 8, 8]}


@pytest.mark.parametrize("options, message", [
    ({"precision": "int4", "trt": True}, "--int4 has no TensorRT engine"),
    ({"precision": "fp32", "trt": True, "dla_core": 0}, "--dla-core needs --fp16 or --int8"),
])
def test_engine_options_tensorrt_cannot_build_are_refused(options, message):
    from exo2ego_edge.export.pipeline import ExportOptions

    assert any(message in p for p in ExportOptions(target="tensorrt", **options).problems())


def _build_with(fake, tmp_path, monkeypatch, dla_core=None):
    from exo2ego_edge.runtime import engines

    monkeypatch.setattr(engines, "require_tensorrt", lambda: fake)
    cfg = ModelConfig.from_name("egosim-tiny")
    spec = GraphSpec(file="vision.onnx", precision="int8", inputs=onnx_graphs.vision_io(cfg).inputs,
                     outputs=onnx_graphs.vision_io(cfg).outputs)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    engines.build_engine(tmp_path / "vision.onnx", tmp_path / "vision.engine", spec,
                                axis_profiles("vision", 4, 512), cache, dla_core=dla_core)
    return cache.read_bytes()


def test_engine_build_flags_profile_and_timing_cache_against_a_recording_tensorrt(tmp_path, monkeypatch):
    fake = FakeTrt(cache_matches=True)
    assert _build_with(fake, tmp_path, monkeypatch) == b"cache:old"  # the cache is reused and saved
    assert ("flag", "FP16") in fake.calls and ("flag", "INT8") in fake.calls  # Q/DQ needs INT8 in TRT 10
    (profile,) = [c[1] for c in fake.calls if c[0] == "profile"]
    assert profile["frames"][0][0] == 1 and profile["frames"][2][0] == 4
    assert (tmp_path / "vision.engine").read_bytes() == b"engine"


def test_a_foreign_timing_cache_is_replaced_not_fatal(tmp_path, monkeypatch):
    assert _build_with(FakeTrt(cache_matches=False), tmp_path, monkeypatch) == b"cache:"


def test_a_dla_core_the_gpu_lacks_is_refused(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--dla-core 1: this GPU has 1 DLA core"):
        _build_with(FakeTrt(cache_matches=True, dla_cores=1), tmp_path, monkeypatch, dla_core=1)


def test_decoder_profile_is_consistent_for_prefill_and_decode():
    cfg = ModelConfig.from_name("egosim-tiny")
    axes = axis_profiles("decoder", max_frames=4, max_seq=512, opt_prompt=100)
    assert axes["sequence"] == [1, 1, 512] and axes["past_sequence"] == [0, 100, 511]
    assert axes["total_sequence"] == [1, 101, 512]
    shapes = input_shapes(_spec(onnx_graphs.decoder_io(cfg)), axes)
    lc = cfg.llm
    assert shapes["attention_mask"] == ((1, 1), (1, 101), (1, 512))
    assert shapes["past_key_values.1.value"][2] == (1, lc.num_kv_heads, 511, lc.head_dim)
    # opt: a decode step -> total = past + 1 at every profile point that has a real decode
    assert shapes["inputs_embeds"][1][1] + shapes["past_key_values.0.key"][1][2] == shapes["attention_mask"][1][1]
    with pytest.raises(UserError):
        axis_profiles("decoder", max_frames=0, max_seq=1)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT imports here: the refusal path cannot be exercised")
def test_trt_refuses_in_one_line_without_tensorrt(tmp_path, capsys):
    with pytest.raises(UserError, match="building TensorRT engines needs TensorRT"):
        require_tensorrt()
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "b"), "--int8",
              "--target", "tensorrt", "--trt"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TensorRT" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed here (it ships with JetPack / the TensorRT wheels); "
                                        "engine building is exercised on a GPU machine")
def test_trt_engines_build_from_a_bundle(tmp_path):  # pragma: no cover - needs a GPU
    """export --trt on a real TensorRT: engines for both graphs, and the parity gate passes (no --force)."""
    from helpers.students import make_tiny_student
    from exo2ego_edge.export.pipeline import export_bundle

    result = export_bundle(make_tiny_student(tmp_path / "s"), tmp_path / "b", "fp16", "tensorrt", trt=True,
                           parity_samples=2)
    assert {e.graph for e in result.manifest.engines} == {"vision", "decoder"} and result.manifest.parity["passed"]
    assert (tmp_path / "b" / "engines" / "timing.cache").is_file()


def test_cli_help_lists_the_export_flags():
    out = CliRunner().invoke(main_cli(), ["export", "--help"]).output
    for flag in ("--int8", "--fp16", "--int4", "--trt", "--calib-data", "--target", "--overwrite", "--force", "inspect"):
        assert flag in out


def main_cli():
    from exo2ego_edge.cli import cli

    return cli
