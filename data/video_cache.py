"""Decode every clip's frames once, into a memory-mapped uint8 .npy the trainer indexes.

One cache file per (data file, view, frames, size): ``(N, K, S, S, 3)`` uint8, where N counts the
*distinct* clips (several instructions share one clip). Frames come from the runtime's decoder
(:func:`exo2ego_edge.runtime.video.decode_clips`: scale the short side, centre-crop), so training
sees exactly the pixels serving sees. Each video is opened once for all its clips; videos decode
in a small thread pool (PyAV releases the GIL while decoding).

``K = num_frames * pool``: the clip is sampled at the centres of K equal sub-intervals. With an
odd ``pool``, frame ``pool * i + pool // 2`` sits exactly at the centre of sub-interval i of the
runtime's ``num_frames`` sampling, so the centred sample is bit-identical to ``decode_clip(...,
num_frames)``; the other frames of each group are the temporal-jitter candidates training draws from.

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


def unique_clips(rows: list[dict], view: str) -> tuple[list[ClipKey], np.ndarray]:
    """Distinct (video, start, end) of ``rows`` in first-seen order, and each row's slot."""
    slots: dict[ClipKey, int] = {}
    index = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        key = (row[f"{view}_video"], float(row["start"]), float(row["end"]))
        index[i] = slots.setdefault(key, len(slots))
    return list(slots), index


def cache_path(data_file: Path, view: str, frames: int, size: int, cache_dir: Path | None) -> Path:
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()[:12]
    folder = cache_dir or data_file.parent / "frame_cache"
    return folder / f"{data_file.stem}-{digest}.{view}.f{frames}.s{size}.crop.npy"


def load_or_build(
    data_file: Path,
    rows: list[dict],
    view: str,
    num_frames: int,
    size: int,
    cache_dir: Path | None = None,
    build: bool = True,
    workers: int = 2,
    pool: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The memory-mapped frames ``(N, num_frames * pool, S, S, 3)`` of ``rows``' ``view`` videos
    and the row -> clip slot index.

    With ``build=False`` (non-zero ranks) a missing cache is an error: rank 0 builds it first.
    """
    if pool < 1 or pool % 2 == 0:
        raise UserError(f"frame pool {pool} must be odd and >= 1 (its middle frame is the runtime's)")
    frames_per_clip = num_frames * pool
    clips, index = unique_clips(rows, view)
    path = cache_path(data_file, view, frames_per_clip, size, cache_dir)
    if not path.is_file():
        if not build:
            raise UserError(f"{path}: frame cache missing (rank 0 should have built it)")
        _build(path, clips, frames_per_clip, size, workers)
    frames = np.load(path, mmap_mode="r")
    if frames.shape != (len(clips), frames_per_clip, size, size, 3):
        raise UserError(f"{path}: frame cache has shape {frames.shape}, expected {len(clips)} clips; delete it")
    return frames, index


def _build(path: Path, clips: list[ClipKey], num_frames: int, size: int, workers: int) -> None:
    from tqdm import tqdm

    from exo2ego_edge.runtime.video import VideoError, decode_clips

    path.parent.mkdir(parents=True, exist_ok=True)
    by_video: dict[str, list[int]] = defaultdict(list)
    for slot, (video, _, _) in enumerate(clips):
        by_video[video].append(slot)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(clips), num_frames, size, size, 3))
    log.info("decoding %d clips from %d videos into %s", len(clips), len(by_video), path)
    # Short clips have fewer distinct frames than cached candidates: expected, not worth a warning each.
    quiet = _Quiet()
    logging.getLogger("exo2ego_edge.runtime.video").addFilter(quiet)
    try:
        def one(video: str) -> None:
            slots = sorted(by_video[video], key=lambda s: clips[s][1])  # in time order: short seeks
            try:
                out[slots] = decode_clips(video, [clips[s][1:] for s in slots], num_frames, size)
            except VideoError as e:
                raise UserError(str(e)) from None

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
    finally:
        logging.getLogger("exo2ego_edge.runtime.video").removeFilter(quiet)
        if quiet.repeats:
            log.info("%d clip(s) had fewer distinct frames than the %d sampled; frames were repeated",
                     quiet.repeats, num_frames)


class _Quiet(logging.Filter):
    """Counts (instead of printing) the decoder's "repeating frames" warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.repeats = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "repeating frames" in record.getMessage():
            self.repeats += 1
            return False
        return True
