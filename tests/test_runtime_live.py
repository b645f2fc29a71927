"""Live sources: a file played at real-time pace answers a standing question periodically, each
taken frame encoded once; network sources are time-limited, never a hang."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from exo2ego_edge.runtime.errors import SourceError
from exo2ego_edge.runtime.live import answer_live, default_interval, open_source
from helpers.videos import write_test_mp4


def test_file_at_real_time_pace_gives_periodic_answers(runtime, tmp_path):
    clip = write_test_mp4(tmp_path / "live.mp4", frames=25, size=(48, 32), fps=10)  # 2.5 s
    every = 1.0
    interval = default_interval(every, runtime.num_frames)
    calls0, frames0 = runtime.vision.calls, runtime.vision.frames_encoded
    t0 = time.monotonic()
    frames = open_source(str(clip), runtime.image_size, interval)
    answers = list(answer_live(runtime, frames, "What am I doing?", every, max_new_tokens=4))
    wall = time.monotonic() - t0
    assert wall >= 2.0, "a file source plays at real-time pace"
    assert len(answers) == 2 and answers[0].time_s >= every and answers[1].time_s >= 2 * every
    assert all(a.frames_in_window == runtime.num_frames for a in answers)
    encoded = runtime.vision.frames_encoded - frames0
    # Each taken frame went through the vision graph exactly once, one frame per call.
    assert runtime.vision.calls - calls0 == encoded >= answers[-1].frames_encoded
    assert encoded <= 2.5 / interval + 1


def _silent_server() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    # Accept and never answer: the client must give up by itself.
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    return server, port


def test_network_source_is_time_limited():
    server, port = _silent_server()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open"):
        list(open_source(f"http://127.0.0.1:{port}/stream.mp4", 32, 0.25, timeout_s=1.0))
    assert time.monotonic() - t0 < 10
    server.close()


def test_missing_source_and_camera_without_opencv(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nothing.mp4"), 32, 0.25)
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="OpenCV"):
            open_source("0", 32, 0.25)
