"""Ego frames for calibration and parity: JSONL clip rows -> uint8 (T, H, W, 3) frame stacks.

A row needs ``ego_video``, ``start`` and ``end`` (seconds), as in Ego-ExoClip and the instruction
files. Frames are sampled uniformly within [start, end] (the centre of T equal slices) and
resized to the model's square size with PyAV's scaler, the same RGB, NHWC, uint8 layout the vision
graph takes. Rows whose video cannot be decoded are skipped with a warning, not fatal: calibration
needs enough frames, not every clip.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.errors import UserError

log = logging.getLogger(__name__)


def sample_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """Centres of ``num_frames`` equal slices of [start, end] (seconds)."""
    span = max(end - start, 0.0)
    return start + (np.arange(num_frames) + 0.5) * span / num_frames


def decode_clip_frames(path: str | Path, start: float, end: float, num_frames: int, size: int) -> np.ndarray:
    """Decode ``num_frames`` RGB frames of ``path`` spread over [start, end], resized to ``size``.

    Each wanted time takes the last decoded frame at or before it (the frame on screen then);
    times before the first frame take the first frame.
    """
    import av

    wanted = sample_times(start, end, num_frames)
    picked: list[np.ndarray | None] = [None] * num_frames
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start > 0 and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            last: np.ndarray | None = None
            k = 0
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else 0.0
                while k < num_frames and t > wanted[k] + 1e-6:
                    picked[k] = last if last is not None else _rgb(frame, size)
                    k += 1
                if k >= num_frames:
                    break
                last = _rgb(frame, size)
            for i in range(k, num_frames):  # clip runs to (or past) the end of the video
                picked[i] = last
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise UserError(f"{path}: cannot decode video ({e})") from None
    if any(p is None for p in picked):
        raise UserError(f"{path}: no frames decoded in [{start}, {end}]")
    return np.stack(picked)  # (T, H, W, 3) uint8


def _rgb(frame, size: int) -> np.ndarray:
    return frame.to_ndarray(format="rgb24", width=size, height=size)


def read_clip_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a clips / instructions JSONL that name an ego video and a time window."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such clips file")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e})") from None
        if not all(k in row for k in ("ego_video", "start", "end")):
            raise UserError(f"{path}:{n}: a clip row needs ego_video, start and end")
        rows.append(row)
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
            clips.append((decode_clip_frames(row["ego_video"], float(row["start"]), float(row["end"]), num_frames, size), row))
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
