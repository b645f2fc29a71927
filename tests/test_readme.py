"""Every command in the README's runnable block works as written, as a new user would type it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def runnable_commands() -> list[str]:
    """The lines of every fenced bash block that follows a `<!-- runnable` marker, in order."""
    blocks = re.findall(r"<!-- runnable[^>]*-->\s*```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no runnable block"
    lines = [line.split("  #")[0] for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.strip() and not line.startswith("#")]


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "demo"], ["make", "test"]]


@pytest.mark.slow
def test_readme_pipeline_runs_as_written(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "exo2ego_edge").symlink_to(README.parent / "exo2ego_edge")  # as in a checkout
    for command in runnable_commands():
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
