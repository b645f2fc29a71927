"""The Jetson probes and tegrastats parser on command outputs recorded on real Jetsons.

The recordings are third-party text (see SOURCES.md there) kept beside the repository in
shared/jetson-outputs; they are read in place, never copied here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exo2ego_edge.perf.jetson import parse_tegrastats_line
from exo2ego_edge.runtime import doctor, sysinfo

OUTPUTS = Path(__file__).resolve().parents[2] / "shared" / "jetson-outputs"
pytestmark = pytest.mark.skipif(not OUTPUTS.is_dir(), reason=f"recorded Jetson outputs not found at {OUTPUTS}")

# The query behind orin_jp6.2.1_nvidia-smi-query-gpu-csv.txt (SOURCES.md gives it).
RECORDED_QUERY = ("index", "name", "utilization.gpu", "memory.used", "memory.total", "temperature.gpu", "power.draw")


def recorded(pattern: str) -> list[Path]:
    return sorted(OUTPUTS.glob(pattern)) if OUTPUTS.is_dir() else []


def text(name: str) -> str:
    return (OUTPUTS / name).read_text()


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


TEGRASTATS = recorded("*tegrastats*.txt")
NVIDIA_SMI_TABLES = [p for p in recorded("*nvidia-smi*.txt") if "csv" not in p.name]
# Files holding an /etc/nv_tegra_release line: the file itself, its first line, jtop's error log.
TEGRA_RELEASES = recorded("*nv_tegra_release*.txt") + recorded("*jtop-error-log.txt")


@pytest.mark.parametrize("path", TEGRASTATS, ids=ids(TEGRASTATS))
def test_every_tegrastats_line_parses(path):
    for line in path.read_text().splitlines():
        s = parse_tegrastats_line(line, 0.0)
        assert 0 < s.ram_used_bytes < s.ram_total_bytes and s.swap_total_bytes > 0
        assert s.power_mw > 0 and s.power_avg_mw > 0 and s.power_rail in ("VDD_IN", "sum")
        assert s.gpu_util_pct is not None and s.cpu_util_pct and s.temperatures_c
        assert -256.0 not in s.temperatures_c.values()  # JetPack 5's "absent sensor" reading


def test_tegrastats_spot_values():
    nx = parse_tegrastats_line(text("orin-nx-8gb-inferred_jp6.2-inferred_tegrastats.txt"), 1.0)
    assert (nx.ram_used_bytes, nx.ram_total_bytes) == (6982 << 20, 7620 << 20)
    assert (nx.power_rail, nx.power_mw, nx.power_avg_mw) == ("VDD_IN", 17946, 15710)
    assert (nx.gpu_util_pct, nx.gpu_freq_mhz, nx.emc_util_pct, nx.emc_freq_mhz) == (84, 713, 18, 3199)
    assert nx.cpu_util_pct[-1] == 93 and nx.cpu_freq_mhz[-1] == 247 and nx.temperatures_c["cv2"] == 60.875

    # A non-root JetPack 6 line: no EMC field and a bare "GR3D_FREQ 0%".
    nano = parse_tegrastats_line(text("orin-nano-8gb-super_jp6.2-r36.4.3_tegrastats.txt"), 1.0)
    assert nano.ram_used_bytes == 2147 << 20 and nano.power_mw == 4556 and nano.rails_mw["VDD_SOC"] == (1451, 1451)
    assert nano.gpu_util_pct == 0 and nano.gpu_freq_mhz is None and nano.emc_util_pct is None

    # JetPack 5 NX: 4 cores off, a separate GR3D2_FREQ field, upper-case sensors read as lower case.
    jp5 = parse_tegrastats_line(text("orin-nx-16gb_jp5.1.1-r35.3.1_tegrastats.txt"), 1.0)
    assert jp5.cpu_util_pct == [6, 9, 5, 16, None, None, None, None] and jp5.gpu_freq_mhz == 611
    assert jp5.temperatures_c["cpu"] == 47.937 and jp5.swap_used_bytes == 491 << 20

    # AGX Orin has no input rail: the board's power is the sum of its rails (JetPack 6 prints three).
    agx = parse_tegrastats_line(text("agx-orin-devkit-32gb_jp6-r36.4-inferred_tegrastats.txt").splitlines()[0], 1.0)
    assert agx.power_rail == "sum" and agx.power_mw == 1995 + 0 + 2524 and agx.cpu_util_pct[8:] == [None] * 4

    # JetPack 4 Xavier: no timestamp, rails without units, EMC without a frequency.
    xavier = parse_tegrastats_line(text("agx-xavier-16gb_jp4-inferred_tegrastats.txt"), 1.0)
    assert xavier.rails_mw["SYS5V"] == (3306, 3306) and "CPU" in xavier.rails_mw  # the rail, not the "CPU [" list
    assert xavier.power_mw == 463 + 618 + 2936 + 0 + 309 + 3306 and xavier.emc_freq_mhz is None


def test_tegrastats_line_without_fields_gives_none():
    s = parse_tegrastats_line("garbage with no fields", 3.0)
    assert (s.power_mw, s.ram_used_bytes, s.gpu_util_pct, s.power_rail) == (None, None, None, None)
    assert s.cpu_util_pct == [] and s.rails_mw == {} and s.temperatures_c == {}


@pytest.mark.parametrize("path", NVIDIA_SMI_TABLES, ids=ids(NVIDIA_SMI_TABLES))
def test_every_nvidia_smi_table_parses(path):
    gpus = sysinfo.parse_nvidia_smi(path.read_text())
    if "Driver Version" not in path.read_text():  # `nvidia-smi -L`: a list, not the table
        assert gpus == []
        return
    assert [(g["index"], g["name"], g["memory_total_bytes"]) for g in gpus] == [(0, "Orin (nvgpu)", None)]
    assert gpus[0]["driver"] in ("540.4.0", None)  # JetPack 6.0's nvidia-smi prints "Driver Version: N/A"


def test_nvidia_smi_table_driver_na_and_desktop_table():
    assert sysinfo.parse_nvidia_smi(text("orin-unspecified_jp6.0-r36.3-inferred_nvidia-smi.txt"))[0]["driver"] is None
    desktop = (
        "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"
        "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |\n"
        "| N/A   33C    P0             70W /  700W |       1MiB /  81559MiB |      0%      Default |\n"
        "| Processes:                                                                            |\n"
        "|    0   N/A  N/A     4242      C   python                                     N/A      |\n"
    )
    assert sysinfo.parse_nvidia_smi(desktop) == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 81559 << 20, "driver": "550.54.15"}]


def test_nvidia_smi_csv_na_is_none():
    rows = sysinfo.parse_nvidia_smi_csv(text("orin_jp6.2.1_nvidia-smi-query-gpu-csv.txt"), RECORDED_QUERY)
    assert rows == [{"index": "0", "name": "Orin (nvgpu)", **{f: None for f in RECORDED_QUERY[2:]}}]
    # The same text against another query has the wrong number of columns: dropped, not misread.
    assert sysinfo.parse_nvidia_smi_csv(text("orin_jp6.2.1_nvidia-smi-query-gpu-csv.txt")) == []
    odd = sysinfo.parse_nvidia_smi_csv("0,  A100 ,[Not Supported], N/A\n\n1, B, 40960, 550.1\n")
    assert odd == [{"index": "0", "name": "A100", "memory.total": None, "driver_version": None},
                   {"index": "1", "name": "B", "memory.total": "40960", "driver_version": "550.1"}]


@pytest.mark.parametrize("path", TEGRA_RELEASES, ids=ids(TEGRA_RELEASES))
def test_every_tegra_release_parses(path):
    l4t = sysinfo.parse_nv_tegra_release(path.read_text())
    expected = re.search(r"r(\d+\.\d+\.\d+)", path.name)  # the file names carry the release
    assert l4t == expected.group(1)


def test_tegra_release_spot_values():
    # An Orin Nano on JetPack 6.2: "# R36 (release), REVISION: 4.3" is L4T 36.4.3.
    nano = text("orin-nano-8gb-super_jp6.2-r36.4.3_nv_tegra_release-head1.txt")
    assert sysinfo.parse_nv_tegra_release(nano) == "36.4.3"
    # A vendor image's extra comment lines do not matter.
    assert sysinfo.parse_nv_tegra_release(text("agx-orin-32gb-j501_jp6.2.1-r36.4.4_nv_tegra_release.txt")) == "36.4.4"
    assert sysinfo.parse_nv_tegra_release("") is None and sysinfo.parse_nv_tegra_release("# R36 (release)") is None


@pytest.mark.parametrize(("name", "jetpack"), [
    ("agx-orin-devkit_jp5.1.2-r35.4.1_apt-cache-show-nvidia-jetpack.txt", "5.1.2"),  # 5.1.2-b104
    ("agx-orin-devkit_jp6.0-r36.3.0_apt-cache-show-nvidia-jetpack.txt", "6.0"),  # 6.0+b87
    ("agx-orin-devkit_jp6.2-r36.4.3_apt-cache-show-nvidia-jetpack.txt", "6.2"),  # newest stanza first
    ("agx-orin-devkit_jp6.2.1-r36.4.4_apt-cache-show-nvidia-jetpack.txt", "6.2.1"),
])
def test_jetpack_version_from_package_stanza(name, jetpack):
    assert sysinfo.parse_jetpack_version(text(name)) == jetpack


def test_jetpack_version_from_dpkg_query_and_garbage():
    assert sysinfo.parse_jetpack_version("6.2.1+b38") == "6.2.1"
    assert sysinfo.parse_jetpack_version("5.1.2-b104\n") == "5.1.2"
    assert sysinfo.parse_jetpack_version("") is None and sysinfo.parse_jetpack_version("Version: ?") is None


@pytest.mark.parametrize(("name", "mode"), [
    ("orin-nano-8gb-super_jp6.2-r36.4.3_nvpmodel-q.txt", "MAXN_SUPER"),
    ("agx-orin-devkit_jp6.0-r36.3.0_nvpmodel-q.txt", "MODE_30W"),
    ("agx-orin-64gb_jp5.1-r35-inferred_jetson_clocks-show.txt", "MAXN"),
    ("agx-orin-32gb-j501_jp6.2.1-r36.4.4_jetson_release.txt", "MODE_40W"),  # "NV Power Mode[3]:"
])
def test_power_mode(name, mode):
    assert sysinfo.parse_nvpmodel(text(name)) == mode


def test_device_tree_models():
    assert sysinfo.parse_device_tree_model(text("orin-nano-8gb-super_jp6.2-r36.4.3_device-tree-model.txt")) == (
        "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")
    assert sysinfo.parse_device_tree_model("NVIDIA Orin NX Developer Kit\x00") == "NVIDIA Orin NX Developer Kit"
    assert sysinfo.parse_device_tree_model("\x00") is None


JETSON_RELEASES = recorded("*jetson_release.txt")


@pytest.mark.parametrize("path", JETSON_RELEASES, ids=ids(JETSON_RELEASES))
def test_tensorrt_generation_from_recorded_versions(path):
    version = re.search(r"TensorRT:\s*(\S+)", path.read_text()).group(1)
    problem = sysinfo.tensorrt_supported(version)
    if version.startswith("8."):  # JetPack 5.1.4 ships TensorRT 8.5.2.2
        assert "needs TensorRT 10 (JetPack 6.1 or newer)" in problem and version in problem
    else:
        assert problem is None


def test_tensorrt_supported_edge_cases():
    assert sysinfo.tensorrt_supported(text("agx-orin-32gb-j501_jp6.2.1-r36.4.4_tensorrt-version.txt")) is None
    assert sysinfo.tensorrt_supported("8.6.2.3") and sysinfo.tensorrt_supported(" 7 ")
    assert sysinfo.tensorrt_supported("10.0.0b6") is None and sysinfo.tensorrt_supported("11.1") is None
    assert sysinfo.tensorrt_supported("?") is None and sysinfo.tensorrt_supported(None) is None


# --- doctor on a recorded Jetson -----------------------------------------------------------------
# Each board is the files a real one printed; a None tool is one that is absent or failed. The
# dpkg-query answer is an apt-cache stanza: the same control format as dpkg's own.
BOARDS = {
    "orin-nano-jp6.2": {
        "release": "orin-nano-8gb-super_jp6.2-r36.4.3_nv_tegra_release-head1.txt",
        "model": "orin-nano-8gb-super_jp6.2-r36.4.3_device-tree-model.txt",
        "dpkg-query": "agx-orin-devkit_jp6.2-r36.4.3_apt-cache-show-nvidia-jetpack.txt",
        "nvpmodel": "orin-nano-8gb-super_jp6.2-r36.4.3_nvpmodel-q.txt",
        "query": "orin_jp6.2.1_nvidia-smi-query-gpu-csv.txt",
        "nvidia-smi": "orin-nano_jp6.2-r36.4_nvidia-smi.txt",
        "tensorrt": "orin-nano-devkit_jp6.2-r36.4.3_jetson_release.txt",
    },
    "agx-orin-jp6.0-no-query": {
        "release": "agx-orin-devkit_jp6.0-r36.3.0_nv_tegra_release.txt",
        "model": None,
        "dpkg-query": None,
        "nvpmodel": "agx-orin-devkit_jp6.0-r36.3.0_nvpmodel-q.txt",
        "query": None,  # the CSV query fails: the table is read instead
        "nvidia-smi": "orin-unspecified_jp6.0-r36.3-inferred_nvidia-smi.txt",
        "tensorrt": None,
    },
    "orin-nano-jp5": {
        "release": "orin-nano-8gb-devkit_jp5.1.1-r35.3.1_jtop-error-log.txt",
        "model": "orin-nx_jp5-inferred_device-tree-model.txt",
        "dpkg-query": "agx-orin-devkit_jp5.1.2-r35.4.1_apt-cache-show-nvidia-jetpack.txt",
        "nvpmodel": None,
        "query": None,  # JetPack 5 has no nvidia-smi
        "nvidia-smi": None,
        "tensorrt": "orin-nano-devkit_jp5.1.4-r35.6.0_jetson_release.txt",
    },
}


def _answer_query(args: tuple[str, ...], recording: str) -> str:
    """Our --query-gpu's fields from the recorded query's row; a field it lacks prints [N/A]."""
    row = sysinfo.parse_nvidia_smi_csv(text(recording), RECORDED_QUERY)[0]
    fields = next(a for a in args if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
    return ", ".join(row.get(f) or "[N/A]" for f in fields) + "\n"


@pytest.fixture(params=sorted(BOARDS))
def jetson(request, monkeypatch):
    board = BOARDS[request.param]
    files = {"/etc/nv_tegra_release": board["release"], "/proc/device-tree/model": board["model"]}

    def read(path: Path) -> str:
        name = files.get(str(path))
        return text(name) if name else ""

    def run_tool(*args: str, timeout: float = 10) -> str | None:
        if args[0] == "nvidia-smi" and len(args) > 1:
            return _answer_query(args, board["query"]) if board["query"] else None
        name = board.get(args[0])
        return text(name) if name else None

    real_import_status = doctor._import_status

    def import_status(module: str) -> dict:
        if module == "tensorrt" and board["tensorrt"]:
            return {"ok": True, "version": re.search(r"TensorRT:\s*(\S+)", text(board["tensorrt"])).group(1)}
        return real_import_status(module)

    monkeypatch.setattr(sysinfo, "_read", read)  # /proc/meminfo too: memory becomes unknown
    monkeypatch.setattr(sysinfo, "_run_tool", run_tool)
    monkeypatch.setattr(sysinfo, "_nvml", lambda: None)
    monkeypatch.setattr(doctor, "_import_status", import_status)
    monkeypatch.setattr(doctor, "_torch_status", lambda: {"ok": False, "error": "not probed here"})
    return request.param


def test_doctor_reports_a_recorded_jetson(jetson, caplog):
    d = doctor.diagnose()
    lines = doctor.report_lines(d)
    json.dumps(d)  # `doctor --json` prints this
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # no probe fell back
    jetson_line = next(line for line in lines if line.startswith("jetson"))
    assert "memory        unknown free of unknown" in lines
    if jetson == "orin-nano-jp6.2":
        assert d["gpus"] == [{"index": 0, "name": "Orin (nvgpu)", "memory_total_bytes": None, "driver": None}]
        assert d["jetson"] == {"model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                               "l4t": "36.4.3", "jetpack": "6.2", "power_mode": "MAXN_SUPER"}
        assert "gpu 0         Orin (nvgpu), memory unknown, driver unknown" in lines
        assert d["tensorrt_problem"] is None and not any(line.startswith("warning") for line in lines)
    elif jetson == "agx-orin-jp6.0-no-query":
        assert [(g["name"], g["memory_total_bytes"], g["driver"]) for g in d["gpus"]] == [("Orin (nvgpu)", None, None)]
        assert jetson_line == "jetson        unknown; L4T 36.3.0; JetPack unknown; power mode MODE_30W"
    else:
        assert d["gpus"] == [] and d["jetson"]["l4t"] == "35.3.1" and d["jetson"]["jetpack"] == "5.1.2"
        assert d["backends"]["tensorrt"] is False
        warning = [line for line in lines if line.startswith("warning") and "TensorRT" in line]
        expected = ("warning       TensorRT 8.5.2.2 found; exo2ego-edge's engine builder needs "
                    "TensorRT 10 (JetPack 6.1 or newer)")
        assert warning == [expected]


class _JetsonNvml:
    """NVML as a Jetson answers it: the GPU is listed, its memory is NotSupported."""

    class NVMLError_NotSupported(Exception):  # pynvml's spelling
        pass

    def nvmlSystemGetDriverVersion(self):
        return b"540.4.0"

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, handle):
        return "Orin (nvgpu)"

    def nvmlDeviceGetMemoryInfo(self, handle):
        raise self.NVMLError_NotSupported("Not Supported")


def test_nvml_without_memory_figures(monkeypatch):
    monkeypatch.setattr(sysinfo, "_nvml", _JetsonNvml)  # called: returns an instance
    assert sysinfo.gpu_info() == [{"index": 0, "name": "Orin (nvgpu)", "memory_total_bytes": None, "driver": "540.4.0"}]
    with sysinfo.GpuMemorySampler() as sampler:
        pass
    assert sampler.report() is None
