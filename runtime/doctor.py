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
from collections.abc import Callable
from typing import Any, TypeVar

from exo2ego_edge.runtime import sysinfo

log = logging.getLogger(__name__)
T = TypeVar("T")


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


def _probe(probe: Callable[[], T], default: T) -> T:
    """``probe()``, or ``default`` if it raises: the parsers are tolerant, and this keeps doctor
    running when a tool prints something nobody has seen yet."""
    try:
        return probe()
    except Exception as e:  # noqa: BLE001 - doctor reports, it never fails
        log.warning("%s failed: %s: %s", getattr(probe, "__name__", probe), type(e).__name__, e)
        return default


def diagnose() -> dict[str, Any]:
    ort = _import_status("onnxruntime")
    providers = sysinfo.ort_providers() if ort["ok"] else []
    trt = _import_status("tensorrt")
    trt_problem = sysinfo.tensorrt_supported(trt["version"]) if trt["ok"] else None
    pycuda = _import_status("pycuda.driver")
    av = _import_status("av")
    tokenizers = _import_status("tokenizers")
    backends = {
        "ort-cpu": ort["ok"] and "CPUExecutionProvider" in providers,
        "ort-cuda": "CUDAExecutionProvider" in providers,
        "ort-tensorrt": "TensorrtExecutionProvider" in providers,
        # Engines come from exo2ego-edge's builder, which needs TensorRT 10 (and run only there).
        "tensorrt": trt["ok"] and pycuda["ok"] and trt_problem is None,
    }
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "onnxruntime": ort,
        "ort_providers": providers,
        "tensorrt": trt,
        "tensorrt_problem": trt_problem,
        "pycuda": pycuda,
        "av": av,
        "tokenizers": tokenizers,
        "torch": _torch_status(),
        "gpus": _probe(sysinfo.gpu_info, []),
        "jetson": _probe(sysinfo.jetson_info, None),
        "memory_total_bytes": _probe(sysinfo.total_memory_bytes, None),
        "memory_free_bytes": _probe(sysinfo.available_memory_bytes, None),
        "backends": backends,
        "can_run_video": av["ok"] and tokenizers["ok"],
        "nvdec_problem": _probe(_nvdec_problem, "the check failed"),
    }


def _nvdec_problem() -> str | None:
    from exo2ego_edge.runtime.video_nvdec import unavailable

    return unavailable()


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
    if d["tensorrt_problem"]:
        lines.append(f"warning       {d['tensorrt_problem']}")
    for g in d["gpus"]:
        lines.append(f"gpu {g['index']}         {g['name'] or 'unknown'}, memory {_gib(g['memory_total_bytes'])}, "
                     f"driver {g['driver'] or 'unknown'}")
    if not d["gpus"]:
        lines.append("gpu           none found (no NVML, no nvidia-smi)")
    if d["jetson"]:
        j = {key: d["jetson"].get(key) or "unknown" for key in ("model", "l4t", "jetpack", "power_mode")}
        lines.append(f"jetson        {j['model']}; L4T {j['l4t']}; JetPack {j['jetpack']}; "
                     f"power mode {j['power_mode']}")
    lines.append(f"memory        {_gib(d['memory_free_bytes'])} free of {_gib(d['memory_total_bytes'])}")
    usable = [name for name, ok in d["backends"].items() if ok]
    lines.append(f"backends      {', '.join(usable) if usable else 'none: install onnxruntime'}")
    if not d["can_run_video"]:
        lines.append("warning       video files need PyAV and tokenizers: pip install 'exo2ego-edge[runtime]'")
    nvdec = d.get("nvdec_problem")
    lines.append("video decode  " + ("NVDEC through GStreamer (nvv4l2decoder)" if nvdec is None
                                     else f"software (FFmpeg on the CPU); NVDEC: {nvdec}"))
    return lines
