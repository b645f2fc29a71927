"""The Ego-Exo4D reader: takes, descriptions, every real-file quirk, videos, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers.videos import build_quirk_root, write_audio_only_mp4, write_corrupt_mp4, write_test_mp4

from exo2ego_edge.errors import UserError
from exo2ego_edge.data.egoexo4d import (
    Description,
    VideoError,
    available_splits,
    parse_flag,
    probe_video,
    read_descriptions,
    read_takes,
    resolve_video,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_quirk_root(tmp_path_factory.mktemp("egoexo4d") / "root")


def _minimal_root(tmp_path: Path) -> Path:
    (tmp_path / "annotations").mkdir(parents=True)
    (tmp_path / "takes.json").write_text("[]")
    (tmp_path / "annotations" / "atomic_descriptions_train.json").write_text('{"annotations": {}}')
    return tmp_path


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True), (False, False), (1, True), (0, False),
        ("1", True), ("0", False), ("true", True), ("false", False),
        ("True", True), ("FALSE", False), (" 1 ", True), ("", False),
    ],
)
def test_parse_flag_accepts_every_stored_form(value: object, expected: bool) -> None:
    assert parse_flag(value) is expected


def test_parse_flag_none_is_default_and_garbage_is_an_error() -> None:
    assert parse_flag(None) is False
    assert parse_flag(None, default=True) is True
    for bad in ("maybe", 2, [], {}):
        with pytest.raises(ValueError):
            parse_flag(bad)


# ----------------------------------------------------------------------------- takes


def test_read_takes(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        takes = read_takes(root)
    # The take without take_uid is skipped with one warning, not a crash.
    assert list(takes) == ["uid-a", "uid-b", "uid-c", "uid-d", "uid-e"]
    assert [r.message for r in caplog.records] == [
        f"{root / 'takes.json'}: skipped 1 take(s) without take_uid or root_dir"
    ]
    a, b = takes["uid-a"], takes["uid-b"]
    assert (a.take_name, a.root_dir, a.task_name, a.duration_sec) == ("kitchen_a", "takes/kitchen_a", "Cooking", 10.0)
    # Real takes lack sim_text_side: treated as "all"; simulator takes carry it.
    assert a.text_side == "all" and b.text_side == "exo" and takes["uid-e"].text_side == "ego"
    assert a.ego_cam == "aria01"
    # collage and the aria slam stream are not exo cameras.
    assert a.exo_cams == ["cam01", "cam02", "cam03"]
    assert a.videos["aria01"] == {
        "rgb": "frame_aligned_videos/aria01_214-1.mp4",
        "slam-left": "frame_aligned_videos/aria01_1201-1.mp4",
    }
    assert a.best_exo is None and b.best_exo == "cam02"


def test_read_takes_rejects_unknown_text_side(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "takes.json").write_text(json.dumps([{"take_uid": "u", "root_dir": "t", "sim_text_side": "both"}]))
    with pytest.raises(UserError, match=r"take u has sim_text_side 'both', expected one of exo/ego/none/all"):
        read_takes(root)


# ----------------------------------------------------------------------------- descriptions


def test_read_descriptions_train_quirks(root: Path) -> None:
    d = read_descriptions(root, "train")
    assert d.annotations == 8
    assert d.annotations_rejected == 3  # false/"0"/0 kept; true, "1", "true" rejected
    assert dict(d.dropped) == {"rejected": 4, "unsure": 3, "empty_text": 1, "bad_flag": 1}
    assert d.kept == 12 and d.total == 21
    assert list(d.by_take) == ["uid-a", "uid-b", "uid-c", "uid-d", "uid-ghost"]
    assert [x.text for x in d.by_take["uid-a"]] == [
        "C picks up the red cup.",
        "C puts the red cup in the blue bowl.",
        "C turns left.",
        "The man hands C a Cup.",
        "C wipes the table with a cloth.",
        "C checks the Clock, then C nods.",
        "C opens the door.",  # timestamp 12 > duration: the clip builder drops it, not the reader
    ]
    # String flags and the narration_subject spelling (take B).
    assert d.by_take["uid-b"] == [
        Description("uid-b", "C picks up the green apple.", 0.2, "C", True, "cam01"),
        Description("uid-b", "C places the green apple on the white plate.", 2.9, "C", False, None),
    ]
    a = d.by_take["uid-a"]
    assert [x.best_exo for x in a] == ["cam02", "cam01", None, "cam03", "cam09", "cam02", "cam01"]
    assert [x.ego_visible for x in a][:3] == [True, True, False]
    # Integer 0/1 flags (take D).
    assert d.by_take["uid-d"] == [Description("uid-d", "C closes the fridge.", 1.0, "C", True, None)]


def test_read_descriptions_val_and_available_splits(root: Path) -> None:
    assert available_splits(root) == ["train", "val"]
    d = read_descriptions(root, "val")
    assert (d.annotations, d.kept, dict(d.dropped)) == (1, 1, {})
    assert d.by_take["uid-e"][0].text == "C turns right."


# ----------------------------------------------------------------------------- videos


def test_resolve_video_prefers_downscaled(root: Path) -> None:
    takes = read_takes(root)
    a, c = takes["uid-a"], takes["uid-c"]
    fav = root / "takes" / "kitchen_a" / "frame_aligned_videos"
    # Only the downscaled aria file exists; cam01 has both (downscaled wins); cam02 only full-res.
    assert resolve_video(root, a, "aria01") == fav / "downscaled" / "448" / "aria01_214-1.mp4"
    assert resolve_video(root, a, "cam01") == fav / "downscaled" / "448" / "cam01.mp4"
    assert resolve_video(root, a, "cam02") == fav / "cam02.mp4"
    assert resolve_video(root, a, "aria01", "slam-left") == fav / "aria01_1201-1.mp4"
    # Missing files still resolve (the probe reports them); unlisted cameras do not.
    assert resolve_video(root, c, "aria01") == root / "takes/missing_c/frame_aligned_videos/aria01_214-1.mp4"
    assert resolve_video(root, a, "cam09") is None
    assert resolve_video(root, a, "cam01", "1") is None


def test_probe_video_good(tmp_path: Path) -> None:
    info = probe_video(write_test_mp4(tmp_path / "v.mp4", frames=8, size=(32, 24), fps=4))
    assert (info.width, info.height, info.fps) == (32, 24, 4.0)
    assert info.duration == pytest.approx(2.0)


def test_probe_video_problems(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases = {
        tmp_path / "nope.mp4": "missing",
        tmp_path / "empty.mp4": "empty file",
        write_corrupt_mp4(tmp_path / "bad.mp4"): "unreadable (InvalidDataError: Invalid data found when processing input)",
        write_audio_only_mp4(tmp_path / "audio.mp4"): "no video stream",
    }
    for path, problem in cases.items():
        with pytest.raises(VideoError) as e:
            probe_video(path)
        assert str(e.value) == problem


# ----------------------------------------------------------------------------- bad input


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^data root .*nowhere does not exist$"):
        read_takes(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        read_descriptions(tmp_path / "file", "train")


def test_missing_takes_json(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "takes.json").unlink()
    with pytest.raises(UserError, match=r"takes\.json: file not found$"):
        read_takes(root)


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "takes.json").write_text('[\n  {"take_uid": "u",\n  "root_dir" "x"}\n]')
    with pytest.raises(UserError) as e:
        read_takes(root)
    assert str(e.value) == (
        f"{root / 'takes.json'}: invalid JSON at line 3 column 14 (char 35): Expecting ':' delimiter"
    )
    split_file = root / "annotations" / "atomic_descriptions_train.json"
    split_file.write_text('{"annotations": {"u": [}')
    with pytest.raises(UserError, match=r"atomic_descriptions_train\.json: invalid JSON at line 1 column 24"):
        read_descriptions(root, "train")


def test_wrong_json_shapes(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "takes.json").write_text('{"takes": []}')
    with pytest.raises(UserError, match="expected a JSON list of takes, got dict"):
        read_takes(root)
    (root / "annotations" / "atomic_descriptions_train.json").write_text("[]")
    with pytest.raises(UserError, match='expected an object with an "annotations" mapping'):
        read_descriptions(root, "train")


def test_missing_split_file_lists_available(root: Path) -> None:
    with pytest.raises(UserError) as e:
        read_descriptions(root, "test")
    assert str(e.value) == (
        f"no atomic descriptions for split 'test': {root}/annotations/atomic_descriptions_test.json"
        " not found (available: train, val)"
    )
    assert "\n" not in str(e.value)
