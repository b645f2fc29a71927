"""Ego frames for calibration and parity: JSONL clip rows -> uint8 (T, H, W, 3) frame stacks.

A row needs ``ego_video``, ``start`` and ``end`` (seconds), as in Ego-ExoClip and the instruction
files. Frames come from :func:`exo2ego_edge.runtime.video.decode_clip`, the decoder the runtime
uses on the device (uniform sampling over [start, end], short side scaled then centre-cropped),
so calibration and parity see the pixels the bundle will be given. Rows whose video cannot be
decoded are skipped with a warning, not fatal: calibration needs enough frames, not every clip.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.errors import UserError
from exo2ego_edge.jsonl import read_jsonl
from exo2ego_edge.runtime.video import decode_clip

log = logging.getLogger(__name__)


def read_clip_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a clips / instructions JSONL that name an ego video and a time window."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such clips file")
    rows = read_jsonl(path, required=("ego_video", "start", "end"))
    if not rows:
        raise UserError(f"{path}: no clip rows")
    return rows


def load_clips(
    path: str | Path, count: int, num_frames: int, size: int, from_end: bool = False
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Up to ``count`` decoded clips (frames, row), rows spread evenly over the file.

    ``from_end`` walks the file backwards, so held-out parity clips taken from the calibration
    file are different rows from the calibration ones (whenever the file has enough).
    """
    rows = read_clip_rows(path)
    if from_end:
        rows = rows[::-1]
    stride = max(len(rows) // max(count, 1), 1)
    clips = []
    for row in rows[::stride]:
        if len(clips) == count:
            break
        try:
            clips.append((decode_clip(row["ego_video"], float(row["start"]), float(row["end"]), num_frames, size), row))
        except UserError as e:
            log.warning("skipping clip: %s", e)
    if not clips:
        raise UserError(f"{path}: none of the clips could be decoded")
    return clips


def random_clips(count: int, num_frames: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Stand-in clips when no data is given: smooth random frames (not white noise, whose
    statistics are far from any camera's)."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(num_frames, 4, 4, 3)).astype(np.float32)
        up = np.repeat(np.repeat(coarse, size // 4 + 1, axis=1), size // 4 + 1, axis=2)[:, :size, :size]
        noise = rng.normal(0, 8, size=up.shape)
        clips.append((np.clip(up + noise, 0, 255).astype(np.uint8), {}))
    return clips
