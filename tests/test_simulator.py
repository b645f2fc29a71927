"""The built-in simulator (`exo2ego-edge data synth`): layout, videos, determinism, ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from exo2ego_edge.assets import ASSETS, SAMPLE_CLIP
from exo2ego_edge.cli import cli, main
from exo2ego_edge.data.simulator import SynthConfig, x264_params, assign_takes, synthesize_take

SIZE, FPS, TAKES = 64, 4, 20  # 4 fps: half the frames, same code paths


def synth_args(out: Path, *extra: str) -> list[str]:
    return ["data", "synth", "--out", str(out), "--size", str(SIZE), "--fps", str(FPS), *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "world"
    result = CliRunner().invoke(cli, synth_args(out, "--takes", str(TAKES), "--jobs", "2"))
    assert result.exit_code == 0, result.output
    assert f"Synthesized {TAKES} takes" in result.output and str(out) in result.output
    return out


def load(world: Path, name: str):
    return json.loads((world / name).read_text())


def records(world: Path) -> dict[str, dict]:
    lines = (world / "simulator" / "take_records.jsonl").read_text().splitlines()
    return {r["take_uid"]: r for r in map(json.loads, lines)}


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def video_paths(world: Path, take: dict) -> dict[str, Path]:
    return {
        cam: world / take["root_dir"] / stream["relative_path"]
        for cam, streams in take["frame_aligned_videos"].items()
        for stream in streams.values()
    }


def test_takes_json_has_the_ego_exo4d_layout(world):
    takes = load(world, "takes.json")
    assert isinstance(takes, list) and len(takes) == TAKES
    assert len({t["take_uid"] for t in takes}) == TAKES
    for take in takes:
        assert take["root_dir"] == f"takes/{take['take_name']}"
        assert take["task_name"] and take["duration_sec"] > 2
        videos = take["frame_aligned_videos"]
        assert videos["aria01"]["rgb"]["relative_path"] == "frame_aligned_videos/aria01_214-1.mp4"
        assert videos["cam01"]["0"]["relative_path"] == "frame_aligned_videos/cam01.mp4"
        assert videos["cam02"]["0"]["relative_path"] == "frame_aligned_videos/cam02.mp4"
        assert all(p.is_file() for p in video_paths(world, take).values())


def test_videos_decode_with_the_right_length_and_size(world):
    for take in load(world, "takes.json")[:4]:
        for cam, path in video_paths(world, take).items():
            frames = decode(path)
            assert frames.shape[1:] == (SIZE, SIZE, 3), cam
            assert abs(len(frames) - take["duration_sec"] * FPS) <= 1, cam


def test_split_and_text_regime(world):
    takes = load(world, "takes.json")
    val = [t for t in takes if t["sim_text_side"] == "all"]
    train_sides = [t["sim_text_side"] for t in takes if t["sim_text_side"] != "all"]
    assert len(val) == round(0.2 * TAKES)
    n_train = TAKES - len(val)
    assert train_sides.count("exo") == round(0.6 * n_train)
    assert train_sides.count("ego") == round(0.15 * n_train)
    assert train_sides.count("none") == n_train - round(0.6 * n_train) - round(0.15 * n_train)


def test_annotations_have_the_atomic_description_schema(world):
    takes = {t["take_uid"]: t for t in load(world, "takes.json")}
    seen = set()
    for split in ("train", "val"):
        ann = load(world, f"annotations/atomic_descriptions_{split}.json")
        assert set(ann["annotations"]) == set(ann["take_cam_id_map"])
        for uid, passes in ann["annotations"].items():
            take = takes[uid]
            assert (take["sim_text_side"] == "all") == (split == "val")
            cams = ann["take_cam_id_map"][uid]
            assert {"aria01", "cam01", "cam02"} <= set(cams)
            assert all(k == v for k, v in cams.items())
            (annotation,) = passes
            assert annotation["rejected"] is False and annotation["descriptions"]
            for d in annotation["descriptions"]:
                assert d["subject"] == "C"
                assert d["text"].startswith("C ") and d["text"].endswith(".")
                assert 0 < d["timestamp"] < take["duration_sec"]
                assert isinstance(d["ego_visible"], bool) and isinstance(d["unsure"], bool)
                assert d["best_exo"]["cam_id"] in ("cam01", "cam02")
            seen.add(uid)
    assert seen == set(takes)


def test_take_records_agree_with_annotations(world):
    recs = records(world)
    assert len(recs) == TAKES
    for split in ("train", "val"):
        ann = load(world, f"annotations/atomic_descriptions_{split}.json")["annotations"]
        for uid, (annotation,) in ann.items():
            rec = recs[uid]
            assert rec["split"] == split
            texts = [d["text"] for d in annotation["descriptions"]]
            assert texts == [a["text"] for a in rec["actions"]]
            stamps = [d["timestamp"] for d in annotation["descriptions"]]
            assert stamps == [a["timestamp"] for a in rec["actions"]]
            assert all(a["start"] < a["timestamp"] < a["end"] for a in rec["actions"])
            assert [a["ego_visible"] for a in rec["actions"]] == [
                d["ego_visible"] for d in annotation["descriptions"]
            ]
            _check_world_bookkeeping(rec)


def _check_world_bookkeeping(rec: dict) -> None:
    objects = {o["id"]: o for o in rec["objects"]}
    for o in objects.values():
        assert o["name"] == f"{o['colour']} {o['kind']}"
    for a in rec["actions"]:
        if a["verb"] == "turn":
            assert a["direction"] in ("left", "right") and a["text"] == f"C turns {a['direction']}."
            continue
        obj = objects[a["object"]]
        assert obj["name"] in a["text"] and a["hand"] in ("left", "right")
        if a["verb"] == "put" and a["relation"] == "in":
            assert a["object"] in a["contents_after"][a["target"]]
            assert a["object"] not in a["contents_before"][a["target"]]
    last = rec["actions"][-1]["contents_after"]
    for cid, inside in last.items():
        assert sorted(o["id"] for o in objects.values() if o["end"]["in"] == cid) == inside
    assert len(rec["head_turns"]) == sum(a["verb"] == "turn" for a in rec["actions"])


def _mean_motion(frames: np.ndarray) -> float:
    return float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean())


def test_ego_moves_more_than_exo_and_shows_something_else(world):
    ego_motion, exo_motion, content_gap = [], [], []
    for take in load(world, "takes.json")[:5]:
        paths = video_paths(world, take)
        ego = decode(paths["aria01"])
        exo = decode(paths["cam01"])
        ego_motion.append(_mean_motion(ego))
        exo_motion.append(_mean_motion(exo))
        content_gap.append(float(np.abs(ego.astype(np.int16) - exo).mean()))
    assert np.mean(ego_motion) > 2.0 * np.mean(exo_motion), (ego_motion, exo_motion)
    assert np.mean(content_gap) > 25, content_gap


@pytest.mark.parametrize("cams", range(2, 9))
def test_exo_cameras_keep_the_whole_reach_area_in_view(cams):
    from exo2ego_edge.data import simulator as sim

    corners = [np.array([x, y, 0.0]) for x in sim.REACH_X for y in sim.REACH_Y]  # on the table
    for cam_id, cam in sim.exo_cameras(cams, 64).items():
        for point in corners:
            assert cam.sees(point), (cam_id, point, cam.project(point))


def _small_world(tmp_path: Path, name: str, seed: int, jobs: int, takes: int) -> Path:
    out = tmp_path / name
    args = synth_args(out, "--takes", str(takes), "--seed", str(seed), "--jobs", str(jobs))
    assert CliRunner().invoke(cli, args).exit_code == 0
    return out


JSON_FILES = (
    "takes.json",
    "annotations/atomic_descriptions_train.json",
    "annotations/atomic_descriptions_val.json",
    "simulator/take_records.jsonl",
)


@pytest.mark.isa
def test_same_seed_same_world_and_other_seed_another(tmp_path):
    a = _small_world(tmp_path, "a", seed=7, jobs=1, takes=2)
    b = _small_world(tmp_path, "b", seed=7, jobs=2, takes=2)  # worker count must not matter
    c = _small_world(tmp_path, "c", seed=8, jobs=1, takes=1)
    for name in JSON_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert load(a, "takes.json")[0] != load(c, "takes.json")[0]
    take = load(a, "takes.json")[0]
    for cam, path in video_paths(a, take).items():
        assert np.array_equal(decode(path), decode(b / path.relative_to(a))), cam


@pytest.mark.isa
@pytest.mark.skipif(x264_params() == "threads=1", reason="libx264 is pinned to AVX2, which this CPU lacks")
def test_the_shipped_sample_clip_is_rendered_again_byte_for_byte(tmp_path):
    """The world the shipped student was trained on (PROVENANCE.md: seed 7, 160 takes, 64 px) was
    made on another CPU; one of its takes, made again here, must be the same file."""
    sample = json.loads((ASSETS / "sample_ego.json").read_text())
    cfg = SynthConfig(takes=160, seed=7, size=64, fps=8, exo_cams=2, val_frac=0.2,
                      exo_text_frac=0.6, ego_text_frac=0.15)  # fmt: skip
    index = int(sample["take"].rsplit("_", 1)[1])
    out = synthesize_take(cfg, assign_takes(cfg)[index], tmp_path)
    assert out.entry["take_name"] == sample["take"]
    ego = tmp_path / out.entry["root_dir"] / "frame_aligned_videos" / "aria01_214-1.mp4"
    assert ego.read_bytes() == SAMPLE_CLIP.read_bytes()


def test_existing_out_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(synth_args(out, "--takes", "1"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--overwrite" in err and "\n" not in err
    assert list(out.iterdir()) == []
    main(synth_args(out, "--takes", "1", "--overwrite", "--jobs", "1"))
    assert (out / "takes.json").is_file()


@pytest.mark.parametrize(
    "bad",
    [["--exo-cams", "1"], ["--size", "63"], ["--exo-text-frac", "0.9", "--ego-text-frac", "0.2"]],
)
def test_bad_knobs_are_one_line_errors(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        main(synth_args(tmp_path / "w", "--takes", "1", *bad))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "w").exists()
