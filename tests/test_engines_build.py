"""`exo2ego-edge engines build`: TensorRT engines from a bundle alone, on stand-ins where TensorRT is absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from exo2ego_edge.assets import SHIPPED_BUNDLE
from exo2ego_edge.bundle import MANIFEST, load_manifest
from exo2ego_edge.cli import main
from exo2ego_edge.errors import UserError
from exo2ego_edge.runtime import engines
from helpers.tensorrt import FakeTrt

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory) -> Path:
    """A tiny student exported for TensorRT at fp16 (no calibration needed)."""
    from exo2ego_edge.export.pipeline import export_bundle
    from helpers.students import make_tiny_student

    work = tmp_path_factory.mktemp("engines")
    return export_bundle(make_tiny_student(work / "student"), work / "bundle", "fp16", "tensorrt", parity_samples=1).out


def _one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_the_exporter_writes_the_decoder_tensorrt_builds_from(gpu_bundle):
    m = load_manifest(gpu_bundle)
    assert m.graphs["decoder"].trt_file == "decoder.trt.onnx" and m.graphs["vision"].trt_file is None
    assert "decoder.trt.onnx" in m.files  # checksummed like every file the device reads


def test_a_cpu_bundle_is_refused_in_one_line(capsys):
    err = _one_line_error(capsys, ["engines", "build", str(SHIPPED_BUNDLE)])
    assert "exported for the CPU" in err and "--target tensorrt" in err


@pytest.mark.skipif(HAS_TRT, reason="TensorRT imports here: the refusal path cannot be exercised")
def test_without_tensorrt_the_bundle_is_left_as_it_was(gpu_bundle, capsys):
    before = (gpu_bundle / MANIFEST).read_bytes()
    err = _one_line_error(capsys, ["engines", "build", str(gpu_bundle)])
    assert "needs TensorRT" in err and "--system-site-packages" in err
    assert (gpu_bundle / MANIFEST).read_bytes() == before and not (gpu_bundle / "engines").exists()


def test_tensorrt_8_is_refused_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeTrt(version="8.6.1"))
    with pytest.raises(UserError, match="TensorRT 8.6.1 found; .* needs TensorRT 10 .JetPack 6.1 or newer"):
        engines.require_tensorrt()


def test_engines_are_built_from_the_bundle_and_recorded_in_its_manifest(gpu_bundle, tmp_path, monkeypatch, capsys):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(gpu_bundle, bundle)
    fake = FakeTrt()
    monkeypatch.setattr(engines, "require_tensorrt", lambda: fake)
    monkeypatch.setattr(engines, "gpu_identity", lambda: ("8.7", "Orin"))
    assert main(["engines", "build", str(bundle), "--max-seq", "64"]) is None
    assert "built engines/decoder.fp16.sm87.engine" in capsys.readouterr().out
    m = load_manifest(bundle)  # every checksum verified, the engines' included
    assert {(e.graph, e.precision, e.compute_capability) for e in m.engines} == {("vision", "fp16", "8.7"),
                                                                                ("decoder", "fp16", "8.7")}
    assert next(e for e in m.engines if e.graph == "decoder").profiles["sequence"] == [1, 1, 64]
    assert {"engines/vision.fp16.sm87.engine", "engines/timing.cache"} <= set(m.files)
    assert ("parse", "decoder.trt.onnx") in fake.calls  # logits_to_keep fixed: no shape tensor
    assert ("flag", "FP16") in fake.calls and ("flag", "INT8") not in fake.calls
    assert not [p for p in bundle.iterdir() if p.name.startswith(".engines-")]  # no build folder left


@pytest.mark.parametrize("args, message", [
    (["--int8"], "--int8 cannot be built from this bundle's fp16"),
    (["--max-seq", "100000"], "within the bundle's limits"),
    (["--max-frames", "0"], "within the bundle's limits"),
])  # fmt: skip
def test_what_the_bundle_cannot_give_is_refused_before_building(gpu_bundle, capsys, monkeypatch, args, message):
    monkeypatch.setattr(engines, "require_tensorrt", lambda: pytest.fail("nothing may be built"))
    assert message in _one_line_error(capsys, ["engines", "build", str(gpu_bundle), *args])


@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed here (it ships with JetPack 6.1+ / NVIDIA's wheels)")
def test_real_engines_build_and_pass_the_parity_gate(gpu_bundle, tmp_path):  # pragma: no cover - needs a GPU
    import shutil

    from exo2ego_edge.runtime.verify import verify_bundle

    bundle = tmp_path / "b"
    shutil.copytree(gpu_bundle, bundle)
    manifest = engines.build_engines(bundle)
    assert {e.graph for e in manifest.engines} == {"vision", "decoder"}
    report = verify_bundle(bundle, backend="tensorrt")
    assert report["passed"], report["failures"]


def test_the_gpu_is_identified_by_nvidia_smi_where_pycuda_is_absent(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)  # as on a device without the [tensorrt] extra
    monkeypatch.setattr(engines, "nvidia_smi_query", lambda fields: [{"compute_cap": "8.7", "name": "Orin (nvgpu)"}])
    assert engines.gpu_identity() == ("8.7", "Orin (nvgpu)")
    monkeypatch.setattr(engines, "nvidia_smi_query", lambda fields: [{"compute_cap": None, "name": "Orin (nvgpu)"}])
    with pytest.raises(UserError, match="does not give its compute capability"):  # [N/A] on some JetPacks
        engines.gpu_identity()
