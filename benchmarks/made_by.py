"""The line each committed result opens with: when, at which commit, by which command."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path


def commit() -> str:
    """This checkout's short commit hash."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()


def made_by(script: str, argv: list[str] | None = None) -> str:
    """'Made on DATE at commit C by `benchmarks/SCRIPT ARGS`', the arguments quoted as a shell
    needs them (``argv`` None: this process's own)."""
    command = shlex.join([f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])
    return f"Made on {time.strftime('%Y-%m-%d')} at commit {commit()} by `{command}`"
