"""Training progress, atomic mid-stage checkpoints, exact resume, and loading the student.

A stage folder looks like::

    <output_dir>/<stage>/
        checkpoints/step-00000040/   state.pt (model, optimizer, scheduler, scaler) + progress.json
        metrics.jsonl                one JSON line per optimizer step (rank 0)
        final/                       the stage's result: an Exo2Ego checkpoint + tokenizer.json
        eval.json                    held-out "What am I doing?" scores after the stage

Checkpoints are written into a temp folder and renamed (never half-written); only the newest
``keep`` are kept. ``progress.json`` says what the checkpoint is (:class:`TrainingProgress`); on
resume the checkpoint's step, data position and RNG states win over anything recomputed, and a
checkpoint taken with a different seed, world size or batch size is refused rather than silently
producing a different run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exo2ego_edge.atomic import atomic_dir
from exo2ego_edge.errors import UserError

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainingProgress:
    stage: str
    seed: int
    step: int  # optimizer steps completed
    total_steps: int
    world: int
    batch_size: int
    grad_accum: int
    data: dict[str, Any]  # BatchStream.state_dict()
    samples_seen: int = 0

    def check_compatible(self, other: TrainingProgress) -> None:
        """Refuse to resume into a run that would not be the same run."""
        for key in ("stage", "seed", "world", "batch_size", "grad_accum", "total_steps"):
            a, b = getattr(self, key), getattr(other, key)
            if a != b:
                raise UserError(f"cannot resume: checkpoint has {key}={a}, this run has {key}={b}")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(
    folder: Path, progress: TrainingProgress, state: dict[str, Any], rng: list[dict], keep: int
) -> Path:
    """Write ``folder/step-XXXXXXXX`` atomically, then drop all but the newest ``keep``."""
    path = folder / f"step-{progress.step:08d}"
    with atomic_dir(path, overwrite=True) as tmp:
        torch.save({**state, "rng": rng}, tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps(dataclasses.asdict(progress), indent=2) + "\n")
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (both files present), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _STEP_DIR.match(p.name) and (p / "progress.json").is_file()
             and (p / "state.pt").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[TrainingProgress, dict[str, Any]]:
    progress = TrainingProgress(**json.loads((path / "progress.json").read_text()))
    # weights_only=False: the file holds RNG tuples and numpy state we wrote ourselves.
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    return progress, state
