"""What this machine can run: the facts behind `exo2ego-edge doctor`, as one dict.

Every probe degrades to a reason string, never an exception: doctor is what a user runs when
something is broken. Machine facts (GPUs, Jetson board, memory) come from
:mod:`exo2ego_edge.runtime.sysinfo`, shared with the benchmarks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from exo2ego_edge.runtime import sysinfo

log = logging.getLogger(__name__)


def _import_status(module: str) -> dict[str, Any]:
    """Import ``module`` and report its version, or why it failed (first line only)."""
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - pycuda raises RuntimeError without a driver, etc.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return {"ok": False, "error": f"{type(e).__name__}: {first}"}
    return {"ok": True, "version": str(getattr(mod, "__version__", getattr(mod, "VERSION_TEXT", "?")))}


def _torch_status() -> dict[str, Any]:
    """torch belongs to training and export: probed in a child process, so the runtime's own
    process never imports it."""
    try:
        importlib.metadata.version("torch")  # a lookup in the installed metadata: no import
    except importlib.metadata.PackageNotFoundError:
        return {"ok": False, "error": "not installed; training and export need it (pip install 'exo2ego-edge[train,export]')"}
    code = "import torch; print(torch.__version__, torch.cuda.is_available())"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    except subprocess.CalledProcessError as e:
        return {"ok": False, "error": (e.stderr.strip().splitlines() or ["import failed"])[-1]}
    except (subprocess.SubprocessError, OSError) as e:
        return {"ok": False, "error": type(e).__name__}
    words = proc.stdout.split()
    if len(words) < 2:
        return {"ok": False, "error": f"unexpected probe output {proc.stdout.strip()!r}"}
    return {"ok": True, "version": words[-2], "cuda": words[-1] == "True"}


def free_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def diagnose() -> dict[str, Any]:
    ort = _import_status("onnxruntime")
    providers = sysinfo.ort_providers() if ort["ok"] else []
    trt = _import_status("tensorrt")
    pycuda = _import_status("pycuda.driver")
    av = _import_status("av")
    tokenizers = _import_status("tokenizers")
    gpus = sysinfo.gpu_info()
    backends = {
        "ort-cpu": ort["ok"] and "CPUExecutionProvider" in providers,
        "ort-cuda": "CUDAExecutionProvider" in providers,
        "ort-tensorrt": "TensorrtExecutionProvider" in providers,
        "tensorrt": trt["ok"] and pycuda["ok"],
    }
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "onnxruntime": ort,
        "ort_providers": providers,
        "tensorrt": trt,
        "pycuda": pycuda,
        "av": av,
        "tokenizers": tokenizers,
        "torch": _torch_status(),
        "gpus": gpus,
        "jetson": sysinfo.jetson_info(),
        "memory_total_bytes": sysinfo.total_memory_bytes(),
        "memory_free_bytes": free_memory_bytes(),
        "backends": backends,
        "can_run_video": av["ok"] and tokenizers["ok"],
    }


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.1f} GiB"


def _status(s: dict[str, Any]) -> str:
    return s["version"] if s["ok"] else f"not available ({s['error']})"


def report_lines(d: dict[str, Any]) -> list[str]:
    lines = [
        f"python        {d['python']} ({d['machine']})",
        f"onnxruntime   {_status(d['onnxruntime'])}",
        f"  providers   {', '.join(d['ort_providers']) or 'none'}",
        f"tensorrt      {_status(d['tensorrt'])}",
        f"pycuda        {_status(d['pycuda'])}",
        f"PyAV          {_status(d['av'])}",
        f"tokenizers    {_status(d['tokenizers'])}",
        f"torch         {_status(d['torch'])}"
        + (f" (training / export; CUDA {'visible' if d['torch']['cuda'] else 'not visible'})" if d["torch"]["ok"] else ""),
    ]
    if d["gpus"]:
        for g in d["gpus"]:
            lines.append(f"gpu {g['index']}         {g['name']}, {_gib(g['memory_total_bytes'])}, driver {g['driver']}")
    else:
        lines.append("gpu           none found (no NVML, no nvidia-smi)")
    if d["jetson"]:
        j = d["jetson"]
        lines.append(f"jetson        {j.get('model') or '?'}; {j.get('l4t') or 'L4T ?'}; JetPack {j.get('jetpack', '?')}")
    lines.append(f"memory        {_gib(d['memory_free_bytes'])} free of {_gib(d['memory_total_bytes'])}")
    usable = [name for name, ok in d["backends"].items() if ok]
    lines.append(f"backends      {', '.join(usable) if usable else 'none: install onnxruntime'}")
    if not d["can_run_video"]:
        lines.append("warning       video files need PyAV and tokenizers: pip install 'exo2ego-edge[runtime]'")
    return lines
