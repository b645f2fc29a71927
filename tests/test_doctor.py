"""`exo2ego-edge doctor` reports this machine and which backends it can run."""

from __future__ import annotations

import json

from exo2ego_edge.cli import main
from exo2ego_edge.runtime.doctor import diagnose, report_lines


def test_diagnose_reports_what_is_here():
    d = diagnose()
    assert d["onnxruntime"]["ok"] and "CPUExecutionProvider" in d["ort_providers"]
    assert d["backends"]["ort-cpu"] is True
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert d["tensorrt"]["ok"] is False and "tensorrt" in d["tensorrt"]["error"]
        assert d["backends"]["tensorrt"] is False
    lines = report_lines(d)
    assert any(line.startswith("backends") and "ort-cpu" in line for line in lines)
    import torch  # the test environment trains: doctor finds it from a child process

    assert d["torch"] == {"ok": True, "version": torch.__version__, "cuda": torch.cuda.is_available()}


def test_doctor_cli_json(capsys):
    try:
        main(["doctor", "--json"])
    except SystemExit as e:  # main() returns on success and exits non-zero on failure
        assert e.code == 0
    report = json.loads(capsys.readouterr().out)
    assert {"python", "ort_providers", "gpus", "memory_free_bytes", "backends", "tensorrt_problem"} <= set(report)
