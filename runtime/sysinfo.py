"""What machine a benchmark ran on, and the probes that watch its memory while it runs.

Torch-free and import-light: this ships with the runtime to a Jetson, where the only packages are
numpy, onnxruntime, tokenizers and PyAV. Every optional probe (pynvml, nvidia-smi, tegrastats,
TensorRT) degrades to ``None`` with the reason logged, never to an exception: a benchmark on a
machine without a GPU is still a benchmark.

Library versions are read from package metadata, never by importing the package: importing torch
to learn its version would defeat the torch-free runtime and cost seconds.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import shutil
import subprocess
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Packages whose versions explain a timing: the runtime's own, plus the peers' when installed.
VERSIONED_PACKAGES = (
    "exo2ego-edge", "numpy", "onnxruntime", "onnxruntime-gpu", "onnxruntime-genai", "onnx",
    "tokenizers", "av", "click", "tensorrt", "pycuda", "torch", "transformers", "optimum",
    "optimum-onnx", "nvidia-ml-py",
)


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _cpuinfo_field(*names: str) -> str | None:
    """The first ``/proc/cpuinfo`` line starting with one of ``names`` (any case), its value."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(names):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    # x86 says "model name"; ARM (Jetson) kernels often only give "Hardware"/"CPU part".
    return _cpuinfo_field("model name", "hardware") or platform.processor() or platform.machine()


# The instructions ONNX Runtime's int8 GEMMs (MLAS) gain from: without a dot-product instruction
# (AVX2 only) an int8 multiply-add is not much cheaper than a float one, which caps INT8 speed-up.
# x86 lists them under "flags", Arm (a Jetson's Cortex-A78AE: asimddp, i8mm) under "Features".
INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_isa() -> list[str] | None:
    """The INT8_ISA entries this CPU has; None where /proc/cpuinfo does not say."""
    flags = set((_cpuinfo_field("flags", "features") or "").split())
    return [f for f in INT8_ISA if f in flags] if flags else None


def physical_cores() -> int | None:
    """Physical cores (what BLAS and ONNX Runtime size their thread pools on), if known."""
    try:
        import psutil  # optional: a dev dependency, not a runtime one

        return psutil.cpu_count(logical=False)
    except Exception:  # noqa: BLE001 - psutil missing or unable to tell: fall back to sysfs
        pass
    try:
        ids = set()
        for topo in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
            ids.add(((topo / "physical_package_id").read_text(), (topo / "core_id").read_text()))
        return len(ids) or None
    except OSError:
        return None


def cache_sizes() -> dict[str, int]:
    """CPU cache sizes in bytes by level ("L1d", "L2", "L3"), from sysfs; empty if unknown."""
    sizes: dict[str, int] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = _parse_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        sizes[f"L{level}" + ("d" if kind == "Data" else "")] = size
    return sizes


def last_level_cache_bytes() -> int:
    """The largest cache; 32 MiB when unknown (a generous guess keeps STREAM arrays big enough)."""
    return max(cache_sizes().values(), default=32 << 20)


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def total_memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def ort_providers() -> list[str]:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except ImportError:
        return []


def jetson_info() -> dict[str, str] | None:
    """Board model, L4T release and JetPack version on a Jetson; ``None`` elsewhere."""
    model_file = Path("/proc/device-tree/model")
    release_file = Path("/etc/nv_tegra_release")
    if not release_file.is_file() and not (model_file.is_file() and "jetson" in _read(model_file).lower()):
        return None
    info = {"model": _read(model_file).strip("\x00 \n"), "l4t": _read(release_file).splitlines()[0:1]}
    info["l4t"] = info["l4t"][0].strip("# ") if info["l4t"] else ""
    jetpack = _dpkg_version("nvidia-jetpack")
    if jetpack:
        info["jetpack"] = jetpack
    return info


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _dpkg_version(package: str) -> str | None:
    if not shutil.which("dpkg-query"):
        return None
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def gpu_info() -> list[dict[str, Any]]:
    """Every NVIDIA GPU by name, total memory and driver (pynvml, else nvidia-smi); empty if none."""
    nvml = _nvml()
    if nvml is not None:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            gpus.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                "driver": _decode(nvml.nvmlSystemGetDriverVersion()),
            })
        return gpus
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append({"index": int(parts[0]), "name": parts[1],
                         "memory_total_bytes": int(float(parts[2])) << 20, "driver": parts[3]})
    return gpus


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_NVML_STATE: dict[str, Any] = {}


def _nvml():
    """The initialised pynvml module, or ``None`` (not installed, or no NVIDIA driver)."""
    if "module" not in _NVML_STATE:
        try:
            import pynvml

            pynvml.nvmlInit()
            _NVML_STATE["module"] = pynvml
        except Exception as e:  # noqa: BLE001 - ImportError or NVMLError: both mean "no NVML"
            log.debug("NVML unavailable: %s", e)
            _NVML_STATE["module"] = None
    return _NVML_STATE["module"]


def describe_system() -> dict[str, Any]:
    """The machine a result belongs to: CPU, memory, GPUs, Jetson, library versions, providers."""
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": physical_cores(),
        "cpu_caches_bytes": cache_sizes(),
        "memory_total_bytes": total_memory_bytes(),
        "gpus": gpu_info(),
        "jetson": jetson_info(),
        "ort_providers": ort_providers(),
        "versions": package_versions(),
        # A shared machine's load explains outliers: 1/5/15-minute averages when the report was made.
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --- memory probes -------------------------------------------------------------------------------
def current_rss_bytes() -> int:
    status = _proc_status()
    return status.get("VmRSS", 0)


def _proc_status() -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return fields


class PeakRss:
    """Peak resident memory of this process over a window.

    Linux keeps a high-water mark (VmHWM) that writing "5" to /proc/self/clear_refs resets, so a
    benchmark that first built its bundle with torch in the same process still reports only what
    running the bundle took. Where the reset is refused, the lifetime peak is reported and
    ``reset`` says so.
    """

    def __init__(self) -> None:
        self.reset_ok = False
        self.baseline_bytes = 0

    def start(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset_ok = True
        except OSError as e:
            log.debug("cannot reset the RSS high-water mark (%s); reporting the lifetime peak", e)
        self.baseline_bytes = current_rss_bytes()

    def peak_bytes(self) -> int:
        hwm = _proc_status().get("VmHWM")
        if hwm:
            return hwm
        # ru_maxrss is KiB on Linux and bytes on macOS.
        scale = 1 if platform.system() == "Darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class GpuMemorySampler:
    """Samples used GPU memory with NVML in a background thread; reports the peak and baseline.

    Polling rather than one reading at the end: the peak is inside prefill, not after it.
    """

    def __init__(self, interval_s: float = 0.02, device: int = 0):
        self.interval_s = interval_s
        self.device = device
        self.available = _nvml() is not None
        self.baseline_bytes: int | None = None
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _used(self) -> int:
        nvml = _nvml()
        return int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(self.device)).used)

    def __enter__(self) -> GpuMemorySampler:
        if self.available:
            self.baseline_bytes = self.peak_bytes = self._used()
            self._thread = threading.Thread(target=self._run, name="gpu-memory-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes or 0, self._used())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self.peak_bytes = max(self.peak_bytes or 0, self._used())

    def report(self) -> dict[str, Any] | None:
        if not self.available:
            return None
        return {"device": self.device, "baseline_bytes": self.baseline_bytes, "peak_bytes": self.peak_bytes,
                "peak_above_baseline_bytes": (self.peak_bytes or 0) - (self.baseline_bytes or 0)}


def wall_clock() -> float:
    """Monotonic seconds with the best resolution available (what every stage timer uses)."""
    return time.perf_counter()
