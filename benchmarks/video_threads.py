"""FFmpeg's decoder threading on this machine: which `thread_type` decodes camera-like clips fastest.

Three clips, encoded here: `bench`'s default (640x480 H.264, one keyframe), 1080p H.264 with a
keyframe a second, 720p HEVC with one every two seconds (camera-like GOPs). For each, decoding
every frame under each thread type (NONE, SLICE, FRAME, AUTO = frame + slice), and the runtime's
`decode_clip` (8 frames at 224 px, seeking and skipping as it does) under SLICE and AUTO. Rounds
are interleaved, p50 over rounds; `runtime.video.thread_type` picks by codec and core count.

    .venv/bin/python benchmarks/video_threads.py            # ~1 min on 2 cores

Writes benchmarks/results/video_threads.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from made_by import made_by

RESULTS = Path(__file__).resolve().parent / "results"
THREAD_TYPES = ("NONE", "SLICE", "FRAME", "AUTO")
CLIP_THREAD_TYPES = ("SLICE", "AUTO")


def encode(path: Path, codec: str, size: tuple[int, int], gop: int, seconds: int = 4, fps: int = 30) -> Path:
    """A moving-gradient clip (the bench clip's picture) in ``codec`` with a keyframe every ``gop`` frames."""
    import av

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = width, height, "yuv420p", gop
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=error"}
        for i in range(seconds * fps):
            img = np.empty((height, width, 3), dtype=np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = (xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode_all(path: Path, thread_type: str) -> None:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = thread_type
        for _ in container.decode(stream):
            pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import av

    from exo2ego_edge.perf.harness import synthetic_clip
    from exo2ego_edge.runtime import video
    from exo2ego_edge.runtime.sysinfo import cpu_model, usable_cores

    work = Path(tempfile.mkdtemp())
    clips = {"640x480 H.264, 1 keyframe (bench's clip)": synthetic_clip(work / "bench.mp4"),
             "1920x1080 H.264, keyframe every 30 frames": encode(work / "fhd.mp4", "libx264", (1920, 1080), 30)}
    if "libx265" in av.codecs_available:
        clips["1280x720 HEVC, keyframe every 60 frames"] = encode(work / "hevc.mp4", "libx265", (1280, 720), 60)
    policy = video.thread_type

    def clip_with(thread_type: str, path: Path) -> None:
        video.thread_type = lambda codec: thread_type
        try:
            video.decode_clip(str(path), 0.0, None, 8, 224)
        finally:
            video.thread_type = policy

    cases = [(clip, f"every frame, {t}", lambda t=t, c=path: decode_all(c, t))
             for clip, path in clips.items() for t in THREAD_TYPES]
    cases += [(clip, f"decode_clip 8 frames, {t}", lambda t=t, c=path: clip_with(t, c))
              for clip, path in clips.items() for t in CLIP_THREAD_TYPES]
    times: dict[tuple[str, str], list[float]] = {(clip, what): [] for clip, what, _ in cases}
    for fn in (fn for _, _, fn in cases):
        fn()  # warm-up
    for _ in range(args.rounds):
        for clip, what, fn in cases:
            t0 = time.perf_counter()
            fn()
            times[clip, what].append((time.perf_counter() - t0) * 1e3)
    p50 = {key: float(np.median(v)) for key, v in times.items()}
    cores = usable_cores()
    lines = ["# Video decoding by FFmpeg thread type", "",
             f"{made_by('video_threads.py', argv)} (p50 of {args.rounds} interleaved rounds; {cpu_model()}, "
             f"{cores} usable cores; PyAV {av.__version__}). The runtime's choice here "
             f"(`runtime.video.thread_type`): H.264 `{policy('h264')}`, HEVC `{policy('hevc')}`.", "",
             "| clip | decoding | ms | vs AUTO |", "|---|---|---:|---:|"]
    for clip, what, _ in cases:
        kind = what.rsplit(", ", 1)[0]
        lines.append(f"| {clip} | {what} | {p50[clip, what]:.1f} | {p50[clip, f'{kind}, AUTO'] / p50[clip, what]:.2f}x |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "video_threads.md").write_text("\n".join(lines) + "\n")
    (args.results / "video_threads.json").write_text(json.dumps(
        {"cpu": cpu_model(), "cores": cores, "pyav": av.__version__, "policy": {c: policy(c) for c in ("h264", "hevc")},
         "p50_ms": [{"clip": c, "decoding": w, "ms": p50[c, w]} for c, w, _ in cases]}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
