"""The Jetson software profile: Python 3.10, ONNX Runtime 1.23.2 (what JetPack 6 has), numpy < 2, no torch.

A virtual environment is made with the device install only (``exo2ego-edge[runtime]`` with those
pins) and every device command runs there as a user would: ``run`` on the shipped bundle (the
README's sample answer), ``bench`` with its roofline and Jetson projection, ``eval`` of a bundle
on a small EgoSim suite, ``export inspect``, ``verify``, ``engines build`` (a one-line refusal: no
TensorRT here) and ``doctor`` fed real Jetson ``nvidia-smi`` / ``tegrastats`` outputs.

The training and export stack is not installed there; ``tqdm`` and ``pyyaml`` are (huggingface_hub,
which ``tokenizers`` requires, pulls them in), so the commands run with those imports blocked too:
a device command that needs any of them fails this test. The environment is kept under
``.venv/device-profile`` and rebuilt when ``pyproject.toml`` changes. Without a Python 3.10
(pyenv's, here) the test skips, except where ``EXO2EGO_REQUIRE_DEVICE_PROFILE`` is set (``.ci/run``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exo2ego_edge.assets import SAMPLE_CLIP, SHIPPED_BUNDLE
from helpers.imports import blocking_site

ROOT = Path(__file__).resolve().parents[1]
JETSON_OUTPUTS = ROOT.parent / "shared" / "jetson-outputs"
PINS = ("onnxruntime==1.23.2", "numpy<2")
ABSENT = ("torch", "transformers", "optimum", "onnx", "onnxscript", "matplotlib", "peft", "safetensors")
BLOCKED = (*ABSENT, "tqdm", "yaml")  # tqdm and yaml are installed (via tokenizers) but must not be needed

pytestmark = pytest.mark.slow



def _python310() -> str | None:
    """A working Python 3.10: pyenv's build, else one on PATH (pyenv's shim there may not run)."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which("pyenv") else ""
    candidates = sorted(glob.glob(f"{root}/versions/3.10.*/bin/python3.10"))[::-1] if root else []
    candidates += [p for p in [shutil.which("python3.10")] if p]
    for python in candidates:
        if subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> dict:
    python = _python310()
    if python is None:
        if os.environ.get("EXO2EGO_REQUIRE_DEVICE_PROFILE"):
            pytest.fail("the device-profile test needs a Python 3.10 (pyenv install 3.10)")
        pytest.skip("no Python 3.10 here (pyenv install 3.10 to run the Jetson software profile)")
    venv = ROOT / ".venv" / "device-profile"
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr(PINS).encode()).hexdigest()
    marker = venv / ".installed"
    if not (marker.is_file() and marker.read_text() == stamp):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True, capture_output=True)
        env = {**os.environ, "PYTHONWARNINGS": "ignore:Editable installation"}
        done = subprocess.run([*pip, "-e", f"{ROOT}[runtime]", *PINS], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        marker.write_text(stamp)
    site = blocking_site(tmp_path_factory.mktemp("blocker"), BLOCKED, "is not part of a device install")
    return {"python": str(venv / "bin" / "python"), "cli": str(venv / "bin" / "exo2ego-edge"),
            "env": {**os.environ, "PYTHONPATH": str(site)}, "work": tmp_path_factory.mktemp("device")}


def _run(device: dict, *args: str, expect: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([device["cli"], *args], capture_output=True, text=True, timeout=600,
                          env=env or device["env"], cwd=device["work"])  # fmt: skip
    assert done.returncode == expect, f"{args}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_device_install_has_no_training_or_export_stack(device):
    probe = ("import importlib.util as u, json, sys, numpy, onnxruntime; print(json.dumps([sys.version_info[:2], "
             f"numpy.__version__, onnxruntime.__version__, [m for m in {ABSENT!r} if u.find_spec(m)]]))")
    out = subprocess.run([device["python"], "-c", probe], capture_output=True, text=True, check=True).stdout
    python, numpy_version, ort_version, installed = json.loads(out)
    assert python == [3, 10] and numpy_version.startswith("1.") and ort_version == "1.23.2" and installed == []


def test_run_answers_the_readme_sample_with_the_shipped_bundle(device):
    out = _run(device, "run", "--video", str(SAMPLE_CLIP), "--start", "0.706", "--end", "1.706",
               "--question", "What am I doing?").stdout
    assert "I am pushing the red box." in out


def test_verify_and_inspect_pass_on_the_shipped_bundle(device):
    assert "parity PASSED" in _run(device, "verify", str(SHIPPED_BUNDLE)).stdout
    assert "requires   onnxruntime >=1.22" in _run(device, "export", "inspect", str(SHIPPED_BUNDLE)).stdout


def test_bench_reports_its_roofline_and_the_jetson_projection(device):
    report_path = device["work"] / "bench.json"
    _run(device, "bench", "--bundle", str(SHIPPED_BUNDLE), "--frames", "2", "--runs", "2", "--json", str(report_path))
    report = json.loads(report_path.read_text())
    assert report["roofline"]["available"], report["roofline"]
    assert report["jetson_projection"] and report["results"][0]["roofline"]["decode"]["bound_ms"] > 0


def test_eval_scores_a_bundle_on_an_egosim_suite(device):
    from exo2ego_edge.data.simulator import synthesize_world

    world = synthesize_world(device["work"] / "world", takes=3, size=64, val_frac=0.34, jobs=1).out
    out = _run(device, "eval", "--bundle", str(SHIPPED_BUNDLE), "--suite", "egosim", "--data", str(world),
               "--tasks", "action_recognition").stdout
    assert "action_recognition" in out


@pytest.fixture(scope="module")
def fresh(device) -> dict:
    """A tiny student and real clips, for bundles exported here (on the workstation stack)."""
    from helpers.students import make_tiny_student
    from helpers.videos import write_test_mp4

    video = write_test_mp4(device["work"] / "ego.mp4", frames=30, size=(64, 48))
    clips = device["work"] / "clips.jsonl"
    clips.write_text("".join(json.dumps({"ego_video": str(video), "start": 0.2 * i, "end": 0.2 * i + 1.0}) + "\n"
                             for i in range(4)))
    return {"student": make_tiny_student(device["work"] / "student"), "clips": clips, "video": video}


@pytest.mark.parametrize("precision, target", [("int8", "cpu"), ("int4", "cpu"), ("int8", "tensorrt"), ("fp16", "cuda")])
def test_a_fresh_export_of_every_target_runs_on_the_device(device, fresh, tmp_path, precision, target):
    from exo2ego_edge.export.pipeline import export_bundle

    bundle = export_bundle(fresh["student"], tmp_path / "b", precision, target, calib_data=fresh["clips"],
                           calib_samples=3, eval_data=fresh["clips"], parity_samples=2).out
    assert _run(device, "run", "--bundle", str(bundle), "--video", str(fresh["video"]),
                "--question", "What is the camera wearer doing?").stdout.strip()
    assert "parity PASSED" in _run(device, "verify", str(bundle)).stdout


def test_engines_build_is_refused_in_one_line_without_tensorrt(device, tmp_path):
    from exo2ego_edge.export.pipeline import export_bundle
    from helpers.students import make_tiny_student

    bundle = export_bundle(make_tiny_student(tmp_path / "s", overfit_to=None), tmp_path / "b", "fp16", "tensorrt",
                           parity_samples=1, force=True).out
    err = _run(device, "engines", "build", str(bundle), expect=2).stderr.strip()
    assert err.startswith("error: ") and "needs TensorRT" in err and "\n" not in err


@pytest.mark.skipif(not JETSON_OUTPUTS.is_dir(), reason="the recorded Jetson outputs (shared/jetson-outputs) are absent")
def test_doctor_reads_recorded_jetson_outputs_without_raising(device, tmp_path):
    """nvidia-smi on JetPack 6 prints N/A / Not Supported for memory: doctor says unknown, never crashes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    table = JETSON_OUTPUTS / "agx-orin-64gb_jp6.2.1-r36.4.4_nvidia-smi.txt"
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat '{table}'\n")  # every query gets the recorded table, as on a Jetson
    tool.chmod(0o755)
    env = {**device["env"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    report = json.loads(_run(device, "doctor", "--json", env=env).stdout)
    assert report["gpus"] and report["gpus"][0]["memory_total_bytes"] is None, report["gpus"]
    assert "Orin" in report["gpus"][0]["name"]
    _run(device, "doctor", env=env)


def test_the_demo_says_in_one_line_that_it_needs_the_workstation_stack(device):
    err = _run(device, "demo", "--quick", "--out", "demo", expect=2).stderr.strip()
    assert "device install" in err and "exo2ego-edge[train,export]" in err and "\n" not in err


def test_a_bundle_needing_a_newer_onnxruntime_is_refused_there(device, tmp_path):
    bundle = tmp_path / "newer"
    shutil.copytree(SHIPPED_BUNDLE, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["requires"] = {"onnxruntime": "==1.32.0"}  # what an --ort-optimize export on 1.32 records
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    err = _run(device, "run", "--bundle", str(bundle), "--video", str(SAMPLE_CLIP), "--question", "Hi?",
               expect=2).stderr.strip()
    assert "needs onnxruntime ==1.32.0; this machine has 1.23.2" in err and "\n" not in err
