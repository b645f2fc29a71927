"""The determinism and learning tests (marked ``isa``) again, on kernel paths this CPU would not pick.

A test that passes only with one CPU's rounding fails for the next user. PyTorch
(``ATEN_CPU_CAPABILITY``), numpy (``NPY_DISABLE_CPU_FEATURES``) and OpenBLAS
(``OPENBLAS_CORETYPE``) choose their kernels at run time, so one machine can run the ``isa`` tests
as an AVX2-only CPU and as a CPU with no vector extensions beyond the x86-64 baseline, at one
and two threads. ``test_the_requested_kernels_are_in_effect`` proves, inside each run, that the
variables took hold. By hand: ``python -m pytest -m isa`` with the variables of a variant below.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _numpy_dispatch() -> tuple[list[str], dict[str, bool]]:
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return list(__cpu_dispatch__), dict(__cpu_features__)


def _numpy_targets(above_avx2: bool) -> str:
    """numpy's dispatch targets this CPU has (only those above AVX2 when ``above_avx2``): what
    ``NPY_DISABLE_CPU_FEATURES`` turns off."""
    dispatch, features = _numpy_dispatch()
    targets = [t for t in dispatch if features.get(t)]
    return " ".join(t for t in targets if not above_avx2 or t.startswith(("AVX512", "X86_V4")))


VARIANTS = {
    # An x86-64 CPU with nothing past SSE4.2: PyTorch's and numpy's portable kernels, one thread.
    "baseline-1thread": lambda: {
        "ATEN_CPU_CAPABILITY": "default", "NPY_DISABLE_CPU_FEATURES": _numpy_targets(above_avx2=False),
        "OPENBLAS_CORETYPE": "Prescott", "OMP_NUM_THREADS": "1",
    },
    # An AVX2-only CPU (the AMD EPYCs this project was first built on), two threads.
    "avx2-2threads": lambda: {
        "ATEN_CPU_CAPABILITY": "avx2", "NPY_DISABLE_CPU_FEATURES": _numpy_targets(above_avx2=True),
        "OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "2",
    },
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="the variants name x86 kernel sets")
@pytest.mark.parametrize("variant", VARIANTS)
def test_isa_tests_pass_on_other_kernels(variant):
    env = {**os.environ, **VARIANTS[variant](), "EXO2EGO_ISA_VARIANT": variant}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "isa", "-p", "no:cacheprovider", "tests"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{variant}: {env['NPY_DISABLE_CPU_FEATURES']!r}\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
    assert " passed" in run.stdout.splitlines()[-1]


@pytest.mark.isa
def test_the_requested_kernels_are_in_effect():
    """Inside a variant's run: PyTorch, numpy and the thread count are what the variant asked for."""
    variant = os.environ.get("EXO2EGO_ISA_VARIANT")
    if variant is None:
        pytest.skip("runs inside test_isa_tests_pass_on_other_kernels")
    import torch
    from numpy.lib.introspect import opt_func_info

    requested = os.environ["ATEN_CPU_CAPABILITY"].upper()
    assert torch.backends.cpu.get_cpu_capability() == requested
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
    disabled = set(os.environ["NPY_DISABLE_CPU_FEATURES"].split())
    in_use = {sig["current"] for f in opt_func_info(func_name="add|exp|sin").values() for sig in f.values()}
    assert disabled and not in_use & disabled, (in_use, disabled)
    assert np.exp(np.float64(1.0)) > 2.7  # numpy still computes
