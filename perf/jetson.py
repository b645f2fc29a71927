"""Jetson: a projection of a bundle onto Orin boards, and tegrastats power/memory sampling.

The projection is arithmetic, not a measurement: the same bytes per decoded token and the same
weights + KV cache + activations the roofline derived from the ONNX graphs, divided by each
board's DRAM bandwidth and set against its unified memory. Decode on Orin is bandwidth-bound just
as on a CPU (an Orin Nano's GPU does ~20 TFLOPS of int8 against 68 GB/s, ~300 ops per byte), so
``bytes / bandwidth`` is a floor no kernel beats; real runs land above it.

On a Jetson itself, :class:`Tegrastats` samples ``tegrastats`` while the benchmark runs: board
input power (the VDD_IN / POM_5V_IN rail; on AGX boards, which have none, the sum of the rails)
gives joules per decoded token, RAM gives the unified memory high-water mark (CPU and GPU share
it, so NVML has nothing to report there).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

GB = 1e9
GIB = 1 << 30

# What the OS and the inference stack take before the model loads, on unified memory shared by
# CPU and GPU. Assumption, stated in every projection: a headless L4T (~0.8 GiB) plus the CUDA
# context, cuDNN/cuBLAS/TensorRT libraries and ORT's arenas (~1.2 GiB) = 2 GiB. A desktop
# session adds ~1 GiB more; pass a larger reserve for that.
DEFAULT_OS_RESERVE_BYTES = 2 * GIB


@dataclass(frozen=True)
class JetsonBoard:
    name: str
    bandwidth_gbps: float  # LPDDR5 peak, the datasheet figure (decimal GB/s)
    memory_bytes: int  # unified CPU + GPU memory


BOARDS = (
    JetsonBoard("Orin Nano 8GB", 68.0, 8 * GIB),
    JetsonBoard("Orin Nano 8GB Super", 102.0, 8 * GIB),  # JetPack 6.2 "Super" mode clocks
    JetsonBoard("Orin NX 16GB", 102.4, 16 * GIB),
    JetsonBoard("AGX Orin 64GB", 204.8, 64 * GIB),
)


@dataclass
class Footprint:
    """Memory a bundle needs, as functions of frame count and context length.

    Weights come from the ONNX initializers; activations are an estimate from the model's
    dimensions (the largest tensors alive at once: per-frame ViT activations with their attention
    scores, and prefill's per-token hidden states plus the full logits row the decoder returns
    for every prompt position). ORT arena slack is not modelled.
    """

    weight_bytes: int  # vision + decoder + embedding table
    kv_bytes_per_position: int
    vision_activation_bytes_per_frame: int
    prefill_activation_bytes_per_token: int
    attention_score_bytes_per_token_sq: int  # heads x 4 bytes: prefill's S x S scores, one layer
    tokens_per_frame: int
    text_tokens: int  # prompt text + new tokens around the visual tokens
    max_positions: int  # the LLM's position limit

    def context(self, frames: int) -> int:
        return frames * self.tokens_per_frame + self.text_tokens

    def total_bytes(self, frames: int, context: int | None = None) -> int:
        context = self.context(frames) if context is None else context
        prompt = max(context, 1)  # the whole context as prompt: an upper bound on prefill's tensors
        activations = max(
            frames * self.vision_activation_bytes_per_frame,
            prompt * self.prefill_activation_bytes_per_token + prompt * prompt * self.attention_score_bytes_per_token_sq,
        )
        return self.weight_bytes + context * self.kv_bytes_per_position + activations


def largest_frames(fp: Footprint, budget: int, limit: int = 4096) -> int:
    """Most frames whose weights + KV + activations fit ``budget`` (0 when not even one does)."""
    best = 0
    lo, hi = 1, limit
    while lo <= hi:  # total_bytes grows with frames: binary search
        mid = (lo + hi) // 2
        if fp.total_bytes(mid) <= budget and fp.context(mid) <= fp.max_positions:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def largest_context(fp: Footprint, frames: int, budget: int) -> int:
    """Longest context (positions) that fits with ``frames`` frames, capped at the position limit."""
    best = 0
    lo, hi = 1, fp.max_positions
    while lo <= hi:
        mid = (lo + hi) // 2
        if fp.total_bytes(frames, mid) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


@dataclass
class BoardProjection:
    board: str
    bandwidth_gbps: float
    memory_bytes: int
    available_bytes: int  # memory minus the OS reserve
    decode_ms_per_token_lower_bound: float  # at the benchmark's context
    decode_tokens_per_s_upper_bound: float
    needed_bytes: int  # at the benchmark's frames and context
    fits: bool
    largest_frames: int
    largest_context: int  # with the benchmark's frame count
    decode_ms_per_token_at_largest_context: float


def project(fp: Footprint, decode_bytes_per_token: int, frames: int, kv_bytes_per_position: int,
            os_reserve_bytes: int = DEFAULT_OS_RESERVE_BYTES,
            boards: tuple[JetsonBoard, ...] = BOARDS) -> dict[str, Any]:
    """The Jetson table: a projection from bytes and bandwidth, labelled as such."""
    rows = []
    context = fp.context(frames)
    for b in boards:
        available = b.memory_bytes - os_reserve_bytes
        needed = fp.total_bytes(frames)
        ctx_max = largest_context(fp, frames, available)
        at_max = decode_bytes_per_token + max(ctx_max - context, 0) * kv_bytes_per_position
        ms = decode_bytes_per_token / (b.bandwidth_gbps * GB) * 1e3
        rows.append(BoardProjection(
            board=b.name, bandwidth_gbps=b.bandwidth_gbps, memory_bytes=b.memory_bytes,
            available_bytes=available, decode_ms_per_token_lower_bound=ms,
            decode_tokens_per_s_upper_bound=1e3 / ms, needed_bytes=needed, fits=needed <= available,
            largest_frames=largest_frames(fp, available), largest_context=ctx_max,
            decode_ms_per_token_at_largest_context=at_max / (b.bandwidth_gbps * GB) * 1e3,
        ))
    return {
        "kind": "projection",  # never a measurement: see the module docstring
        "note": ("Projection from bytes per token / DRAM bandwidth and a memory model; not measured "
                 "on a Jetson. Decode latency is a lower bound."),
        "os_reserve_bytes": os_reserve_bytes,
        "os_reserve_assumption": "headless L4T (~0.8 GiB) + CUDA/cuDNN/TensorRT/ORT context (~1.2 GiB)",
        "frames": frames,
        "context": context,
        "footprint": asdict(fp),
        "boards": [asdict(r) for r in rows],
    }


# --- tegrastats ---------------------------------------------------------------------------------
# One line per interval. The field set differs by module, JetPack and whether root runs it, so
# every field is looked up on its own and is None (or empty) where the line does not have it.
_MEMORY = re.compile(r"\b(RAM|SWAP)\s+(\d+)/(\d+)([kMG])B")
_CPUS = re.compile(r"\bCPU\s+\[([^\]]*)\]", re.IGNORECASE)
_LOAD = re.compile(r"(\d+)%(?:@\[?(\d+))?")  # "37%", "0%@611", "63%@[621]", "0%@[0,0]"
# Rails: "VDD_IN 4761mW/4778mW" (Orin), "POM_5V_IN 3103/3103" and "GPU 463/463" (JetPack 4).
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_TEMPERATURE = re.compile(r"\b([A-Za-z]\w*)@(-?\d+(?:\.\d+)?)C\b")
_UNITS = {"k": 1 << 10, "M": 1 << 20, "G": 1 << 30}
# Rails that measure the whole board's input. AGX Orin and Xavier have none: their power is the
# sum of the module rails, as jetson-stats (jtop) computes it.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
ABSENT_SENSOR_C = -256.0  # what JetPack 5 prints for a sensor the module does not have


@dataclass
class TegrastatsSample:
    t: float  # perf_counter seconds, comparable with the benchmark's stage timers
    power_mw: float | None  # board input now: an INPUT_RAILS rail, else the sum of all rails
    ram_used_bytes: int | None
    gpu_util_pct: float | None
    power_avg_mw: float | None = None  # the same, averaged by tegrastats since it started
    power_rail: str | None = None  # which rail power_mw is ("VDD_IN"), or "sum" of all rails
    ram_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    swap_total_bytes: int | None = None
    cpu_util_pct: list[float | None] = field(default_factory=list)  # per core; None when off
    cpu_freq_mhz: list[int | None] = field(default_factory=list)
    emc_util_pct: float | None = None
    emc_freq_mhz: int | None = None
    gpu_freq_mhz: int | None = None  # GR3D's first (or only) GPC
    rails_mw: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (now, average)
    temperatures_c: dict[str, float] = field(default_factory=dict)  # lower-case names (JP5 "CPU", JP6 "cpu")


def _load(line: str, name: str) -> tuple[float | None, int | None]:
    """``name``'s utilisation and frequency ("GR3D_FREQ 63%@[621]" gives (63.0, 621))."""
    m = re.search(rf"\b{name}\s+" + _LOAD.pattern, line)
    if not m:
        return None, None
    return float(m.group(1)), int(m.group(2)) if m.group(2) else None


def _board_power(rails: dict[str, tuple[float, float]]) -> tuple[str | None, float | None, float | None]:
    """(rail, now, average): the input rail where the board has one, else the sum of all rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return name, *rails[name]
    if not rails:
        return None, None, None
    return "sum", sum(now for now, _ in rails.values()), sum(avg for _, avg in rails.values())


def parse_tegrastats_line(line: str, t: float) -> TegrastatsSample:
    """One tegrastats line (JetPack 4, 5 and 6 formats); missing fields are None, never an error."""
    memory = {m.group(1): (int(m.group(2)) * _UNITS[m.group(4)], int(m.group(3)) * _UNITS[m.group(4)])
              for m in _MEMORY.finditer(line)}
    cpus = _CPUS.search(line)
    cores = [_LOAD.match(core.strip()) for core in cpus.group(1).split(",")] if cpus else []
    rails = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in _RAIL.finditer(line)}
    board, now, average = _board_power(rails)
    gpu_util, gpu_freq = _load(line, "GR3D_FREQ")
    emc_util, emc_freq = _load(line, "EMC_FREQ")
    ram_used, ram_total = memory.get("RAM", (None, None))
    swap_used, swap_total = memory.get("SWAP", (None, None))
    return TegrastatsSample(
        t=t, power_mw=now, ram_used_bytes=ram_used, gpu_util_pct=gpu_util, power_avg_mw=average,
        power_rail=board, ram_total_bytes=ram_total, swap_used_bytes=swap_used, swap_total_bytes=swap_total,
        cpu_util_pct=[float(c.group(1)) if c else None for c in cores],
        cpu_freq_mhz=[int(c.group(2)) if c and c.group(2) else None for c in cores],
        emc_util_pct=emc_util, emc_freq_mhz=emc_freq, gpu_freq_mhz=gpu_freq, rails_mw=rails,
        temperatures_c={m.group(1).lower(): float(m.group(2)) for m in _TEMPERATURE.finditer(line)
                        if float(m.group(2)) != ABSENT_SENSOR_C},
    )


@dataclass
class Tegrastats:
    """Runs ``tegrastats`` in the background while a benchmark runs (no-op off a Jetson)."""

    interval_ms: int = 50
    samples: list[TegrastatsSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.available = shutil.which("tegrastats") is not None
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Tegrastats:
        if self.available:
            self._proc = subprocess.Popen(
                ["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True,
            )
            self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.samples.append(parse_tegrastats_line(line, time.perf_counter()))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def mean_power_w(self, windows: list[tuple[float, float]] | None = None) -> float | None:
        """Mean board input power over the samples inside ``windows`` (all samples if None)."""
        inside = [s.power_mw for s in self.samples if s.power_mw is not None
                  and (windows is None or any(a <= s.t <= b for a, b in windows))]
        return sum(inside) / len(inside) / 1e3 if inside else None

    def report(self, decode_windows: list[tuple[float, float]], decoded_tokens: int) -> dict[str, Any] | None:
        if not self.available:
            return None
        power = self.mean_power_w(decode_windows)
        decode_s = sum(b - a for a, b in decode_windows)
        ram = [s.ram_used_bytes for s in self.samples if s.ram_used_bytes is not None]
        return {
            "samples": len(self.samples),
            "mean_power_w": self.mean_power_w(),
            "decode_mean_power_w": power,
            "energy_per_token_j": power * decode_s / decoded_tokens if power and decoded_tokens else None,
            "ram_peak_bytes": max(ram) if ram else None,
        }
