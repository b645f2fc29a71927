"""Live sources and standing questions: a rolling window of per-frame visual tokens.

A source is a camera (an index or a V4L2 device, through OpenCV, imported only then), a network
stream (RTSP / HTTP / RTMP / UDP URL, through PyAV, with open and read time limits so a dead
server never hangs the runtime), or a video file played at real-time pace (PyAV).

Frames are taken from the source every ``interval`` seconds (by default ``every / num_frames``, so
each answer sees frames spread over the last ``every`` seconds, as a clip would). Each taken frame
goes through the vision graph once (frames are the graph's batch axis) and its P visual tokens
enter a window of the last ``num_frames`` frames; every ``every`` seconds the standing question is
answered from the window's tokens, reusing the prompt prefix's KV cache.

Real-time semantics: a frame that arrives while an answer is being computed and is by then more
than one ``interval`` old is dropped (decoded, never scaled or encoded), as a camera would have
moved on; answers are therefore about the recent past, never a growing backlog.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exo2ego_edge.runtime.errors import SourceError, VideoError
from exo2ego_edge.runtime.generate import GREEDY, Sampling
from exo2ego_edge.runtime.session import Answer, Runtime, Session
from exo2ego_edge.runtime.video import thread_type, to_model_frame

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LiveFrame:
    time_s: float  # source time since its first frame
    pixels: np.ndarray  # uint8 (size, size, 3) RGB


def is_network(spec: str) -> bool:
    return bool(re.match(rf"^({'|'.join(NETWORK_SCHEMES)})://", spec, re.IGNORECASE))


def is_camera(spec: str) -> bool:
    return spec.isdigit() or spec.startswith("/dev/video")


def open_source(spec: str, size: int, interval: float, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[LiveFrame]:
    """Frames of ``spec`` at the model's ``size``, at most one per ``interval`` seconds."""
    if interval <= 0:
        raise SourceError(f"frame interval must be > 0 s, got {interval}")
    if is_camera(spec):
        return _camera_frames(spec, size, interval)
    if is_network(spec):
        return _pyav_frames(spec, size, interval, paced=False, timeout_s=timeout_s)
    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"{spec}: no such file, camera or stream URL")
    if path.stat().st_size == 0:
        raise VideoError(f"{spec}: file is empty (0 bytes)")
    return _pyav_frames(str(path), size, interval, paced=True, timeout_s=timeout_s)


def _pyav_frames(src: str, size: int, interval: float, paced: bool, timeout_s: float) -> Iterator[LiveFrame]:
    import av

    options = {"rtsp_transport": "tcp"} if src.lower().startswith("rtsp") else {}
    try:
        container = av.open(src, mode="r", options=options, timeout=(timeout_s, timeout_s))
    except av.error.FFmpegError as e:
        raise SourceError(f"{src}: cannot open ({getattr(e, 'strerror', None) or e})") from None
    if not container.streams.video:
        container.close()
        raise SourceError(f"{src}: has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = thread_type(stream.codec_context.name)
    return _paced(container, stream, src, size, interval, paced)


def _paced(container, stream, src: str, size: int, interval: float, paced: bool) -> Iterator[LiveFrame]:
    import av

    with container:
        first_t = wall0 = None
        next_take = 0.0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if first_t is None:
                    first_t, wall0 = frame.time, time.monotonic()
                t = frame.time - first_t
                if paced:  # a file plays as if it were a camera: wait for the frame's moment
                    delay = wall0 + t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if t + 1e-6 < next_take:
                    continue
                lag = time.monotonic() - wall0 - t
                if lag > interval:
                    continue  # arrived while we were busy and is stale: a live camera has moved on
                next_take = t + interval
                yield LiveFrame(t, to_model_frame(frame, size))
        except av.error.FFmpegError as e:
            raise SourceError(f"{src}: stream failed ({getattr(e, 'strerror', None) or e})") from None


def _camera_frames(spec: str, size: int, interval: float) -> Iterator[LiveFrame]:
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # its own warnings would break one-line errors
    try:
        import cv2  # only cameras need OpenCV; it is an optional extra
    except ImportError:
        raise SourceError("camera sources need OpenCV: pip install 'exo2ego-edge[camera]'") from None
    device: int | str = int(spec) if spec.isdigit() else spec
    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        raise SourceError(f"camera {spec}: cannot open it (in use, missing, or no permission)")

    def frames() -> Iterator[LiveFrame]:
        t0 = next_take = None
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    raise SourceError(f"camera {spec}: stopped delivering frames")
                now = time.monotonic()
                t0 = now if t0 is None else t0
                if next_take is not None and now < next_take:
                    continue
                next_take = now + interval
                yield LiveFrame(now - t0, _crop_resize_bgr(cv2, bgr, size))
        finally:
            cap.release()

    return frames()


def _crop_resize_bgr(cv2, bgr: np.ndarray, size: int) -> np.ndarray:
    """The same scale-short-side-then-centre-crop rule as video.to_model_frame, with OpenCV."""
    h, w = bgr.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = bgr[y0 : y0 + side, x0 : x0 + side]
    return cv2.cvtColor(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


@dataclass
class LiveAnswer:
    time_s: float  # source time of the newest frame the answer saw
    answer: Answer
    frames_in_window: int
    frames_encoded: int  # frames taken from the source so far (each encoded exactly once)


def answer_live(
    rt: Runtime,
    frames: Iterator[LiveFrame],
    question: str,
    every: float,
    max_new_tokens: int = 32,
    sampling: Sampling = GREEDY,
    window: int | None = None,
) -> Iterator[LiveAnswer]:
    """Answer ``question`` every ``every`` seconds of source time from the last ``window`` frames."""
    if every <= 0:
        raise SourceError(f"--every must be > 0 s, got {every}")
    rt.prompt.question_ids(question)  # refuse an empty question before the source starts
    window = window or rt.num_frames
    tokens: deque[np.ndarray] = deque(maxlen=window)  # per-frame (P, D) visual tokens
    encoded = 0
    due = every
    for frame in frames:
        tokens.append(rt.encode_frames(frame.pixels[None])[0])
        encoded += 1
        if frame.time_s + 1e-6 >= due:
            session = Session.from_visual_tokens(rt, np.stack(tokens))
            answer = session.ask(question, max_new_tokens, sampling)
            yield LiveAnswer(frame.time_s, answer, len(tokens), encoded)
            due = frame.time_s + every


def default_interval(every: float, num_frames: int) -> float:
    return every / num_frames


__all__ = ["LiveAnswer", "LiveFrame", "answer_live", "default_interval", "open_source"]
