"""The runtime extra ships to a Jetson: it must never pull torch, transformers or optimum."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = {"torch", "transformers", "optimum", "optimum-onnx", "peft", "accelerate"}
RUNTIME_ALLOWED = {"numpy", "click", "onnxruntime", "onnxruntime-gpu", "tokenizers", "av", "opencv-python-headless"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_runtime_install_pulls_only_edge_dependencies():
    project = _project()
    runtime = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["runtime"]}
    assert runtime <= RUNTIME_ALLOWED, runtime - RUNTIME_ALLOWED
    assert not runtime & HEAVY


def test_installed_metadata_agrees():
    """What pip resolves for `exo2ego-edge[runtime]` (from the installed dist's metadata)."""
    reqs = requires("exo2ego-edge") or []
    for_runtime = [r for r in reqs if "extra ==" not in r or re.search(r"extra == ['\"]runtime['\"]", r)]
    names = {_name(r) for r in for_runtime}
    assert names and not names & HEAVY, names


@pytest.mark.parametrize("extra", ["train", "export"])
def test_torch_is_pinned_to_the_cpu_wheel_version(extra):
    pins = [r for r in _project()["optional-dependencies"][extra] if _name(r) == "torch"]
    assert pins == ["torch==2.13.0"]


def test_transformers_capped_for_optimum_onnx():
    for extra in ("train", "export"):
        (spec,) = [r for r in _project()["optional-dependencies"][extra] if _name(r) == "transformers"]
        assert "<4.58" in spec
