"""Pretrain a preset's vision tower on the simulator's scene labels: the tiny preset's stand-in for CLIP.

Why: the paper starts both encoders from a pretrained CLIP, which already tells a cup from a ball.
The tiny preset's tower starts from random weights, and `init`'s caption losses teach it colours
but not object kinds within the 15-minute budget (benchmarks/results/training_egosim_tiny.md:
a tower trained on the held object's kind alone reached 62% vs a 44% majority after 2,200
steps). A clip-level label is a weak signal for shape. The simulator knows the exact answer for
every pixel, so here the tower learns, for every patch of ego and exo frames, the kind and the
colour of the object it shows (soft targets: the fraction of the patch's pixels of each class).
Dense labels teach shape in a few CPU-minutes, the way detection or segmentation pretraining does
for real encoders.

The takes come from their own random stream (``_TAKE_STREAM``), so they are never the takes of a
world made by ``data synth``, whatever its seed. Frames go through the same H.264 encoder as the
simulator's videos and back through the runtime's decoder, so the tower sees the pixels training
and serving will. The result is an ordinary Hugging Face folder for ``train --vision-tower``,
with ``pretraining.json`` beside the weights (settings, held-out accuracy, time).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from exo2ego_edge.atomic import atomic_dir
from exo2ego_edge.errors import UserError
from exo2ego_edge.data import simulator as sim

log = logging.getLogger(__name__)

# Per-patch classes. "wearer": arms, hands and (exo views) body.
KIND_CLASSES = ("room", *sim.KINDS, "wearer")
COLOUR_CLASSES = ("none", *sim.COLOURS)
PATCH_HEAD = "patch_head.safetensors"
_TAKE_STREAM = 0x70E7  # mixed into every take's seed: disjoint from synthesize_world's takes


@dataclass
class TowerPretrainConfig:
    # The tower's model, as a training config's `model` section: a preset and overrides of its
    # fields (pretrain with the same section as the training run, and the tower fits it).
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "egosim-tiny"})
    takes: int = 600
    val_takes: int = 40
    seed: int = 0
    exo_cams: int = 2
    fps: int = 8  # the simulator's default
    frame_stride: int = 3  # keep every n-th frame of a take (neighbours are near-duplicates)
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    shift_pixels: int = 4  # random translation of each frame and its labels, as in `init`
    eval_every: int = 500
    workers: int = 2  # processes rendering takes
    threads: int | None = None  # torch threads (default: all cores)

    def validate(self) -> None:
        if self.takes < 1 or self.val_takes < 1:
            raise UserError("--takes and --val-takes must be >= 1")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("--steps, --batch-size and --lr must be positive")
        if not 2 <= self.exo_cams <= 8:
            raise UserError(f"--exo-cams must be in 2..8 (got {self.exo_cams})")


@dataclass
class LabelledFrames:
    """uint8 frames (N, S, S, 3) with per-pixel kind and colour class maps (N, S, S), and which
    frames are ego views."""

    frames: np.ndarray
    kinds: np.ndarray
    colours: np.ndarray
    ego: np.ndarray

    @classmethod
    def concat(cls, parts: list[LabelledFrames]) -> LabelledFrames:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("frames", "kinds", "colours", "ego")))


def _class_maps(owner: np.ndarray, parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel kind / colour class ids from the renderer's part index (-1 room, None wearer)."""
    kind_of = np.array([0] + [KIND_CLASSES.index(p.kind) if p else len(KIND_CLASSES) - 1 for p in parts], np.int8)
    colour_of = np.array([0] + [COLOUR_CLASSES.index(p.colour) if p else 0 for p in parts], np.int8)
    return kind_of[owner + 1], colour_of[owner + 1]


def _h264_roundtrip(frames: list[np.ndarray], size: int, fps: int, folder: Path) -> np.ndarray:
    """The frames as training decodes them: through the simulator's encoder and the runtime's decoder."""
    from exo2ego_edge.runtime.video import decode_clip

    path = folder / "view.mp4"
    writer = sim.VideoWriter(path, size, fps)
    try:
        for rgb in frames:
            writer.write(rgb)
    finally:
        writer.close()
    return decode_clip(path, None, None, num_frames=len(frames), size=size)


def render_take(seed: int, index: int, size: int, exo_cams: int, fps: int, stride: int) -> LabelledFrames:
    """Every ``stride``-th frame of one simulated take, from the ego camera and ``exo_cams`` exo ones."""
    rng = np.random.default_rng([seed, _TAKE_STREAM, index])
    activities = list(sim.ACTIVITIES)
    plan = sim.plan_take(rng, activities[index % len(activities)])
    rig = sim.EgoRig(size, rng)
    exo = sim.exo_cameras(exo_cams, size)
    views: dict[str, list] = {name: [] for name in [sim.EGO_CAM, *exo]}
    for f in range(int(np.ceil(plan.duration * fps))):
        t = f / fps
        state = sim.state_at(plan, t)
        ego = rig.camera(state, t, 1.0 / fps)  # every frame: the gaze lags the hands
        if f % stride:
            continue
        for name, camera in [(sim.EGO_CAM, ego), *exo.items()]:
            views[name].append(sim.labelled_frame(plan, state, camera, exo=name != sim.EGO_CAM))
    parts = []
    with tempfile.TemporaryDirectory(prefix="tower-pretrain-") as tmp:
        for name, rendered in views.items():
            kinds, colours = zip(*(_class_maps(owner, objs) for _, owner, objs in rendered))
            frames = _h264_roundtrip([rgb for rgb, _, _ in rendered], size, fps // stride or 1, Path(tmp))
            parts.append(LabelledFrames(frames, np.stack(kinds), np.stack(colours),
                                        np.full(len(frames), name == sim.EGO_CAM)))
    return LabelledFrames.concat(parts)


def render_takes(cfg: TowerPretrainConfig, indices: range, size: int, desc: str, progress: bool = True) -> LabelledFrames:
    from tqdm import tqdm

    args = [(cfg.seed, i, size, cfg.exo_cams, cfg.fps, cfg.frame_stride) for i in indices]
    with ProcessPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
        takes = list(tqdm(pool.map(render_take, *zip(*args)), total=len(args), desc=desc, unit="take",
                          disable=not progress))
    return LabelledFrames.concat(takes)


def patch_targets(labels: torch.Tensor, classes: int, patch: int) -> torch.Tensor:
    """(B, S, S) class maps -> (B, patches, classes): each patch's fraction of pixels per class."""
    onehot = F.one_hot(labels.long(), classes).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, patch).flatten(2).transpose(1, 2)


class PatchClassifier(nn.Module):
    """Per-patch kind and colour logits on the tower's patch features (dropped after pretraining)."""

    def __init__(self, tower: nn.Module, width: int, mean, std):
        super().__init__()
        self.tower = tower
        self.linear = nn.Linear(width, len(KIND_CLASSES) + len(COLOUR_CLASSES))
        self.patches = (tower.config.image_size // tower.config.patch_size) ** 2
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (frames.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        h = self.tower(pixel_values=x).last_hidden_state
        h = h[:, -self.patches:]  # CLIP prepends a class token
        logits = self.linear(h)
        return logits[..., : len(KIND_CLASSES)], logits[..., len(KIND_CLASSES):]


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, -1)).sum(-1).mean()


def _shift(data: LabelledFrames, idx: np.ndarray, max_shift: int, rng: np.random.Generator):
    """The batch's frames and label maps, translated together by up to ``max_shift`` pixels."""
    dy, dx = rng.integers(-max_shift, max_shift + 1, 2) if max_shift else (0, 0)
    return [torch.from_numpy(np.roll(a[idx], (dy, dx), axis=(1, 2))) for a in (data.frames, data.kinds, data.colours)]


@torch.no_grad()
def patch_accuracy(model: PatchClassifier, data: LabelledFrames, patch: int, batch: int = 256) -> dict:
    """Held-out per-patch accuracy on patches mostly covered by one object, ego and exo views
    apart, with the majority-class baseline of the same patches."""
    model.eval()
    out: dict[str, dict] = {}
    for view, mask in (("ego", data.ego), ("exo", ~data.ego)):
        idx = np.flatnonzero(mask)
        hits = {"kind": 0, "colour": 0}
        counts = torch.zeros(len(KIND_CLASSES))
        n = 0
        for i in range(0, len(idx), batch):
            j = idx[i : i + batch]
            kind_logits, colour_logits = model(torch.from_numpy(data.frames[j]))
            kind_t = patch_targets(torch.from_numpy(data.kinds[j]), len(KIND_CLASSES), patch)
            colour_t = patch_targets(torch.from_numpy(data.colours[j]), len(COLOUR_CLASSES), patch)
            objects = kind_t[..., 1:-1].sum(-1) > 0.5
            hits["kind"] += int((kind_logits.argmax(-1) == kind_t.argmax(-1))[objects].sum())
            hits["colour"] += int((colour_logits.argmax(-1) == colour_t.argmax(-1))[objects].sum())
            counts += torch.bincount(kind_t.argmax(-1)[objects], minlength=len(KIND_CLASSES))
            n += int(objects.sum())
        out[view] = {"object_patches": n, "kind_acc": hits["kind"] / max(n, 1),
                     "colour_acc": hits["colour"] / max(n, 1), "kind_majority": float(counts.max()) / max(n, 1)}
    model.train()
    return out


def pretrain_tower(cfg: TowerPretrainConfig, out: str | os.PathLike, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Render the takes, train the tower's per-patch heads, save the tower to ``out``."""
    from tqdm import tqdm

    from exo2ego_edge.model import build_vision_tower
    from exo2ego_edge.train.run_config import model_config_from
    from exo2ego_edge.train.trainer import warmup_cosine

    cfg.validate()
    mc = model_config_from(cfg.model)
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    began = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    size, patch = mc.vision.image_size, mc.vision.patch_size
    train = render_takes(cfg, range(cfg.takes), size, "render train takes", progress)
    val = render_takes(cfg, range(cfg.takes, cfg.takes + cfg.val_takes), size, "render held-out takes", progress)
    rendered = time.perf_counter()
    log.info("%d training / %d held-out frames rendered in %.0f s", len(train.frames), len(val.frames),
             rendered - began)

    model = PatchClassifier(build_vision_tower(mc.vision), mc.vision.hidden_size, mc.image_mean, mc.image_std)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup_steps, cfg.steps, 0.05))
    rng = np.random.default_rng(cfg.seed)
    history, loss_start = [], None
    bar = tqdm(range(cfg.steps), desc="pretrain tower", unit="step", disable=not progress)
    for step in bar:
        frames, kinds, colours = _shift(train, rng.integers(0, len(train.frames), cfg.batch_size),
                                        cfg.shift_pixels, rng)
        kind_logits, colour_logits = model(frames)
        loss = (_soft_ce(kind_logits, patch_targets(kinds, len(KIND_CLASSES), patch))
                + _soft_ce(colour_logits, patch_targets(colours, len(COLOUR_CLASSES), patch)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        loss_start = loss_start if loss_start is not None else round(loss.item(), 4)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, "loss": round(loss.item(), 4), **patch_accuracy(model, val, patch)})
            ego = history[-1]["ego"]
            log.info("step %d: held-out ego object patches: kind %.1f%% (majority %.1f%%), colour %.1f%%",
                     step + 1, 100 * ego["kind_acc"], 100 * ego["kind_majority"], 100 * ego["colour_acc"])
    report = {"config": asdict(cfg), "frames": {"train": len(train.frames), "held_out": len(val.frames)},
              "render_seconds": round(rendered - began, 1),
              "train_seconds": round(time.perf_counter() - rendered, 1), "loss_start": loss_start, "history": history,
              "held_out": history[-1]}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.tower.save_pretrained(tmp)
        save_file(model.linear.state_dict(), tmp / PATCH_HEAD)  # to check the tower later (tests)
        (tmp / "pretraining.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
