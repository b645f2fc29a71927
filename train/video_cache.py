"""Decode every clip's frames once, into a memory-mapped uint8 .npy the trainer indexes.

One cache file per (data file, view, frames, size): ``(N, T, S, S, 3)`` uint8, where N counts the
*distinct* clips (several instructions share one clip). Many clips come from one video, so each
video is opened once and all its clips are cut in a single sequential pass; videos decode in a
small thread pool (PyAV releases the GIL while decoding). Frames are resized to S x S by the
decoder's scaler (no crop: the simulator and Ego-Exo4D's downscaled videos are what the model
was specified on), sampled uniformly inside [start, end] at the centre of T equal sub-intervals.

The file name carries a hash of the data file's contents, so editing the JSONL rebuilds the cache;
it is written to a temp name and renamed, so a crash never leaves a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from exo2ego_edge.errors import UserError

log = logging.getLogger(__name__)

ClipKey = tuple[str, float, float]  # (video path, start, end)


def sample_times(start: float, end: float, num_frames: int) -> list[float]:
    """Centres of ``num_frames`` equal sub-intervals of [start, end]."""
    span = max(end - start, 0.0)
    return [start + (i + 0.5) * span / num_frames for i in range(num_frames)]


def unique_clips(rows: list[dict], view: str) -> tuple[list[ClipKey], np.ndarray]:
    """Distinct (video, start, end) of ``rows`` in first-seen order, and each row's slot."""
    slots: dict[ClipKey, int] = {}
    index = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        key = (row[f"{view}_video"], float(row["start"]), float(row["end"]))
        index[i] = slots.setdefault(key, len(slots))
    return list(slots), index


def cache_path(data_file: Path, view: str, num_frames: int, size: int, cache_dir: Path | None) -> Path:
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()[:12]
    folder = cache_dir or data_file.parent / "frame_cache"
    return folder / f"{data_file.stem}-{digest}.{view}.f{num_frames}.s{size}.npy"


def load_or_build(
    data_file: Path,
    rows: list[dict],
    view: str,
    num_frames: int,
    size: int,
    cache_dir: Path | None = None,
    build: bool = True,
    workers: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """The memory-mapped frames of ``rows``' ``view`` videos and the row -> clip slot index.

    With ``build=False`` (non-zero ranks) a missing cache is an error: rank 0 builds it first.
    """
    clips, index = unique_clips(rows, view)
    path = cache_path(data_file, view, num_frames, size, cache_dir)
    if not path.is_file():
        if not build:
            raise UserError(f"{path}: frame cache missing (rank 0 should have built it)")
        _build(path, clips, num_frames, size, workers)
    frames = np.load(path, mmap_mode="r")
    if frames.shape != (len(clips), num_frames, size, size, 3):
        raise UserError(f"{path}: frame cache has shape {frames.shape}, expected {len(clips)} clips; delete it")
    return frames, index


def _build(path: Path, clips: list[ClipKey], num_frames: int, size: int, workers: int) -> None:
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list[int]] = defaultdict(list)
    for slot, (video, _, _) in enumerate(clips):
        by_video[video].append(slot)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(clips), num_frames, size, size, 3))
    log.info("decoding %d clips from %d videos into %s", len(clips), len(by_video), path)
    try:
        def one(video: str) -> None:
            slots = by_video[video]
            times = [sample_times(clips[s][1], clips[s][2], num_frames) for s in slots]
            out[slots] = decode_clips(video, times, size)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in tqdm(pool.map(one, sorted(by_video)), total=len(by_video), desc=f"decode {path.name}",
                          unit="video", leave=False, disable=len(by_video) < 8):
                pass
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def decode_clips(video: str, clip_times: list[list[float]], size: int) -> np.ndarray:
    """Frames at the given times for several clips of one video, in one decoding pass.

    Each time gets the frame on screen at that instant (the last frame whose timestamp is <= t;
    the first frame for earlier times, the last one for times past the end).
    Returns (clips, T, size, size, 3) uint8.
    """
    import av

    n_clips, n_t = len(clip_times), len(clip_times[0]) if clip_times else 0
    result = np.zeros((n_clips, n_t, size, size, 3), dtype=np.uint8)
    targets = sorted((t, c, i) for c, ts in enumerate(clip_times) for i, t in enumerate(ts))
    if not targets:
        return result
    if not Path(video).is_file():
        raise UserError(f"{video}: video file not found")
    pending = 0
    prev = prev_rgb = None

    def rgb(frame) -> np.ndarray:
        return frame.to_ndarray(width=size, height=size, format="rgb24")

    try:
        with av.open(video) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = float(frame.time or 0.0)
                while pending < len(targets) and targets[pending][0] < t:
                    # target lies before this frame: the previous frame was on screen
                    if prev_rgb is None:
                        prev_rgb = rgb(prev if prev is not None else frame)
                    _, c, i = targets[pending]
                    result[c, i] = prev_rgb
                    pending += 1
                if pending == len(targets):
                    break
                prev, prev_rgb = frame, None
            if pending < len(targets):
                if prev is None:
                    raise UserError(f"{video}: no decodable frames")
                last = rgb(prev)
                for _, c, i in targets[pending:]:
                    result[c, i] = last
    except av.error.FFmpegError as e:
        raise UserError(f"{video}: cannot decode ({e})") from None
    return result
