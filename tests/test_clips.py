"""Ego-ExoClip builder, instructions, stats and the `data build-clips` / `data stats` CLI.

The quirk fixture (tests/fixtures/egoexo4d_quirks + tests/helpers/videos.py) is built once per
module; every expected row below is spelled out so a behaviour change shows up as a diff.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.videos import QUIRK_FIXTURE, build_quirk_root

from exo2ego_edge.cli import cli, main
from exo2ego_edge.errors import UserError
from exo2ego_edge.data import clips as clips_mod
from exo2ego_edge.data.clips import (
    build_clips,
    clip_stats,
    clip_window,
    dataset_stats,
    default_instructions_path,
    format_stats,
    read_jsonl,
)
from exo2ego_edge.data.instructions import (
    Action,
    Instruction,
    base_form,
    first_person,
    ing_form,
    make_instructions,
    parse_description,
    rewrite_wearer,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_quirk_root(tmp_path_factory.mktemp("clips") / "root")


def _fav(root: Path, take: str, name: str, small: bool = False) -> str:
    folder = root / "takes" / take / "frame_aligned_videos"
    return str(folder / "downscaled" / "448" / name if small else folder / name)


A_TEXTS = [  # (timestamp, rewritten text, ego_visible, best_exo)
    (1.0, "The camera wearer picks up the red cup.", True, "cam02"),
    (2.5, "The camera wearer puts the red cup in the blue bowl.", True, "cam01"),
    (4.0, "The camera wearer turns left.", False, None),
    (5.0, "The man hands the camera wearer a Cup.", True, "cam03"),
    (6.0, "The camera wearer wipes the table with a cloth.", True, "cam09"),
    (7.0, "The camera wearer checks the Clock, then the camera wearer nods.", True, "cam02"),
]
B_TEXTS = [  # (timestamp, start, end, text, ego_visible, best_exo (take-level for the 2nd))
    (0.2, 0.0, 0.7, "The camera wearer picks up the green apple.", True, "cam01"),
    (2.9, 2.4, 3.0, "The camera wearer places the green apple on the white plate.", False, "cam02"),
]


def _expected_rows(root: Path, best_exo_only: bool = False) -> list[dict]:
    a_ego = _fav(root, "kitchen_a", "aria01_214-1.mp4", small=True)
    a_exo = {"cam01": _fav(root, "kitchen_a", "cam01.mp4", small=True), "cam02": _fav(root, "kitchen_a", "cam02.mp4")}
    b_ego = _fav(root, "bike_b", "aria01_214-1.mp4")
    b_exo = {c: _fav(root, "bike_b", f"{c}.mp4") for c in ("cam01", "cam02")}
    rows = []
    for ts, text, visible, best in A_TEXTS:
        for cam in ([best] if best in a_exo else []) if best_exo_only else ["cam01", "cam02"]:
            rows.append(
                {"take_uid": "uid-a", "take_name": "kitchen_a", "split": "train", "ego_video": a_ego,
                 "exo_video": a_exo[cam], "exo_cam": cam, "start": ts - 0.5, "end": ts + 0.5,
                 "timestamp": ts, "text": text, "text_side": "all", "ego_visible": visible,
                 "is_best_exo": cam == best}
            )
    for ts, start, end, text, visible, best in B_TEXTS:
        for cam in [best] if best_exo_only else ["cam01", "cam02"]:
            rows.append(
                {"take_uid": "uid-b", "take_name": "bike_b", "split": "train", "ego_video": b_ego,
                 "exo_video": b_exo[cam], "exo_cam": cam, "start": start, "end": end,
                 "timestamp": ts, "text": text, "text_side": "exo", "ego_visible": visible,
                 "is_best_exo": cam == best}
            )
    return rows


def _expected_instructions(root: Path) -> list[dict]:
    a_ego = _fav(root, "kitchen_a", "aria01_214-1.mp4", small=True)
    b_ego = _fav(root, "bike_b", "aria01_214-1.mp4")
    qa = [  # (take, ego, start, end, text, question, answer, verb, object, template)
        ("uid-a", a_ego, 0.5, 1.5, A_TEXTS[0][1], "What am I doing?", "I am picking up the red cup.", "pick up", "cup", "doing"),
        ("uid-a", a_ego, 0.5, 1.5, A_TEXTS[0][1], "What did I just pick up?", "The red cup.", "pick up", "cup", "just"),
        ("uid-a", a_ego, 0.5, 1.5, A_TEXTS[0][1], "What object am I holding?", "The red cup.", "pick up", "cup", "holding"),
        ("uid-a", a_ego, 2.0, 3.0, A_TEXTS[1][1], "What am I doing?", "I am putting the red cup in the blue bowl.", "put", "cup", "doing"),
        ("uid-a", a_ego, 2.0, 3.0, A_TEXTS[1][1], "What did I just put in the blue bowl?", "The red cup.", "put", "cup", "just"),
        ("uid-a", a_ego, 2.0, 3.0, A_TEXTS[1][1], "Where am I putting the red cup?", "In the blue bowl.", "put", "cup", "where"),
        ("uid-a", a_ego, 3.5, 4.5, A_TEXTS[2][1], "What am I doing?", "I am turning left.", "turn", None, "doing"),
        ("uid-a", a_ego, 3.5, 4.5, A_TEXTS[2][1], "Which way am I turning?", "Left.", "turn", None, "turn"),
        # "The man hands C a Cup." and "C checks the Clock, then C nods." give no instruction.
        ("uid-a", a_ego, 5.5, 6.5, A_TEXTS[4][1], "What am I doing?", "I am wiping the table with a cloth.", "wipe", None, "generic"),
        ("uid-b", b_ego, 0.0, 0.7, B_TEXTS[0][3], "What am I doing?", "I am picking up the green apple.", "pick up", "apple", "doing"),
        ("uid-b", b_ego, 0.0, 0.7, B_TEXTS[0][3], "What did I just pick up?", "The green apple.", "pick up", "apple", "just"),
        ("uid-b", b_ego, 0.0, 0.7, B_TEXTS[0][3], "What object am I holding?", "The green apple.", "pick up", "apple", "holding"),
        ("uid-b", b_ego, 2.4, 3.0, B_TEXTS[1][3], "What am I doing?", "I am placing the green apple on the white plate.", "place", "apple", "doing"),
        ("uid-b", b_ego, 2.4, 3.0, B_TEXTS[1][3], "What did I just place on the white plate?", "The green apple.", "place", "apple", "just"),
        ("uid-b", b_ego, 2.4, 3.0, B_TEXTS[1][3], "Where am I placing the green apple?", "On the white plate.", "place", "apple", "where"),
    ]
    return [
        {"take_uid": t, "split": "train", "ego_video": ego, "start": s, "end": e, "question": q,
         "answer": a, "text_side": "all" if t == "uid-a" else "exo", "verb": v, "object": o,
         "template": tpl, "text": text}
        for t, ego, s, e, text, q, a, v, o, tpl in qa
    ]


# ----------------------------------------------------------------------------- instructions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The man hands C a towel.", "The man hands the camera wearer a towel."),
        ("C picks up the Cup. C drops it.", "The camera wearer picks up the Cup. The camera wearer drops it."),
        ("C's hand holds the C-shaped ABC Clip.", "The camera wearer's hand holds the C-shaped ABC Clip."),
        ("Chef C stirs.", "Chef the camera wearer stirs."),
        ("CC and CAT stay", "CC and CAT stay"),
    ],
)
def test_rewrite_wearer_only_whole_word_c(text: str, expected: str) -> None:
    assert rewrite_wearer(text) == expected


def test_rewrite_wearer_custom() -> None:
    assert rewrite_wearer("C waves at X, then X waves at C.", "the user") == (
        "The user waves at X, then X waves at the user."
    )


def test_parse_description_patterns() -> None:
    assert parse_description("C picks up the red cup.") == Action("pick up", "picking up", "cup", "red")
    assert parse_description("C puts the red cup in the blue bowl.") == Action(
        "put", "putting", "cup", "red", "in", "bowl", "blue"
    )
    assert parse_description("C places the knife next to the cutting board") == Action(
        "place", "placing", "knife", None, "next to", "cutting board", None
    )
    assert parse_description("C turns right.") == Action("turn", "turning", None, direction="right")
    for text in ("C wipes the table with a cloth.", "The man hands C a cup.", "C turns around.", "C is here."):
        assert parse_description(text) is None


def test_verb_forms() -> None:
    assert [base_form(v) for v in ("picks", "washes", "carries", "places", "closes", "goes", "passes")] == [
        "pick", "wash", "carry", "place", "close", "go", "pass"
    ]
    assert [ing_form(v) for v in ("put", "stir", "open", "place", "tie", "see", "pick", "mix")] == [
        "putting", "stirring", "opening", "placing", "tying", "seeing", "picking", "mixing"
    ]


def test_first_person() -> None:
    assert first_person("C wipes the table with a cloth.") == "I am wiping the table with a cloth."
    assert first_person("C stirs the pot") == "I am stirring the pot."
    assert first_person("C is in the kitchen.") == "I am in the kitchen."
    assert first_person("C checks the Clock, then C nods.") is None  # second clause about C
    assert first_person("The man hands C a cup.") is None
    assert first_person("C walk.") is None


def test_make_instructions_holding_only_for_holding_verbs() -> None:
    assert [i.template for i in make_instructions("C opens the fridge.")] == ["doing", "just"]
    assert make_instructions("C carries the box.")[-1] == Instruction(
        "What object am I holding?", "The box.", "carry", "box", "holding"
    )
    assert make_instructions("The man hands C a cup.") == []


# ----------------------------------------------------------------------------- build


def test_clip_window_clamps() -> None:
    assert clip_window(5.0, 1.0, 10.0) == (4.5, 5.5)
    assert clip_window(0.2, 1.0, 3.0) == (0.0, 0.7)
    assert clip_window(2.9, 1.0, 3.0) == (2.4, 3.0)
    assert clip_window(1.0, 3.0, 2.0) == (0.0, 2.0)
    assert clip_window(1.0, 0.5, None) == (0.75, 1.25)


def test_build_exact_rows(root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "clips.jsonl"
    with caplog.at_level(logging.WARNING, logger="exo2ego_edge"):
        report = build_clips(root, "train", out, progress=False)
    assert read_jsonl(out) == _expected_rows(root)
    instr = tmp_path / "clips.instructions.jsonl"
    assert report.instructions_out == instr == default_instructions_path(out)
    assert read_jsonl(instr) == _expected_instructions(root)
    # One warning line per bad video, naming the file and the problem; missing_c's exo video
    # is not probed at all because its ego video is already missing.
    warnings = [r.getMessage() for r in caplog.records if r.name == "exo2ego_edge.data.clips"]
    assert warnings == [
        f"take kitchen_a: exo camera cam03 skipped: {_fav(root, 'kitchen_a', 'cam03.mp4')}: "
        "unreadable (InvalidDataError: Invalid data found when processing input)",
        f"take missing_c skipped: ego video {_fav(root, 'missing_c', 'aria01_214-1.mp4')}: missing",
        f"take corrupt_d skipped: ego video {_fav(root, 'corrupt_d', 'aria01_214-1.mp4')}: "
        "unreadable (InvalidDataError: Invalid data found when processing input)",
    ]
    assert report.clips == 16 and report.instructions == 15
    assert (report.takes_with_descriptions, report.takes_used) == (5, 2)
    assert dict(report.takes_skipped) == {"not_in_takes_json": 1, "ego_video_bad": 2}
    assert (report.descriptions_read, report.descriptions_used) == (21, 8)
    assert dict(report.descriptions_dropped) == {
        "rejected": 4, "unsure": 3, "empty_text": 1, "bad_flag": 1,
        "take_skipped": 3, "timestamp_outside_take": 1,
    }
    assert report.videos_probed == 9  # 4 (kitchen_a) + 3 (bike_b) + 1 + 1 ego-only
    assert [p for p, _ in report.bad_videos] == [
        _fav(root, "kitchen_a", "cam03.mp4"),
        _fav(root, "missing_c", "aria01_214-1.mp4"),
        _fav(root, "corrupt_d", "aria01_214-1.mp4"),
    ]
    assert report.exo_cams_skipped == 1
    assert (report.instructions_generic, report.instructions_unparsed) == (1, 2)
    assert dict(report.text_sides) == {"all": 12, "exo": 4}
    assert dict(report.clip_rows_skipped) == {}


def test_build_best_exo_only(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "best.jsonl"
    report = build_clips(root, "train", out, best_exo_only=True, progress=False)
    rows = read_jsonl(out)
    assert rows == _expected_rows(root, best_exo_only=True)
    assert [(r["take_uid"], r["exo_cam"], r["start"]) for r in rows] == [
        ("uid-a", "cam02", 0.5), ("uid-a", "cam01", 2.0), ("uid-a", "cam02", 6.5),
        ("uid-b", "cam01", 0.0), ("uid-b", "cam02", 2.4),  # take-level best_exo fallback
    ]
    assert dict(report.clip_rows_skipped) == {
        "no_best_exo": 1, "best_exo_bad_video": 1, "best_exo_not_in_take": 1,
    }
    # Takes C and D name no best exo at all: skipped before any video is opened.
    assert dict(report.takes_skipped) == {"not_in_takes_json": 1, "no_best_exo": 2}
    assert report.videos_probed == 7
    # Instructions do not depend on the exo side.
    assert read_jsonl(report.instructions_out) == _expected_instructions(root)


def test_build_val_with_options(root: Path, tmp_path: Path) -> None:
    instr = tmp_path / "sub" / "qa.jsonl"
    report = build_clips(
        root, "val", tmp_path / "val.jsonl", clip_len=3.0, wearer="the wearer", instructions_out=instr,
        progress=False,
    )
    ego = _fav(root, "val_e", "aria01_214-1.mp4")
    assert read_jsonl(tmp_path / "val.jsonl") == [
        {"take_uid": "uid-e", "take_name": "val_e", "split": "val", "ego_video": ego,
         "exo_video": _fav(root, "val_e", "cam01.mp4"), "exo_cam": "cam01", "start": 0.0, "end": 2.0,
         "timestamp": 1.0, "text": "The wearer turns right.", "text_side": "ego", "ego_visible": True,
         "is_best_exo": True}
    ]
    assert [(r["question"], r["answer"], r["split"]) for r in read_jsonl(instr)] == [
        ("What am I doing?", "I am turning right.", "val"),
        ("Which way am I turning?", "Right.", "val"),
    ]
    assert report.instructions_out == instr
    assert not (tmp_path / "val.instructions.jsonl").exists()


def test_each_video_probed_once(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = clips_mod.probe_video

    def counting(path):  # type: ignore[no-untyped-def]
        calls.append(path)
        return real(path)

    monkeypatch.setattr(clips_mod, "probe_video", counting)
    build_clips(root, "train", tmp_path / "c.jsonl", progress=False)
    assert len(calls) == len(set(calls)) == 9


def _root_without_videos(tmp_path: Path) -> Path:
    root = tmp_path / "novideo"
    shutil.copytree(QUIRK_FIXTURE, root)
    return root


def test_failed_build_writes_nothing(tmp_path: Path) -> None:
    root = _root_without_videos(tmp_path)
    out_dir = tmp_path / "out"
    with pytest.raises(UserError) as e:
        build_clips(root, "train", out_dir / "clips.jsonl", progress=False)
    assert str(e.value) == (
        f"no usable clips for split 'train' under {root} (takes skipped: ego_video_bad: 4,"
        " not_in_takes_json: 1; descriptions dropped: bad_flag: 1, empty_text: 1, rejected: 4,"
        " take_skipped: 12, unsure: 3; clip rows skipped: none)"
    )
    assert list(out_dir.iterdir()) == []  # no output, no instructions, no temp file


def test_failed_build_keeps_previous_output(tmp_path: Path) -> None:
    root = _root_without_videos(tmp_path)
    out = tmp_path / "clips.jsonl"
    out.write_text("old\n")
    with pytest.raises(UserError):
        build_clips(root, "train", out, progress=False)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.jsonl", "novideo"]


def test_bad_options(root: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--clip-len must be a positive number of seconds, got 0"):
        build_clips(root, "train", tmp_path / "c.jsonl", clip_len=0)
    with pytest.raises(UserError, match="both be written to"):
        build_clips(root, "train", tmp_path / "c.jsonl", instructions_out=tmp_path / "c.jsonl")
    with pytest.raises(UserError, match="--wearer must not be empty"):
        build_clips(root, "train", tmp_path / "c.jsonl", wearer=" ")
    assert list(tmp_path.iterdir()) == []


def test_read_jsonl_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UserError, match=r"x\.jsonl: line 3: invalid JSON at column 1: Expecting value$"):
        read_jsonl(p)
    with pytest.raises(UserError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- stats


def test_dataset_stats(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "clips.jsonl"
    build_clips(root, "train", out, progress=False)
    s = dataset_stats(root, out)
    assert s["takes"] == 5
    assert s["splits"] == {
        "train": {"takes": 5, "takes_not_in_takes_json": 1, "annotations": 8, "annotations_rejected": 3,
                  "descriptions": 21, "kept": 12,
                  "dropped": {"bad_flag": 1, "empty_text": 1, "rejected": 4, "unsure": 3}},
        "val": {"takes": 1, "takes_not_in_takes_json": 0, "annotations": 1, "annotations_rejected": 0,
                "descriptions": 1, "kept": 1, "dropped": {}},
    }
    c = s["clips"]
    assert (c["rows"], c["ego_exo_pairs"], c["camera_pairs"], c["takes"]) == (16, 16, 4, 2)
    assert c["by_split"] == {"train": 16} and c["by_text_side"] == {"all": 12, "exo": 4}
    assert c["mean_length"] == pytest.approx((12 * 1.0 + 2 * 0.7 + 2 * 0.6) / 16, abs=1e-3)
    assert [(b["hi"], b["count"]) for b in c["length_histogram"]] == [
        (0.1, 0), (0.2, 0), (0.3, 0), (0.4, 0), (0.5, 0), (0.6, 2), (0.7, 2), (0.8, 0), (0.9, 0), (1.0, 12)
    ]
    text = format_stats(s)
    assert "split train: 5 takes (1 not in takes.json), 8 annotations (3 rejected), 21 descriptions:" in text
    assert "     1.0 " not in text  # no empty bin past the longest clip
    assert "    0.9-1.0       12 " + "#" * 40 in text
    assert "    0.6-0.7        2 " + "#" * 7 in text
    assert "rows per text_side: all 12, exo 4" in text
    assert dataset_stats(root)["clips"] is None


def test_clip_stats_empty() -> None:
    assert clip_stats([])["length_histogram"] == [] and clip_stats([])["mean_length"] is None


# ----------------------------------------------------------------------------- CLI


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def test_cli_build_and_stats(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "clips.jsonl"
    runner = CliRunner()
    res = runner.invoke(cli, ["data", "build-clips", "--root", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"split train: 16 clip pairs -> {out}" in res.output
    assert "15 instructions" in res.output
    assert len(read_jsonl(out)) == 16 and len(read_jsonl(tmp_path / "clips.instructions.jsonl")) == 15
    res = runner.invoke(cli, ["data", "stats", "--root", str(root), "--clips", str(out)])
    assert res.exit_code == 0, res.output
    assert "clip length (s):" in res.output and "split val: 1 takes" in res.output
    res = runner.invoke(cli, ["data", "stats", "--root", str(root), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["splits"]["val"]["kept"] == 1


def test_cli_best_exo_only_flags(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b.jsonl"
    code, stdout, _ = _run_main(
        ["data", "build-clips", "--root", str(root), "--out", str(out), "--best-exo-only",
         "--clip-len", "0.5", "--wearer", "the user", "--instructions-out", str(tmp_path / "i.jsonl")],
        capsys,
    )
    assert code == 0 and "5 clip pairs" in stdout
    rows = read_jsonl(out)
    assert rows[0]["text"] == "The user picks up the red cup." and (rows[0]["start"], rows[0]["end"]) == (0.75, 1.25)
    assert (tmp_path / "i.jsonl").exists()


def test_cli_bad_input_one_line_exit_2(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(QUIRK_FIXTURE, broken)
    (broken / "annotations" / "atomic_descriptions_train.json").write_text('{"annotations": {,}}')
    out = tmp_path / "o" / "clips.jsonl"
    cases = [
        (["--root", str(tmp_path / "nowhere")], f"error: data root {tmp_path / 'nowhere'} does not exist"),
        (["--root", str(root), "--split", "test"], "error: no atomic descriptions for split 'test'"),
        (["--root", str(broken)], f"error: {broken}/annotations/atomic_descriptions_train.json: invalid JSON at line 1 column 18 (char 17): Expecting property name enclosed in double quotes"),
        (["--root", str(_root_without_videos(tmp_path))], "error: no usable clips for split 'train'"),
        (["--root", str(root), "--clip-len", "-1"], "error: --clip-len must be a positive number"),
    ]
    for args, message in cases:
        code, _, err = _run_main(["data", "build-clips", "--out", str(out), *args], capsys)
        assert code == 2, (args, err)
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith(message), err
        assert not out.exists() and not out.with_name("clips.instructions.jsonl").exists()
    code, _, err = _run_main(["data", "stats", "--root", str(broken)], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {broken}/annotations/")
