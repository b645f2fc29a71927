"""Every layer imports with everything outside its extra blocked, and only the layers below it.

Each module of a layer is imported in a fresh interpreter whose import system refuses the
blocked packages, so the next stray top-level ``import tqdm`` in the runtime fails here, not on a
user's Jetson. The layers and what they may import are DESIGN.md's table (docs/architecture.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.imports import import_blocker

ROOT = Path(__file__).resolve().parents[1]
PKG = "exo2ego_edge"

HEAVY = ("torch", "transformers", "optimum", "peft", "onnx", "onnxscript", "onnxruntime", "tensorrt",
         "pycuda", "av", "tqdm", "matplotlib", "yaml", "safetensors", "tokenizers")  # fmt: skip
LAYERS = (f"{PKG}.data", f"{PKG}.train", f"{PKG}.eval", f"{PKG}.export", f"{PKG}.runtime", f"{PKG}.perf")

# layer -> (its folder, the third-party packages its extra brings, the layers below it)
RULES = {
    "core": (ROOT / PKG, ("numpy", "click"), ()),
    "data": (ROOT / "data", ("numpy", "av"), ()),
    "train": (ROOT / "train", ("torch", "transformers", "peft", "safetensors", "tokenizers", "av", "yaml", "tqdm"),
              (f"{PKG}.data",)),
    "eval": (ROOT / "eval", ("numpy", "av", "onnxruntime", "tokenizers"), (f"{PKG}.data", f"{PKG}.runtime")),
    "export": (ROOT / "export", ("torch", "transformers", "optimum", "onnx", "onnxscript", "onnxruntime", "tqdm",
                                 "tokenizers", "av", "safetensors"), (f"{PKG}.runtime", f"{PKG}.perf")),
    "runtime": (ROOT / "runtime", ("numpy", "onnxruntime", "tokenizers", "av"), ()),
    "perf": (ROOT / "perf", ("numpy", "onnxruntime", "tokenizers", "av"), (f"{PKG}.runtime",)),
}  # fmt: skip
TORCH_MODULES = {f"{PKG}.model"}  # core's one torch module (DESIGN.md: torch only in the model modules)



def _modules(layer: str) -> list[str]:
    folder = RULES[layer][0]
    package = PKG if layer == "core" else f"{PKG}.{layer}"
    names = [package] + [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]
    if layer == "core":
        names += [f"{PKG}.cli"]
    return [n for n in names if n not in TORCH_MODULES]


@pytest.mark.parametrize("layer", RULES)
def test_layer_imports_with_everything_else_blocked(layer):
    _, allowed, below = RULES[layer]
    blocked = [p for p in HEAVY if p not in allowed]
    blocked += [lay for lay in LAYERS if lay != f"{PKG}.{layer}" and lay not in below]
    blocked += sorted(TORCH_MODULES) if "torch" not in allowed else []
    code = import_blocker(blocked, "is outside this layer") + "\nimport importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in _modules(layer))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1]
