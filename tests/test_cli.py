"""The CLI surface: every group answers --help; failures are one line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from exo2ego_edge.cli import cli

GROUPS = ["data", "train", "export", "run", "bench", "eval", "demo", "doctor"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_command_group_has_help(group):
    result = CliRunner().invoke(cli, [group, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_console_script_prints_user_errors_as_one_line(tmp_path):
    script = [sys.executable, "-c", "from exo2ego_edge.cli import main; main()"]
    proc = subprocess.run(
        [*script, "data", "build-clips", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.jsonl")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_quick_demo_runs_every_step_on_the_shipped_student(tmp_path):
    """`demo --quick` end to end on a small world: its numbered steps, a bundle that passed parity,
    streamed answers and a benchmark (make demo runs the same steps with training in front)."""
    import re

    from exo2ego_edge.bundle import load_manifest

    result = CliRunner().invoke(cli, ["demo", "--quick", "--takes", "4", "--questions", "1", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert re.findall(r"^\[(\d)/(\d)\]", result.output, re.M) == [(str(i), "6") for i in range(1, 7)]
    assert load_manifest(tmp_path / "d" / "bundle-int8").parity["passed"]
    assert "answer:" in result.output and "decode_per_token" in result.output


def test_train_prints_a_line_per_stage_and_where_the_result_is(tmp_path, capsys):
    from exo2ego_edge.cli import main
    from helpers.datasets import make_dataset, quick_overrides

    clips = make_dataset(tmp_path / "data")
    main(["train", "--config", "egosim-tiny-quick", "--stages", "init,1", *quick_overrides(clips, tmp_path / "run")])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["init", "stage1", "latest stage checkpoint"]
    assert " steps in " in lines[0] and lines[-1].endswith(str(tmp_path / "run" / "stage1" / "final"))
