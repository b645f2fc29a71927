"""Hardware video decoding on a Jetson: the NVDEC engine through GStreamer, used where present.

JetPack's GStreamer has NVIDIA's ``nvv4l2decoder`` (NVDEC: H.264, H.265, VP9, AV1 on Orin) and
``nvvidconv`` (the VIC: colour conversion and scaling), so a clip is decoded and scaled off the CPU
cores, which stay with the model. PyGObject (JetPack's ``python3-gi`` and
``gir1.2-gstreamer-1.0``) drives the pipeline; it is imported only here, when asked for:
``--video-decoder nvdec`` on a machine without it is refused in one line, ``auto`` quietly keeps
the software decoder (:mod:`.video`).

The contract is the software decoder's: the frame on screen at each uniformly sampled time
(:class:`~exo2ego_edge.runtime.video.FramePicker`, by presentation timestamp), short side scaled
to ``size``, centre-cropped, rotation metadata applied (``videoflip``; a centre square crop and a
quarter turn commute). The window is sought once, accurately: the hardware decodes from the
keyframe before it and GStreamer hands over frames from the one on screen at its start. Scaling
is the VIC's filter, not swscale's area filter, so pixels differ slightly from a software decode.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exo2ego_edge.runtime.errors import VideoError
from exo2ego_edge.runtime.video import FramePicker, probe, sample_times

log = logging.getLogger(__name__)

PULL_TIMEOUT_S = 10  # one frame; a stalled pipeline is an error, not a hang


@dataclass(frozen=True)
class Elements:
    """The GStreamer elements between the parsed stream and RGBA frames at a requested size."""

    decode: str
    convert: str

    @property
    def names(self) -> list[str]:
        return [part.split()[0] for part in f"{self.decode} ! {self.convert}".split("!")]


JETSON = Elements(decode="nvv4l2decoder", convert="nvvidconv")
SOFTWARE_HINT = "use --video-decoder software"


def _gst():
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError):
        raise VideoError("hardware video decoding needs GStreamer's Python bindings (python3-gi and "
                         "gir1.2-gstreamer-1.0, as JetPack has them), which this Python lacks") from None
    Gst.init(None)
    return Gst


def unavailable(elements: Elements = JETSON) -> str | None:
    """Why ``elements`` cannot decode here (one line, without the remedy), or None when they can."""
    try:
        gst = _gst()
    except VideoError as e:
        return str(e)
    missing = [name for name in elements.names if gst.ElementFactory.find(name) is None]
    if missing:
        return f"GStreamer here has no {', '.join(missing)} (NVIDIA's decoder and converter, which JetPack installs)"
    return None


def decode_clip(path: str | os.PathLike, start: float | None = None, end: float | None = None,
                num_frames: int = 8, size: int = 224, elements: Elements = JETSON) -> np.ndarray:
    """:func:`exo2ego_edge.runtime.video.decode_clip` on ``elements`` (NVDEC + VIC by default):
    uint8 (num_frames, size, size, 3) RGB. Raises :class:`VideoError` in one line when the
    elements are missing or the pipeline cannot decode the file."""
    reason = unavailable(elements)
    if reason:
        raise VideoError(f"{reason}: {SOFTWARE_HINT}")
    info = probe(path)  # PyAV, demux only: the size to scale to and the window's end
    t0 = float(start or 0.0)
    t1 = float(end) if end is not None else info.duration
    if info.duration is not None:
        if t0 >= info.duration:
            raise VideoError(f"{path}: start {t0:g} s is past the end of the video ({info.duration:.2f} s)")
        t1 = min(t1, info.duration)
    if t1 is None:
        raise VideoError(f"{path}: the container states no duration; pass the window's end ({SOFTWARE_HINT})")
    scale = size / min(info.width, info.height)
    width, height = max(size, round(info.width * scale)), max(size, round(info.height * scale))
    clip = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    picker = FramePicker(sample_times(t0, t1, num_frames), t1, clip, lambda rgba, row: _crop(rgba, size, row))
    _run(Path(path), elements, width, height, t0, picker)
    filled = picker.finish(f"{path}: no frames between {t0:g} s and {t1:g} s")
    if filled < num_frames:
        log.warning("%s: only %d distinct frame(s) in the window; repeating frames to make %d", path, filled, num_frames)
    return clip


def _crop(rgba: np.ndarray, size: int, out: np.ndarray) -> None:
    h, w = rgba.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    out[...] = rgba[y0 : y0 + size, x0 : x0 + size, :3]


def _run(path: Path, elements: Elements, width: int, height: int, t0: float, picker: FramePicker) -> None:
    """Decode from ``t0`` on, offering each frame to ``picker`` until it needs no more."""
    gst = _gst()
    pipeline = gst.parse_launch(
        f"filesrc name=src ! parsebin ! {elements.decode} ! {elements.convert} ! "
        f"video/x-raw,format=RGBA,width={width},height={height} ! videoflip video-direction=auto ! "
        "appsink name=sink sync=false max-buffers=4"
    )
    pipeline.get_by_name("src").set_property("location", str(path))
    sink = pipeline.get_by_name("sink")
    try:
        if pipeline.set_state(gst.State.PAUSED) == gst.StateChangeReturn.FAILURE:
            raise VideoError(f"{path}: GStreamer cannot open it with {elements.decode} ({_bus_error(pipeline, gst)})")
        pipeline.get_state(gst.CLOCK_TIME_NONE)  # preroll: caps negotiated, seekable
        flags = gst.SeekFlags.FLUSH | gst.SeekFlags.ACCURATE
        if t0 > 0 and not pipeline.seek_simple(gst.Format.TIME, flags, int(t0 * gst.SECOND)):
            raise VideoError(f"{path}: GStreamer could not seek to {t0:g} s")
        pipeline.set_state(gst.State.PLAYING)
        while True:
            sample = sink.emit("try-pull-sample", PULL_TIMEOUT_S * gst.SECOND)
            if sample is None:
                if sink.get_property("eos"):
                    return
                raise VideoError(f"{path}: hardware decoding stalled ({_bus_error(pipeline, gst)})")
            buffer = sample.get_buffer()
            if picker.offer(buffer.pts / gst.SECOND, _rgba(sample, buffer, gst)):
                return
    finally:
        pipeline.set_state(gst.State.NULL)


def _rgba(sample, buffer, gst) -> np.ndarray:
    """The sample's pixels as an (H, W, 4) array of its own (the buffer is recycled)."""
    caps = sample.get_caps().get_structure(0)
    width, height = caps.get_value("width"), caps.get_value("height")
    ok, mapped = buffer.map(gst.MapFlags.READ)
    if not ok:
        raise VideoError("could not read a decoded frame's pixels")
    try:
        data = np.frombuffer(mapped.data, dtype=np.uint8)
        stride = data.size // height  # rows may be padded past width * 4
        return data.reshape(height, stride)[:, : width * 4].reshape(height, width, 4).copy()
    finally:
        buffer.unmap(mapped)


def _bus_error(pipeline, gst) -> str:
    message = pipeline.get_bus().pop_filtered(gst.MessageType.ERROR)
    if message is None:
        return "no error message"
    error, _ = message.parse_error()
    return error.message
