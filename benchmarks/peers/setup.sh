#!/usr/bin/env bash
# Build the peer venvs the comparison needs where their dependencies clash with ours.
#
#   benchmarks/.venv-genai   onnxruntime-genai + its model builder, which wants transformers 5
#                            (our package pins transformers < 4.58 for optimum-onnx).
#
# HF transformers eager and Optimum's ORTModelForCausalLM run in the project venv (.venv): the
# versions there are the ones we pin, so nothing clashes. torch is pinned to the CPU wheel: a bare
# `torch` requirement pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x benchmarks/.venv-genai/bin/python ]; then
  "$PYTHON" -m venv benchmarks/.venv-genai
fi
benchmarks/.venv-genai/bin/python -m pip install -q --upgrade pip
benchmarks/.venv-genai/bin/python -m pip install -q "torch==${TORCH_VERSION}" \
  "onnxruntime-genai" "transformers>=5" "onnx" "onnx-ir" "numpy" "sympy" "safetensors"
benchmarks/.venv-genai/bin/python - <<'PY'
import importlib.metadata as m
for p in ("onnxruntime-genai", "onnxruntime", "transformers", "torch", "onnx"):
    try:
        print(f"{p} {m.version(p)}")
    except m.PackageNotFoundError:
        print(f"{p} MISSING")
PY
