"""Tiny real mp4 files for tests, written with PyAV + libx264 (no binaries committed).

Import from any test: ``from helpers.videos import write_test_mp4`` (pytest puts ``tests/`` on
``sys.path`` because the test modules live there without an ``__init__.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_test_mp4(
    path: str | os.PathLike,
    frames: int = 10,
    size: tuple[int, int] = (64, 48),
    fps: int = 10,
    seed: int = 0,
) -> Path:
    """Write a small H.264 mp4 of ``frames`` frames, ``size`` = (width, height), at ``fps``.

    Each frame is a flat colour that changes over time plus a moving bar, so decoders and
    frame samplers see distinct frames. Width and height must be even (yuv420p).
    """
    import av  # local: only tests that make videos pay for the import

    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for yuv420p, got {size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for i in range(frames):
            img = np.empty((height, width, 3), dtype=np.uint8)
            img[:] = (base + 17 * i) % 256
            x = (i * 4) % width
            img[:, x : x + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_corrupt_mp4(path: str | os.PathLike) -> Path:
    """Write a file named like an mp4 that no demuxer can open."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a real video " * 4)
    return path


QUIRK_FIXTURE = Path(__file__).parents[1] / "fixtures" / "egoexo4d_quirks"


def build_quirk_root(dest: str | os.PathLike) -> Path:
    """Copy the committed quirk-fixture JSON to ``dest`` and write its videos (tiny real mp4s).

    Videos, relative to ``dest/takes/``:

    - kitchen_a (all text): aria01 ONLY under ``downscaled/448/`` (the full-res file is absent);
      cam01 both full-res and downscaled (the downscaled one must win); cam02 full-res only;
      cam03 corrupt; slam-left and collage listed in takes.json but never written (never used).
    - bike_b (text side "exo", take-level best_exo cam02): aria01, cam01, cam02 full-res.
    - missing_c: no files at all.
    - corrupt_d: aria01 corrupt, cam01 fine.
    - val_e (val split, text side "ego"): aria01, cam01.
    """
    import shutil

    dest = Path(dest)
    shutil.copytree(QUIRK_FIXTURE, dest, ignore=shutil.ignore_patterns("*.md"), dirs_exist_ok=True)
    fav = dest / "takes"
    small = Path("frame_aligned_videos") / "downscaled" / "448"
    big = Path("frame_aligned_videos")
    for i, rel in enumerate(
        [
            f"kitchen_a/{small}/aria01_214-1.mp4",
            f"kitchen_a/{big}/cam01.mp4",
            f"kitchen_a/{small}/cam01.mp4",
            f"kitchen_a/{big}/cam02.mp4",
            f"bike_b/{big}/aria01_214-1.mp4",
            f"bike_b/{big}/cam01.mp4",
            f"bike_b/{big}/cam02.mp4",
            f"corrupt_d/{big}/cam01.mp4",
            f"val_e/{big}/aria01_214-1.mp4",
            f"val_e/{big}/cam01.mp4",
        ]
    ):
        write_test_mp4(fav / rel, frames=4, size=(32, 24), fps=4, seed=i)
    write_corrupt_mp4(fav / "kitchen_a" / big / "cam03.mp4")
    write_corrupt_mp4(fav / "corrupt_d" / big / "aria01_214-1.mp4")
    return dest


def write_audio_only_mp4(path: str | os.PathLike) -> Path:
    """Write a valid mp4 holding one short AAC audio stream and no video stream."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
