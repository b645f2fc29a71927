"""Video files -> uint8 RGB frames at the model's size: the one decoder every layer uses.

``decode_clip`` (one window) and ``decode_clips`` (several windows of one video, opened once: the
training cache's case) are the one decoder of the runtime, export calibration / parity and the
training cache, so a model sees frames prepared the same way in training, calibration and on the
device.

Decisions (each one is a contract, changing it changes what the model sees):

- **Non-square frames: scale, then centre-crop.** The frame is scaled during decode (FFmpeg's
  swscale through ``VideoFrame.reformat``, area filter) so its *short* side equals ``size``, then
  the centre ``size x size`` square is kept. Egocentric action happens near the image centre
  (where the wearer looks); letterboxing would spend up to 44% of the visual tokens on black bars.
  A 4K frame is never materialised at full size in RGB: swscale converts and shrinks in one pass.
- **Rotation metadata** (phones record portrait as rotated landscape) is applied after the crop,
  so a portrait clip is seen upright.
- **Sampling: uniform over the window.** The window ``[start, end]`` (default: the whole clip) is
  cut into ``num_frames`` equal segments and, for each segment's centre, the frame on screen at
  that instant is taken (the training cache's rule, so train and serve sample alike).
- **Short clips: repeat, don't refuse.** A clip with fewer frames than ``num_frames`` (Ego-ExoClip
  clips average 0.68 s) has the same frame on screen at several segment centres, so frames repeat
  in time order (each is scaled once, then copied); a warning is logged. A window with no frame at
  all is refused.
- **Decode only what the samples need.** A demux-only pass finds the frame each sample shows and
  the keyframes; the decoder then jumps to the keyframe before the next shown frame when one lies
  ahead, and skips frames nothing shows or references (``skip_frame``). The pixels are those of a
  full decode (tests/test_video_input.py); a 60 s clip with a 1 s GOP samples 8 frames 6x faster.
- Anything FFmpeg can decode is accepted (H.264, HEVC, VP9, MJPEG, AV1, ...); a stream whose codec
  this FFmpeg build has no decoder for is refused with its name.
- **Hardware decoding where there is one.** :func:`clip_decoder` picks this module's decoder or a
  Jetson's NVDEC through GStreamer (:mod:`.video_nvdec`, same sampling and crop rules).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exo2ego_edge.runtime.errors import VideoError
from exo2ego_edge.runtime.sysinfo import usable_cores

log = logging.getLogger(__name__)

# swscale's area filter averages source pixels: the right filter for large downscales (4K -> 224).
_INTERPOLATION = "AREA"
VIDEO_DECODERS = ("auto", "software", "nvdec")


def thread_type(codec: str) -> str:
    """FFmpeg's decoder threading for a ``codec`` stream. Frame + slice threads (AUTO) keep several
    frames in flight. With two cores, H.264 clips sampled 1.1-1.5x faster on slice threads alone,
    while HEVC decoded as fast or faster on AUTO (benchmarks/results/video_threads.md), so only
    H.264 on at most two cores gets slice threads."""
    return "SLICE" if codec == "h264" and usable_cores() <= 2 else "AUTO"


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns without decoding: enough to validate a window and plan sampling."""

    path: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration: float | None  # seconds; None when the container does not say


def _open(path: str | os.PathLike):
    """Open a file with PyAV, turning every failure into one line that says what is wrong."""
    import av  # local: the CLI's --help must not pay for FFmpeg

    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such video file")
    if p.is_dir():
        raise VideoError(f"{p}: is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p}: file is empty (0 bytes)")
    try:
        container = av.open(str(p), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{p}: not a readable video (corrupt, truncated or not a video: {_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or stream.codec_context.name in (None, "", "none"):
        container.close()
        raise VideoError(f"{p}: video codec is not supported (no decoder in this FFmpeg build)")
    return container, stream


def _reason(e: Exception) -> str:
    # FFmpeg errors carry "[Errno N] Message: 'path'"; the message is the useful part.
    return getattr(e, "strerror", None) or str(e)


def _fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Codec, size, frame rate and duration of a video file (no frame is decoded)."""
    container, stream = _open(path)
    with container:
        cc = stream.codec_context
        return VideoInfo(
            path=str(path), codec=cc.name, width=cc.width, height=cc.height, fps=_fps(stream),
            duration=_duration(container, stream),
        )


def sample_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """Centres of ``num_frames`` equal segments of ``[start, end]``: the uniform sampling rule."""
    step = (end - start) / num_frames
    return start + step * (np.arange(num_frames) + 0.5)


def to_model_frame(frame, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """One decoded ``av.VideoFrame`` -> uint8 (size, size, 3) RGB: scale short side, centre-crop.

    Writes into ``out`` when given (a slot of the clip array), so each frame is copied once after
    swscale produced it.
    """
    w, h = frame.width, frame.height
    if w <= 0 or h <= 0:
        raise VideoError("decoded a frame with no pixels")
    scale = size / min(w, h)
    # Round the long side up so the crop always fits; keep both >= size.
    sw, sh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation=_INTERPOLATION).to_ndarray()
    y0, x0 = (sh - size) // 2, (sw - size) // 2
    crop = rgb[y0 : y0 + size, x0 : x0 + size]
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation:
        # The display matrix rotates counter-clockwise by `rotation` degrees to show the frame upright.
        crop = np.rot90(crop, k=rotation // 90)
    if out is None:
        return np.ascontiguousarray(crop)
    out[...] = crop
    return out


def decode_clip(
    path: str | os.PathLike,
    start: float | None = None,
    end: float | None = None,
    num_frames: int = 8,
    size: int = 224,
) -> np.ndarray:
    """Decode ``num_frames`` frames sampled uniformly over ``[start, end]`` (seconds; default the
    whole clip) as uint8 (T, size, size, 3) RGB, each scaled and centre-cropped to ``size``.

    Raises :class:`VideoError` with one line for a missing, empty, corrupt, truncated or
    unsupported file and for a window with no frames. A clip with fewer frames than ``num_frames``
    repeats frames (see the module docstring).
    """
    return decode_clips(path, [(start, end)], num_frames, size)[0]


def clip_decoder(name: str = "auto"):
    """The ``decode_clip`` a runtime uses: "software" (this module: FFmpeg on the CPU), "nvdec"
    (a Jetson's NVDEC through GStreamer; refused in one line where it is missing) or "auto" (NVDEC
    where present, falling back to software for a file it cannot decode; else software). Returns
    the function and the name of what it runs on."""
    if name not in VIDEO_DECODERS:
        raise VideoError(f"unknown video decoder '{name}'; choose one of: {', '.join(VIDEO_DECODERS)}")
    if name == "software":
        return decode_clip, "software"
    from exo2ego_edge.runtime import video_nvdec

    reason = video_nvdec.unavailable()
    if reason is not None:
        if name == "nvdec":
            raise VideoError(f"{reason}: {video_nvdec.SOFTWARE_HINT}")
        return decode_clip, "software"
    if name == "nvdec":
        return video_nvdec.decode_clip, "nvdec"

    def nvdec_or_software(path, start=None, end=None, num_frames=8, size=224) -> np.ndarray:
        try:
            return video_nvdec.decode_clip(path, start, end, num_frames, size)
        except VideoError as e:
            log.warning("%s: hardware decoding failed (%s); decoding in software", path, e)
            return decode_clip(path, start, end, num_frames, size)

    return nvdec_or_software, "nvdec"


def decode_clips(
    path: str | os.PathLike,
    windows: list[tuple[float | None, float | None]],
    num_frames: int = 8,
    size: int = 224,
) -> np.ndarray:
    """:func:`decode_clip` for several ``(start, end)`` windows of one video, opened once:
    uint8 (len(windows), T, size, size, 3). Each window is sought and sampled exactly as
    ``decode_clip`` does it, so the pixels are the same (the training cache's entry point: many
    clips are cut from one take)."""
    if num_frames < 1:
        raise VideoError(f"num_frames must be >= 1, got {num_frames}")
    if size < 1:
        raise VideoError(f"frame size must be >= 1, got {size}")
    for start, end in windows:
        if start is not None and start < 0:
            raise VideoError(f"start {start} s is negative")
        if start is not None and end is not None and end <= start:
            raise VideoError(f"end {end} s must be after start {start} s")

    out = np.empty((len(windows), num_frames, size, size, 3), dtype=np.uint8)
    container, stream = _open(path)
    with container:
        stream.thread_type = thread_type(stream.codec_context.name)
        duration = _duration(container, stream)
        scanned: float | None = None
        for w, (start, end) in enumerate(windows):
            t0 = float(start or 0.0)
            if duration is not None and t0 >= duration:
                raise VideoError(f"{path}: start {t0:g} s is past the end of the video ({duration:.2f} s)")
            t1 = float(end) if end is not None else duration
            if t1 is None:
                # Some containers (raw streams, live-recorded webm) do not state their duration:
                # find the last timestamp with a cheap demux-only pass, then sample as usual.
                if scanned is None:
                    scanned = _scan_duration(container, stream)  # _fill seeks back before decoding
                t1 = scanned
            if duration is not None:
                t1 = min(t1, duration)
            targets = sample_times(t0, t1, num_frames)
            filled = _fill(container, stream, targets, t0, t1, out[w], size, path)
            if filled < num_frames:
                log.warning("%s: only %d distinct frame(s) in the window; repeating frames to make %d",
                            path, filled, num_frames)
    return out


def _scan_duration(container, stream) -> float:
    last = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            last = max(last, end)
    return last


class _Candidate:
    """A decoded frame that may be shown at one or more target times."""

    __slots__ = ("frame", "slot")

    def __init__(self, frame) -> None:
        self.frame, self.slot = frame, None  # slot: the clip row it was first written to


class FramePicker:
    """Gives each target time the frame on screen at that instant (the last frame whose timestamp
    is <= t; the first frame for earlier times, the last for later), as frames arrive in time
    order; each frame is written into the clip once (``write(frame, row)``), a repeat is a copy.
    Shared by the software decoder and the hardware one (:mod:`.video_nvdec`)."""

    def __init__(self, targets: np.ndarray, t1: float, clip: np.ndarray, write) -> None:
        self.targets, self.t1, self.clip, self.write = targets, t1, clip, write
        self.k = 0  # targets given a frame so far
        self.prev: _Candidate | None = None
        self.distinct = 0

    def offer(self, t: float, frame) -> bool:
        """Take the frame shown from time ``t``; True when no later frame is needed."""
        if t > self.t1 and self.prev is not None:
            return True
        cur = _Candidate(frame)
        while self.k < len(self.targets) and self.targets[self.k] < t:
            self._put(self.prev if self.prev is not None else cur)
        if self.k == len(self.targets):
            return True
        self.prev = cur
        return False

    def finish(self, empty: str) -> int:
        """Targets after the last frame see the last frame; returns how many distinct frames were
        used (fewer than targets when the clip is short). ``empty``: the error when none came."""
        if self.prev is None:
            raise VideoError(empty)
        while self.k < len(self.targets):
            self._put(self.prev)
        return self.distinct

    def _put(self, c: _Candidate) -> None:
        if c.slot is None:  # scale + crop each frame once; a repeat is a plain copy
            self.write(c.frame, self.clip[self.k])
            c.slot = self.k
            self.distinct += 1
        else:
            self.clip[self.k] = self.clip[c.slot]
        self.k += 1


@dataclass
class _Plan:
    """What a demux-only pass over a window tells before any frame is decoded (reading packets
    costs little next to decoding them): the frames the targets will show, and the keyframes."""

    shown: set[int]  # pts of each target's frame: its last frame at or before it
    shown_times: list[float]  # their times, ascending
    keyframes: list[tuple[float, int]]  # (time, pts), ascending

    def jump(self, shown_after: float, packet_time: float) -> tuple[float, int] | None:
        """The keyframe to seek to, instead of decoding on from ``packet_time``, for the first
        shown frame after ``shown_after``: the last keyframe at or before it, when that is ahead."""
        i = bisect.bisect_right(self.shown_times, shown_after)
        if i == len(self.shown_times):
            return None
        j = bisect.bisect_right(self.keyframes, (self.shown_times[i], math.inf)) - 1
        return self.keyframes[j] if j >= 0 and self.keyframes[j][0] > packet_time else None


def _plan(container, stream, targets: np.ndarray, t1: float) -> _Plan | None:
    """The window's :class:`_Plan`; None when the stream lacks timestamps (then every frame is
    decoded, in order)."""
    times: dict[int, float] = {}
    keyframes = []
    for packet in container.demux(stream):
        if packet.pts is None or packet.time_base is None:
            if packet.size:
                return None
            continue
        times[packet.pts] = float(packet.pts * packet.time_base)
        if packet.is_keyframe:
            keyframes.append((times[packet.pts], packet.pts))
        if times[packet.pts] > t1 + 1.0:  # past the window by more than any B-frame reordering
            break
    if not times:
        return None
    order = sorted(times, key=times.get)
    ordered_times = [times[pts] for pts in order]
    shown = {order[max(bisect.bisect_right(ordered_times, t) - 1, 0)] for t in targets}
    return _Plan(shown, sorted(times[pts] for pts in shown), sorted(keyframes))


def _fill(container, stream, targets: np.ndarray, t0: float, t1: float, clip: np.ndarray,
          size: int, path) -> int:
    """Give each target time the frame on screen at that instant (:class:`FramePicker`), decoding
    as little as the stream allows: frames nothing shows or references are skipped, and the
    decoder jumps to the keyframe before the next shown frame when one lies ahead. Returns how
    many distinct frames were used (fewer than targets when the clip is short).
    """
    import av

    def seek(seconds: float) -> None:  # to the keyframe at or before this time
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)

    seek(t0)  # the container may have been read before: by an earlier window, or to find the duration
    plan = _plan(container, stream, targets, t1)
    seek(t0)
    fps = _fps(stream) or 30.0
    index = 0
    picker = FramePicker(targets, t1, clip, lambda frame, row: to_model_frame(frame, size, out=row))
    floor = -math.inf  # after a jump, frames the decoder returns from before the keyframe are not real
    codec = stream.codec_context
    try:
        for packet in container.demux(stream):
            if plan is not None and packet.pts is not None:
                # Every shown frame up to ``prev`` is out of the decoder, so a seek loses nothing.
                # Each keyframe is sought once: where the container seeks coarsely (no index), the
                # decoder then reads on from wherever the seek landed.
                key = plan.jump(picker.prev.frame.time if picker.prev is not None else -math.inf,
                                max(float(packet.pts * packet.time_base), floor))
                if key is not None:
                    container.seek(key[1], stream=stream, backward=True, any_frame=False)
                    floor = key[0]
                    continue
            # A frame no target shows and no other frame references need not be decoded at all.
            codec.skip_frame = "DEFAULT" if plan is None or packet.pts in plan.shown else "NONREF"
            done = False
            for frame in packet.decode():
                t = frame.time if frame.time is not None else index / fps
                index += 1
                if t >= floor and picker.offer(t, frame):
                    done = True
                    break
            if done:
                break
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: decoding failed ({_reason(e)}); the file may be truncated or corrupt") from None
    return picker.finish(f"{path}: no frames between {t0:g} s and {t1:g} s")
