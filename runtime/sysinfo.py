"""What machine a benchmark ran on, and the probes that watch its memory while it runs.

Torch-free and import-light: this ships with the runtime to a Jetson, where the only packages are
numpy, onnxruntime, tokenizers and PyAV. Every optional probe (pynvml, nvidia-smi, tegrastats,
TensorRT) degrades to ``None`` with the reason logged, never to an exception: a benchmark on a
machine without a GPU is still a benchmark.

Library versions are read from package metadata, never by importing the package: importing torch
to learn its version would defeat the torch-free runtime and cost seconds.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import platform
import re
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


def usable_cores() -> int:
    """Logical CPUs this process may run on: its affinity mask (a container's cpuset, ``taskset``),
    where the OS has one, else every CPU."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)  # ValueError on an empty or odd value: the caller skips that cache


def meminfo_bytes(field: str) -> int | None:
    """A ``/proc/meminfo`` field ("MemTotal", "MemAvailable") in bytes; None where it is missing."""
    for line in _read(Path("/proc/meminfo")).splitlines():
        key, _, rest = line.partition(":")
        if key == field:
            kib = _int(rest.replace("kB", ""))
            return None if kib is None else kib * 1024
    return None


def total_memory_bytes() -> int | None:
    return meminfo_bytes("MemTotal")


def available_memory_bytes() -> int | None:
    """What can be allocated without swapping (page cache included), as doctor reports it."""
    return meminfo_bytes("MemAvailable")


def ort_providers() -> list[str]:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except ImportError:
        return []


# --- reading external tools ----------------------------------------------------------------------
# Each probe below is "run the tool (or read the file), then parse the text": the parsers take the
# text, so tests feed them outputs recorded on real boards (a Jetson prints `[N/A]`, `Not
# Supported` and `N/A` where a desktop GPU prints numbers). A parser returns None for what it
# cannot find and never raises.


def _run_tool(*args: str, timeout: float = 10) -> str | None:
    """Standard output of a command-line tool; None when it is missing, fails or hangs."""
    if shutil.which(args[0]) is None:
        return None
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.debug("%s failed: %s", args[0], e)
        return None
    if proc.returncode != 0:
        log.debug("%s exited %d: %s", args[0], proc.returncode, proc.stderr.strip()[:200])
        return None
    return proc.stdout


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _known(value: str | None) -> str | None:
    """``value`` stripped, or None for a placeholder: nvidia-smi writes unknowns as `N/A`,
    `Not Supported` or in brackets (`[N/A]`, `[Not Supported]`, `[Unknown Error]`)."""
    value = (value or "").strip()
    if not value or value.startswith("[") or value.lower() in ("n/a", "not supported"):
        return None
    return value


def _int(value: str | None) -> int | None:
    """An integer (nvidia-smi may print `7620.0`), or None for a placeholder or anything odd."""
    known = _known(value)
    try:
        return None if known is None else int(float(known))
    except ValueError:
        return None


# --- Jetson --------------------------------------------------------------------------------------
_L4T_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_DEB_VERSION = re.compile(r"^Version:\s*(\S+)", re.MULTILINE)
_POWER_MODE = re.compile(r"NV Power Mode(?:\[\d+\])?:\s*(\S+)")
_JETSON_MODEL_WORDS = ("jetson", "orin", "xavier")  # a JetPack 5 Orin says "NVIDIA Orin NX Developer Kit"


def parse_nv_tegra_release(text: str) -> str | None:
    """The L4T version ("36.4.3") from ``/etc/nv_tegra_release``'s `# R36 (release), REVISION: 4.3`
    line, wherever it is in ``text`` (R36 files add comment lines; vendor images add more)."""
    m = _L4T_RELEASE.search(text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def parse_device_tree_model(text: str) -> str | None:
    """The board name from ``/proc/device-tree/model`` (NUL-terminated there)."""
    return text.strip("\x00 \t\r\n") or None


def parse_jetpack_version(text: str) -> str | None:
    """JetPack version ("6.2.1") from the nvidia-jetpack package version: a bare `6.2.1+b38` /
    `5.1.2-b104` (dpkg-query -W) or a control stanza's `Version:` line (dpkg -s, apt-cache show;
    apt-cache lists the newest first, which need not be the installed one)."""
    m = _DEB_VERSION.search(text)
    version = m.group(1) if m else text.strip()
    m = re.match(r"\d+(?:\.\d+)+", version)
    return m.group(0) if m else None


def parse_nvpmodel(text: str) -> str | None:
    """The power mode name ("MAXN_SUPER", "MODE_30W") from `nvpmodel -q`, `jetson_clocks --show`
    or jetson_release (`NV Power Mode[3]: MODE_40W`)."""
    m = _POWER_MODE.search(text)
    return m.group(1) if m else None


def jetson_info() -> dict[str, str | None] | None:
    """Board model, L4T release, JetPack version and power mode on a Jetson; None elsewhere.

    Each value is None where it cannot be read (no nvidia-jetpack package, nvpmodel refused)."""
    release = _read(Path("/etc/nv_tegra_release"))
    model = parse_device_tree_model(_read(Path("/proc/device-tree/model")))
    if not release and not any(word in (model or "").lower() for word in _JETSON_MODEL_WORDS):
        return None
    jetpack = _run_tool("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack", timeout=5)
    power_mode = _run_tool("nvpmodel", "-q", timeout=5)
    return {
        "model": model,
        "l4t": parse_nv_tegra_release(release),
        "jetpack": parse_jetpack_version(jetpack) if jetpack else None,
        "power_mode": parse_nvpmodel(power_mode) if power_mode else None,
    }


# --- NVIDIA GPUs ---------------------------------------------------------------------------------
GPU_QUERY = ("index", "name", "memory.total", "driver_version")
_SMI_DRIVER = re.compile(r"Driver Version:\s*(\S+)")
_SMI_GPU_ROW = re.compile(r"^\|\s+(\d+)\s+(.+?)\s+(?:On|Off|N/A)\s+\|")  # "|   0  Orin (nvgpu)   N/A  |"
_SMI_MEMORY = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")


def _gpu(index: int | None, name: str | None, memory_bytes: int | None, driver: str | None) -> dict[str, Any]:
    """One GPU as the benchmarks record it; memory is None on a Jetson (unified with the CPU)."""
    return {"index": index, "name": name, "memory_total_bytes": memory_bytes, "driver": driver}


def _mib(value: str | None) -> int | None:
    """Bytes from nvidia-smi's MiB figure; None for `[N/A]` / `Not Supported`."""
    mib = _int(value)
    return None if mib is None else mib << 20


def nvidia_smi_query(fields: tuple[str, ...]) -> list[dict[str, str | None]]:
    """``nvidia-smi --query-gpu=<fields>`` as rows (see :func:`parse_nvidia_smi_csv`); empty
    without nvidia-smi or when it fails."""
    out = _run_tool("nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits")
    return parse_nvidia_smi_csv(out or "", fields)


def parse_nvidia_smi_csv(text: str, fields: tuple[str, ...] = GPU_QUERY) -> list[dict[str, str | None]]:
    """Rows of `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`, one dict per GPU
    keyed by field. Placeholders (`[N/A]`, `[Not Supported]`) become None; a row with another
    number of columns is dropped."""
    rows = []
    for parts in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(parts) == len(fields):
            rows.append({f: _known(p) for f, p in zip(fields, parts)})
        elif parts:
            log.debug("nvidia-smi row with %d columns, expected %d: %r", len(parts), len(fields), parts)
    return rows


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """GPUs from plain `nvidia-smi`'s table: index and name from each GPU's first row, total
    memory from the next row's `used / total MiB` (Jetson: `Not Supported`, so None)."""
    driver = _SMI_DRIVER.search(text)
    lines = text.split("Processes:")[0].splitlines()  # process rows look like GPU rows
    gpus = []
    for row, below in zip(lines, lines[1:] + [""]):
        m = _SMI_GPU_ROW.match(row)
        if m:
            memory = _SMI_MEMORY.search(below)
            gpus.append(_gpu(int(m.group(1)), m.group(2), _mib(memory.group(2)) if memory else None,
                             _known(driver.group(1)) if driver else None))
    return gpus


def _nvml_gpus(nvml: Any) -> list[dict[str, Any]]:
    """GPUs from NVML. A Jetson's NVML answers NotSupported for memory: that value becomes None."""
    def value(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as e:  # noqa: BLE001 - NVMLError subclasses (NotSupported, Unknown...)
            log.debug("NVML %s: %s", getattr(call, "__name__", call), e)
            return None

    driver = value(nvml.nvmlSystemGetDriverVersion)
    gpus = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        name, memory = value(nvml.nvmlDeviceGetName, handle), value(nvml.nvmlDeviceGetMemoryInfo, handle)
        gpus.append(_gpu(i, None if name is None else _decode(name),
                         None if memory is None else int(memory.total),
                         None if driver is None else _decode(driver)))
    return gpus


def gpu_info() -> list[dict[str, Any]]:
    """Every NVIDIA GPU by name, total memory and driver (NVML, else nvidia-smi's CSV query, else
    its table); empty if none. Unknown values are None."""
    nvml = _nvml()
    if nvml is not None:
        try:
            return _nvml_gpus(nvml)
        except Exception as e:  # noqa: BLE001 - NVML failing to count devices: ask nvidia-smi
            log.debug("NVML could not list GPUs: %s", e)
    rows = nvidia_smi_query(GPU_QUERY)
    if rows:
        return [_gpu(_int(r["index"]), r["name"], _mib(r["memory.total"]), r["driver_version"]) for r in rows]
    table = _run_tool("nvidia-smi")
    return parse_nvidia_smi(table) if table else []


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


# --- TensorRT ------------------------------------------------------------------------------------
TENSORRT_MIN_MAJOR = 10


def tensorrt_supported(version: str | None) -> str | None:
    """Why exo2ego-edge's engine builder cannot use TensorRT ``version`` (one line), or None.

    The builder uses the TensorRT 10 API (explicit batch only, ``create_network(0)``); JetPack 6.0
    and older ship TensorRT 8. A version that cannot be read gives None: the import will say more.
    """
    version = (version or "").strip()
    m = re.match(r"(\d+)(?:\.|$)", version)
    if m and int(m.group(1)) < TENSORRT_MIN_MAJOR:
        return (f"TensorRT {version} found; exo2ego-edge's engine builder needs TensorRT "
                f"{TENSORRT_MIN_MAJOR} (JetPack 6.1 or newer)")
    return None


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
            try:
                self.baseline_bytes = self.peak_bytes = self._used()
            except Exception as e:  # noqa: BLE001 - a Jetson's NVML has no memory figures (NotSupported)
                log.debug("NVML cannot read GPU memory: %s", e)
                self.available = False
                return self
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
