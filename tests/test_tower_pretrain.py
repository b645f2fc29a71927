"""Scene-label pretraining of the vision tower (`exo2ego-edge pretrain-tower`) and the shipped tower."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from exo2ego_edge.assets import SHIPPED_TOWER
from exo2ego_edge.cli import main
from exo2ego_edge.config import PRESETS
from exo2ego_edge.model import Exo2Ego, build_vision_tower
from exo2ego_edge.data import simulator as sim
from exo2ego_edge.train.run_config import load_config
from exo2ego_edge.train.tower_pretrain import (
    COLOUR_CLASSES, KIND_CLASSES, PATCH_HEAD, PatchClassifier, TowerPretrainConfig, patch_accuracy, patch_targets,
    pretrain_tower, render_takes,
)
from exo2ego_edge.train.trainer import run_training
from helpers.datasets import make_dataset, quick_overrides, save_tiny_vision_tower


def _take(seed: int = 3):
    rng = np.random.default_rng(seed)
    plan = sim.plan_take(rng, "tidy")
    t = plan.actions[0].timestamp
    state = sim.state_at(plan, t)
    return plan, state, sim.EgoRig(64, rng).camera(state, t, 0.125)


def test_labelled_frame_is_the_ego_frame_and_labels_what_each_pixel_shows():
    plan, state, camera = _take()
    rgb, owner, parts = sim.labelled_frame(plan, state, camera, exo=False)
    assert np.array_equal(rgb, sim.ego_frame(plan, state, camera))  # the videos' pixels, unchanged
    assert parts[-1] is None and owner.min() >= -1 and owner.max() < len(parts)
    shown = [i for i in range(len(parts) - 1) if (owner == i).sum() >= 4]
    assert shown, "the first action's object should be in view"
    palette = np.array(list(sim.COLOURS.values()))
    for i in shown:  # an object's pixels are its colour, shaded: nearest in chromaticity
        mean = rgb[owner == i].astype(float).mean(0)
        chroma = lambda c: c / c.sum(-1, keepdims=True)  # noqa: E731
        nearest = list(sim.COLOURS)[int(np.argmin(np.abs(chroma(palette) - chroma(mean / 255)).sum(1)))]
        assert nearest == parts[i].colour, (parts[i].name, mean)


def test_exo_frames_label_the_wearer():
    plan, state, _ = _take()
    cam = next(iter(sim.exo_cameras(2, 64).values()))
    _, owner, parts = sim.labelled_frame(plan, state, cam, exo=True)
    assert (owner == len(parts) - 1).sum() > 20  # body, arms and head


def test_patch_targets_are_pixel_fractions():
    labels = torch.zeros(1, 8, 8, dtype=torch.int8)
    labels[0, :4, :2] = 2  # 8 of the first 4x4 patch's 16 pixels
    t = patch_targets(labels, 3, 4)
    assert t.shape == (1, 4, 3)
    assert torch.allclose(t[0, 0], torch.tensor([0.5, 0.0, 0.5])) and torch.allclose(t[0, 1:, 0], torch.ones(3))


@pytest.mark.isa
def test_pretraining_lowers_the_loss_and_writes_a_tower_training_loads(tmp_path):
    cfg = TowerPretrainConfig(takes=3, val_takes=1, steps=40, batch_size=16, eval_every=20, workers=1,
                              frame_stride=4, lr=3e-3, warmup_steps=5)
    out = tmp_path / "tower"
    report = pretrain_tower(cfg, out, progress=False)
    assert report["loss_start"] > 1.5 * report["held_out"]["loss"]
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", PATCH_HEAD, "pretraining.json"}
    assert json.loads((out / "pretraining.json").read_text())["config"]["takes"] == 3
    model = Exo2Ego(PRESETS["egosim-tiny"](), vision_tower_path=out)
    saved = build_vision_tower(PRESETS["egosim-tiny"]().vision, out).state_dict()
    for k, v in model.ego_encoder.tower.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_model_overrides_shape_the_tower_as_they_shape_the_training_run(tmp_path):
    narrow = "model.vision={hidden_size: 48, num_heads: 2, num_layers: 1, intermediate_size: 96}"
    main(["pretrain-tower", "--out", str(tmp_path / "t"), "--takes", "1", "--val-takes", "1", "--steps", "2",
          "--batch-size", "4", "--workers", "1", narrow])
    assert json.loads((tmp_path / "t" / "config.json").read_text())["hidden_size"] == 48
    mc = load_config("egosim-tiny-quick", [narrow]).model_config()
    model = Exo2Ego(mc, vision_tower_path=tmp_path / "t")  # the model takes the folder's architecture
    assert dataclasses.replace(model.cfg.vision, extra={}) == mc.vision  # ... which is the run's


@pytest.mark.parametrize("args, message", [
    (["--takes", "1"], "--overwrite"),  # --out exists
    (["--overwrite", "run.seed=1"], "only model.* overrides"),
    (["--overwrite", "model.preset=edge-0.5b"], "through --preset"),
    (["--overwrite", "--preset", "nope"], "--preset 'nope' is not one of"),
])
def test_pretrain_tower_refuses_bad_input_in_one_line(tmp_path, capsys, args, message):
    (tmp_path / "t").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain-tower", "--out", str(tmp_path / "t"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_the_shipped_tower_knows_object_kinds_on_unseen_takes():
    """The tower in the package, on takes rendered now (past its training and held-out range),
    read out by its pretraining head: the kind of object-covered ego patches well above the
    majority kind. The same head on a random tower is not, so the knowledge is in the tower."""
    info = json.loads((SHIPPED_TOWER / "pretraining.json").read_text())
    cfg = TowerPretrainConfig(**{**info["config"], "workers": 1})
    first = cfg.takes + cfg.val_takes
    mc = PRESETS["egosim-tiny"]()
    data = render_takes(cfg, range(first, first + 3), mc.vision.image_size, "render", progress=False)
    scores = {}
    for name, path in (("shipped", SHIPPED_TOWER), ("random", None)):
        torch.manual_seed(0)
        model = PatchClassifier(build_vision_tower(mc.vision, path), mc.vision.hidden_size, mc.image_mean,
                                mc.image_std)
        model.linear.load_state_dict(load_file(SHIPPED_TOWER / PATCH_HEAD))
        scores[name] = patch_accuracy(model, data, mc.vision.patch_size)["ego"]
    shipped, random = scores["shipped"], scores["random"]
    assert shipped["object_patches"] > 50
    assert shipped["kind_acc"] > shipped["kind_majority"] + 0.15, shipped
    assert shipped["colour_acc"] > 0.8, shipped
    assert random["kind_acc"] < random["kind_majority"], random


def test_the_tiny_config_starts_from_the_shipped_tower_and_a_flag_or_override_changes_it(tmp_path):
    cfg = load_config("egosim-tiny")
    assert cfg.weights.folder("vision_tower") == SHIPPED_TOWER
    assert load_config("egosim-tiny", ["weights.vision_tower=null"]).weights.folder("vision_tower") is None
    with pytest.raises(Exception, match="neither a folder nor one shipped"):
        load_config("egosim-tiny", [f"weights.vision_tower={tmp_path / 'missing'}"]).weights.folder("vision_tower")
    assert KIND_CLASSES[0] == "room" and COLOUR_CLASSES[0] == "none"


def test_a_frozen_pretrained_tower_leaves_init_unchanged(tmp_path):
    """init.encoder_lr_mult=0 (the tiny config's setting): the tower keeps the folder's weights."""
    clips = make_dataset(tmp_path / "data")
    save_tiny_vision_tower("siglip", tmp_path / "tower")
    out = tmp_path / "run"
    run_training("egosim-tiny-quick", stages="init", vision_tower=tmp_path / "tower",
                 overrides=quick_overrides(clips, out, "init.encoder_lr_mult=0"))
    trained = load_file(out / "init" / "final" / "model.safetensors")
    tower = load_file(tmp_path / "tower" / "model.safetensors")
    for k, v in tower.items():
        if ".head." not in k:  # SigLIP's pooling head is dropped on load
            assert torch.equal(trained[f"exo_encoder.tower.{k}"], v), k
    # (that the projector and LLM still get gradients: test_stages, encoders_frozen)
