"""Video files -> model frames: containers and codecs, crop policy, sampling, and every bad input."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exo2ego_edge.runtime.errors import VideoError
from exo2ego_edge.runtime.video import decode_clip, decode_clips, probe
from helpers.videos import write_test_mp4


def write_video(path: Path, frames: list[np.ndarray], codec: str, fps: int = 10, pix_fmt: str = "yuv420p") -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for img in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def solid(h: int, w: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


@pytest.mark.parametrize("name,codec,pix_fmt", [
    ("clip.mp4", "libx264", "yuv420p"),
    ("clip.mkv", "libx264", "yuv420p"),
    ("clip.webm", "libvpx-vp9", "yuv420p"),
    ("clip.avi", "mjpeg", "yuvj420p"),
    ("clip_hevc.mp4", "libx265", "yuv420p"),
])
def test_containers_and_codecs(tmp_path, name, codec, pix_fmt):
    frames = [solid(32, 48, 20 * i) for i in range(10)]
    if codec == "libx265":
        # libx265 aborts the process when it is not the first encoder a process opened (seen with
        # PyAV 18's bundled build): write the HEVC file in a fresh interpreter.
        script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import numpy as np; "
                  f"from test_video_input import write_video, solid; "
                  f"write_video(__import__('pathlib').Path({str(tmp_path / name)!r}), "
                  f"[solid(32, 48, 20 * i) for i in range(10)], 'libx265')")
        subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)
        path = tmp_path / name
    else:
        path = write_video(tmp_path / name, frames, codec, pix_fmt=pix_fmt)
    clip = decode_clip(path, num_frames=5, size=16)
    assert clip.shape == (5, 16, 16, 3) and clip.dtype == np.uint8
    # Uniform sampling: centres of 5 segments of 1 s at 10 fps -> frames 1, 3, 5, 7, 9.
    np.testing.assert_allclose(clip[:, 8, 8, 0], [20, 60, 100, 140, 180], atol=12)


def test_portrait_is_centre_cropped(tmp_path):
    # A portrait frame: red bands top and bottom, a green square in the middle.
    img = solid(96, 48, 0)
    img[:24] = img[72:] = (255, 0, 0)
    img[24:72] = (0, 255, 0)
    path = write_video(tmp_path / "portrait.mp4", [img] * 3, "libx264")
    clip = decode_clip(path, num_frames=2, size=24)
    centre = clip[:, 2:-2, 2:-2].reshape(-1, 3).mean(0)
    assert centre[1] > 200 and centre[0] < 40  # only the middle (green) square survives


def test_4k_frame_is_scaled_during_decode(tmp_path):
    path = write_video(tmp_path / "uhd.mp4", [solid(2160, 3840, 128)], "libx264")
    clip = decode_clip(path, num_frames=4, size=32)
    assert clip.shape == (4, 32, 32, 3)
    assert abs(int(clip.mean()) - 128) < 8


def test_short_video_repeats_frames_with_a_warning(tmp_path, caplog):
    path = write_video(tmp_path / "short.mp4", [solid(16, 16, 40), solid(16, 16, 200)], "libx264")
    with caplog.at_level(logging.WARNING):
        clip = decode_clip(path, num_frames=6, size=16)
    assert "repeating frames" in caplog.text
    values = clip[:, 8, 8, 0].astype(int)
    assert len(set(values.tolist())) <= 2 and values[0] < 100 < values[-1]  # in time order


def test_time_window(tmp_path):
    path = write_video(tmp_path / "long.mp4", [solid(16, 16, 10 * i) for i in range(20)], "libx264")
    clip = decode_clip(path, start=1.0, end=2.0, num_frames=2, size=16)  # frames at 1.25 s, 1.75 s
    np.testing.assert_allclose(clip[:, 8, 8, 0], [120, 170], atol=12)
    with pytest.raises(VideoError, match="past the end"):
        decode_clip(path, start=5.0, num_frames=2, size=16)
    with pytest.raises(VideoError, match="after start"):
        decode_clip(path, start=1.0, end=0.5)


def test_many_windows_of_one_video_decode_as_each_alone(tmp_path):
    # Out of order, so later windows seek backwards (and rewind for a window from 0 s).
    path = write_test_mp4(tmp_path / "long.mp4", frames=40, size=(48, 32), fps=10)
    windows = [(2.0, 2.6), (0.3, 1.1), (None, 0.5), (3.1, None), (1.0, 1.05)]
    many = decode_clips(path, windows, num_frames=3, size=16)
    assert many.shape == (5, 3, 16, 16, 3)
    for got, (start, end) in zip(many, windows):
        np.testing.assert_array_equal(got, decode_clip(path, start, end, num_frames=3, size=16))


def _truncated(tmp_path: Path) -> Path:
    good = write_test_mp4(tmp_path / "good.mp4", frames=20)
    data = good.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _unsupported_codec(tmp_path: Path) -> Path:
    # Same-length rewrite of Matroska's CodecID: a well-formed file whose codec no decoder knows.
    mkv = write_video(tmp_path / "ok.mkv", [solid(16, 16, 50)] * 3, "libx264")
    data = mkv.read_bytes()
    assert b"V_MPEG4/ISO/AVC" in data
    bad = tmp_path / "unknown_codec.mkv"
    bad.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QUUX/NOTACODE"))
    return bad


@pytest.mark.parametrize("case,message", [
    ("missing", "no such video file"),
    ("empty", "empty"),
    ("text", "not a readable video"),
    ("truncated", "truncated"),
    ("codec", "codec"),
    ("folder", "folder"),
])
def test_bad_files_raise_one_line_video_errors(tmp_path, case, message):
    path = tmp_path / "bad.mp4"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello\n" * 50)
    elif case == "truncated":
        path = _truncated(tmp_path)
    elif case == "codec":
        path = _unsupported_codec(tmp_path)
    elif case == "folder":
        path = tmp_path
    with pytest.raises(VideoError, match=message) as e:
        decode_clip(path, num_frames=4, size=16)
    assert "\n" not in str(e.value)


def test_probe(tmp_path):
    info = probe(write_test_mp4(tmp_path / "p.mp4", frames=10, size=(64, 48), fps=10))
    assert (info.codec, info.width, info.height, info.fps) == ("h264", 64, 48, 10.0)
    assert info.duration == pytest.approx(1.0, abs=0.15)


def write_x264(path: Path, frames: list[np.ndarray], fps: int, params: str) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"x264-params": params}
        for img in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return path


@pytest.mark.parametrize("threads", ["SLICE", "AUTO"])
@pytest.mark.parametrize("params", ["bframes=3", "keyint=6:open-gop=1:bframes=3", "keyint=4:bframes=0"])
def test_frames_skipped_by_the_decoder_are_never_the_ones_shown(tmp_path, monkeypatch, params, threads):
    """The sampler leaves unreferenced frames undecoded (skip_frame) and jumps to the keyframe before
    the next frame it shows: every sampled frame must still be the one on screen at its time, as a
    full decode shows it (B-frames, one keyframe; open GOPs every 6 frames; I/P every 4), with
    slice threads and with frame threads (frames in flight when skip_frame changes per packet)."""
    import av

    from exo2ego_edge.runtime import video
    from exo2ego_edge.runtime.video import _plan, sample_times, to_model_frame

    monkeypatch.setattr(video, "thread_type", lambda codec: threads)

    base = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = [np.roll(base, 2 * i, axis=1) for i in range(45)]  # smooth motion: the encoder picks B-frames
    path = write_x264(tmp_path / "clip.mp4", frames, 15, params)
    with av.open(str(path)) as c:
        decoded = [(f.time, to_model_frame(f, 32)) for f in c.decode(video=0)]
    assert len(decoded) == 45
    with av.open(str(path)) as c:  # the shortcuts are really taken, or this tests nothing
        stream = c.streams.video[0]
        plan = _plan(c, stream, sample_times(0.0, 3.0, 3), 3.0)
        if "keyint" in params:
            assert plan.jump(-1.0, 0.0)[0] > 0  # straight to the keyframe before the first sample
        else:
            c.seek(0)
            stream.codec_context.skip_frame = "NONREF"
            assert len(list(c.decode(stream))) < 45
    for n, window in ((7, (None, None)), (5, (0.4, 2.1)), (16, (1.0, 2.9)), (3, (0.0, 3.0))):
        start, end = window[0] or 0.0, window[1] or decoded[-1][0] + 1 / 15
        want = [next(img for t, img in reversed(decoded) if t <= target) for target in sample_times(start, end, n)]
        np.testing.assert_array_equal(decode_clip(path, *window, num_frames=n, size=32), np.stack(want))


# --- hardware decoding (runtime/video_nvdec.py) -------------------------------------------------
def test_nvdec_is_refused_in_one_line_where_missing_and_auto_keeps_software():
    from exo2ego_edge.runtime import video_nvdec
    from exo2ego_edge.runtime.video import clip_decoder

    reason = video_nvdec.unavailable()
    if reason is None:
        pytest.skip("this machine has NVIDIA's GStreamer decoder: nothing to refuse")
    assert "\n" not in reason
    with pytest.raises(VideoError, match=re.escape(f"{reason}: use --video-decoder software")):
        clip_decoder("nvdec")
    assert clip_decoder("auto") == (decode_clip, "software")
    with pytest.raises(VideoError, match="unknown video decoder 'vaapi'"):
        clip_decoder("vaapi")


# The NVDEC pipeline with GStreamer's software decoder and scaler in place of NVIDIA's elements:
# the same seek, timestamps, sampling and crop, where GStreamer and its Python bindings exist.
GSTREAMER_SOFTWARE = ("avdec_h264", "videoconvert ! videoscale")


def _gstreamer_software():
    from exo2ego_edge.runtime import video_nvdec

    elements = video_nvdec.Elements(*GSTREAMER_SOFTWARE)
    reason = video_nvdec.unavailable(elements)
    if reason:
        pytest.skip(f"no GStreamer with libav here ({reason})")
    return video_nvdec, elements


@pytest.mark.parametrize("window", [(None, None), (1.05, 2.6), (0.0, 0.3)])
def test_gstreamer_pipeline_samples_the_frames_the_software_decoder_samples(tmp_path, window):
    video_nvdec, elements = _gstreamer_software()
    path = write_test_mp4(tmp_path / "clip.mp4", frames=40, size=(96, 64), fps=10)
    start, end = window
    want = decode_clip(path, start, end, num_frames=6, size=32)
    got = video_nvdec.decode_clip(path, start, end, num_frames=6, size=32, elements=elements)
    assert got.shape == want.shape == (6, 32, 32, 3) and got.dtype == np.uint8
    # Scalers differ by a few levels; a wrong frame differs by 17 levels of flat colour and its bar.
    distance = np.abs(got[:, None].astype(int) - want[None].astype(int)).mean(axis=(2, 3, 4))
    for i in range(6):
        assert distance[i, i] < 4 and distance[i, i] == distance[i].min(), distance.round(1)
