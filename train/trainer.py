"""One trainer for every stage, and ``run_training``: init -> stage 1 -> stage 2 -> stage 3 -> student.

The stages differ only in data, what is frozen and the loss terms (:mod:`.stages`), so one
:class:`StageTrainer` (torchtune's recipe shape: ``setup`` / ``train`` / ``save_checkpoint`` /
``cleanup``, with ``_loss_step`` returning named losses) runs them all.

Run directory (``run.output_dir``)::

    run.yaml             the resolved config of the last invocation
    tokenizer.json       the run's tokenizer (trained BPE, or the --llm folder's)
    <stage>/             init, stage1, stage2, stage3 (see checkpoint.py for the inside)
    student/             the product: ego encoder + F + projector + merged LLM, tokenizer, config
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exo2ego_edge.atomic import atomic_dir, atomic_file, check_writable
from exo2ego_edge.errors import UserError
from exo2ego_edge.model import Exo2Ego
from exo2ego_edge.prompt import TextTokenizer, get_template, train_bpe
from exo2ego_edge.train import checkpoint as ckpt
from exo2ego_edge.train import distributed as dist_
from exo2ego_edge.train.caption_tags import CaptionTagHead, token_idf
from exo2ego_edge.train.data import (
    Batch, BatchStream, Collator, FrameStore, Source, build_frame_store, load_sources,
)
from exo2ego_edge.train.evaluation import EvalResult, evaluate_doing, select_doing_rows
from exo2ego_edge.train.losses import cycle_consistency, feature_kl
from exo2ego_edge.train.lora import add_lora, merge_lora
from exo2ego_edge.train.run_config import STAGE_ORDER, TrainConfig, load_config
from exo2ego_edge.train.stages import ENCODERS, SPECS, StageSpec, apply_trainable, checked_examples, group_of, parse_stages

log = logging.getLogger(__name__)

StepHook = Callable[["StageTrainer"], None]  # called after each optimizer step (and its checkpoint)


# --- the loss ---------------------------------------------------------------------------------
class StageLoss(nn.Module):
    """Batch -> named losses for one stage. A module so DDP / FSDP can wrap the whole step."""

    def __init__(self, model: Exo2Ego, spec: StageSpec, cfg, tag_idf: torch.Tensor | None = None):
        super().__init__()
        self.model, self.spec, self.cfg = model, spec, cfg
        # init's caption-token head (train/caption_tags.py); given when the stage uses it.
        self.tags = CaptionTagHead(model.cfg.vision.hidden_size, tag_idf) if tag_idf is not None else None

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        m, terms = self.model, self.spec.losses
        x, y = self._shared_tower(batch) if self.spec.shared_tower else self._towers(batch)
        losses: dict[str, torch.Tensor] = {}
        if "vtg" in terms:
            losses["vtg"] = self._vtg(batch, x, y)
        if self.tags is not None and batch.vtg_rows:
            losses["tags"] = self.tags(self._per_vtg_row(batch, x, y), batch.answers)
        if "kl" in terms or "cycle" in terms:
            if batch.ego_rows != batch.exo_rows:
                raise RuntimeError("KL / cycle terms need synchronized ego-exo pairs in every row")
            fx = m.F(x)
            group = m.cfg.tokens_per_frame if self.cfg.kl_pool == "frame" else 1
            losses["kl"] = feature_kl(y, fx, self.cfg.kl_tau, group)
            losses["cycle"] = cycle_consistency(x, m.G(fx), y, m.F(m.G(y)))
        weights = self.spec.loss_weights(self.cfg)
        losses["loss"] = sum(weights[k] * v for k, v in losses.items())
        return losses

    def _towers(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Ego features x (Be, N, Dv) from the ego encoder, exo features y (Bx, N, Dv) from the exo
        encoder (without gradients when the stage freezes it); None for a view the batch lacks."""
        m = self.model
        x = m.ego_features(batch.ego_frames) if batch.ego_frames is not None else None
        y = None
        if batch.exo_frames is not None:
            frozen = "exo_encoder" not in self.spec.trainable
            with torch.no_grad() if frozen else contextlib.nullcontext():
                y = m.exo_features(batch.exo_frames)
        return x, y

    def _shared_tower(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """x and y from init's one tower in a single call over both views' frames, whatever the
        batch's mix of views: FSDP gathers a unit's shards at every call, so every rank must make
        the same calls."""
        views = [f for f in (batch.ego_frames, batch.exo_frames) if f is not None]
        features = self.model.exo_features(torch.cat(views))
        n_ego = 0 if batch.ego_frames is None else len(batch.ego_frames)
        x = features[:n_ego] if batch.ego_frames is not None else None
        y = features[n_ego:] if batch.exo_frames is not None else None
        return x, y

    def _vtg(self, batch: Batch, x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        """Next-token loss on the text of the rows that have it, each seeing its own view."""
        m = self.model
        if not batch.vtg_rows:
            # Keep the graph connected (DDP expects every step to produce a loss tensor).
            ref = x if x is not None else y
            return ref.sum() * 0.0
        ego_tokens = m.ego_visual_tokens(x) if x is not None and "ego" in batch.vtg_views else None
        exo_tokens = m.exo_visual_tokens(y) if y is not None and "exo" in batch.vtg_views else None
        visual = self._per_vtg_row(batch, ego_tokens, exo_tokens)  # (Bv, N, D)
        return m.vtg_loss(visual, batch.prompts, batch.answers)

    @staticmethod
    def _per_vtg_row(batch: Batch, ego: torch.Tensor | None, exo: torch.Tensor | None) -> torch.Tensor:
        """Stack, in VTG-row order, each text row's tensor from the view its text is about."""
        ego_pos = {r: i for i, r in enumerate(batch.ego_rows)}
        exo_pos = {r: i for i, r in enumerate(batch.exo_rows)}
        return torch.stack([ego[ego_pos[r]] if view == "ego" else exo[exo_pos[r]]
                            for r, view in zip(batch.vtg_rows, batch.vtg_views)])


# --- run-wide context -------------------------------------------------------------------------
@dataclass
class RunContext:
    cfg: TrainConfig
    dist: dist_.DistInfo
    out: Path
    tokenizer: TextTokenizer
    sources: list[Source]
    store: FrameStore
    examples: dict[str, list]  # per stage still to train, selected and checked before the first
    on_step: StepHook | None = None


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up to 1, then cosine down to ``min_ratio``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _move(batch: Batch, device: torch.device) -> Batch:
    if batch.ego_frames is not None:
        batch.ego_frames = batch.ego_frames.to(device, non_blocking=True)
    if batch.exo_frames is not None:
        batch.exo_frames = batch.exo_frames.to(device, non_blocking=True)
    return batch


# --- the trainer ------------------------------------------------------------------------------
class StageTrainer:
    """Trains one stage of one run: data, frozen groups and loss come from the stage spec."""

    def __init__(self, ctx: RunContext, stage: str):
        self.ctx, self.stage = ctx, stage
        self.spec = SPECS[stage]
        self.scfg = ctx.cfg.stage(stage)
        self.dir = ctx.out / stage
        self.dist = ctx.dist
        self.train_seconds = 0.0

    # setup -------------------------------------------------------------------------------
    def setup(self, model: Exo2Ego, resume_from: Path | None = None) -> None:
        run, dist = self.ctx.cfg.run, self.dist
        if dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
        ckpt.seed_everything(run.seed + STAGE_ORDER.index(self.stage))
        if self.spec.migrate:
            model.migrate_exo_to_ego()
        if self.spec.lora:
            add_lora(model)
        # encoder_lr_mult 0: a pretrained tower is kept as it is in this stage.
        apply_trainable(model, self.spec, frozen=ENCODERS if self.scfg.encoder_lr_mult == 0 else ())
        if run.gradient_checkpointing:
            self._enable_gradient_checkpointing(model)
        self.model = model.to(dist.device).train()
        self.examples = self.ctx.examples[self.stage]
        self.collate = Collator(self.ctx.store, self.ctx.tokenizer, model.cfg.system_prompt,
                                shift=self.ctx.cfg.data.shift_pixels)
        self.loss_module = StageLoss(model, self.spec, self.scfg, self._tag_idf(model)).to(dist.device)
        no_decay = {self._clean_name(n) for n, p in self.loss_module.named_parameters()
                    if p.requires_grad and p.ndim < 2}
        self.wrapped = dist_.wrap(self.loss_module, dist, run.fsdp, find_unused=self.stage == "init")
        params = [(self._clean_name(n), p) for n, p in self.wrapped.named_parameters() if p.requires_grad]
        if not params:
            raise UserError(f"{self.stage}: nothing to train")
        self.params = [p for _, p in params]
        # The LLM (and its LoRA) at lr, logged first; the vision side (towers, F, G, projector) at
        # lr * vision_lr_mult, the towers themselves times encoder_lr_mult on top.
        by_group: dict[tuple[bool, float, bool], list] = {}
        for n, p in params:
            group = group_of(n)
            is_llm = group in ("llm", "lora")
            mult = 1.0 if is_llm else self.scfg.vision_lr_mult
            if group in ENCODERS:
                mult *= self.scfg.encoder_lr_mult
            by_group.setdefault((not is_llm, self.scfg.lr * mult, n not in no_decay), []).append(p)
        groups = [{"params": ps, "lr": lr, "weight_decay": self.scfg.weight_decay if decay else 0.0}
                  for (_, lr, decay), ps in sorted(by_group.items())]  # keys are unique: LLM first
        self.optimizer = torch.optim.AdamW(groups, lr=self.scfg.lr, betas=(0.9, 0.95))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.scfg.warmup_steps, self.scfg.steps, self.scfg.min_lr_ratio))
        self.autocast_dtype = None
        if dist.device.type == "cuda" and run.precision != "fp32":
            self.autocast_dtype = torch.bfloat16 if run.precision == "bf16" else torch.float16
        elif run.precision != "fp32":
            log.warning("run.precision=%s applies on CUDA only; training in fp32 on CPU", run.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)

        self.stream = BatchStream(len(self.examples), self.scfg.batch_size,
                                  run.seed * 1000 + STAGE_ORDER.index(self.stage), dist.rank, dist.world)
        self.progress = ckpt.TrainingProgress(
            stage=self.stage, seed=run.seed, step=0, total_steps=self.scfg.steps, world=dist.world,
            batch_size=self.scfg.batch_size, grad_accum=self.scfg.grad_accum, data=self.stream.state_dict())
        if resume_from is not None:
            self._load(resume_from)
        trainable = sum(p.numel() for p in self.params)
        log.info("%s (%s): %d examples, %d steps, %s trainable parameters in %s", self.stage, self.spec.title,
                 len(self.examples), self.scfg.steps, f"{trainable:,}", ", ".join(self.spec.trainable))

    def _tag_idf(self, model: Exo2Ego) -> torch.Tensor | None:
        """IDF of the stage's caption tokens when it trains the caption-token head, else None."""
        if "tags" not in self.spec.losses or self.spec.loss_weights(self.scfg)["tags"] <= 0:
            return None
        captions = [self.collate.answer_ids(e.answer) for e in self.examples if e.answer]
        return token_idf(captions, model.cfg.llm.vocab_size)

    @staticmethod
    def _clean_name(name: str) -> str:
        for prefix in ("module.", "_checkpoint_wrapped_module."):
            name = name.replace(prefix, "")
        return name.removeprefix("model.")

    @staticmethod
    def _enable_gradient_checkpointing(model: Exo2Ego) -> None:
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
        towers = [enc.tower for enc in (model.ego_encoder, getattr(model, "exo_encoder", None)) if enc is not None]
        for part in (model.llm, *towers):  # Hugging Face models (a PeftModel forwards the call)
            part.gradient_checkpointing_enable(**kwargs)

    # state -------------------------------------------------------------------------------
    def _state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd, optim_sd = get_state_dict(self.wrapped, self.optimizer, options=opts)
        return {"model": model_sd, "optimizer": optim_sd, "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def _load(self, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        progress, state = ckpt.load_checkpoint(path)
        progress.check_compatible(self.progress)
        set_state_dict(self.wrapped, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"], options=StateDictOptions(full_state_dict=True))
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.stream.load_state_dict(progress.data)
        ckpt.set_rng_state(state["rng"][self.dist.rank])
        self.progress = progress
        if self.dist.is_main:
            _truncate_metrics(self.dir / "metrics.jsonl", progress.step)
        log.info("%s: resumed from %s at step %d", self.stage, path, progress.step)

    def save_checkpoint(self) -> Path | None:
        """Every rank takes part (FSDP gathers shards); rank 0 writes, atomically."""
        self.progress.data = self.stream.state_dict()
        state = self._state()
        rng = dist_.gather_objects(self.dist, ckpt.rng_state())
        path = None
        if self.dist.is_main:
            path = ckpt.save_checkpoint(self.dir / "checkpoints", self.progress, state, rng,
                                        self.ctx.cfg.run.keep_checkpoints)
        dist_.barrier(self.dist)
        return path

    # train -------------------------------------------------------------------------------
    def _loss_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        autocast = (torch.autocast("cuda", dtype=self.autocast_dtype) if self.autocast_dtype
                    else contextlib.nullcontext())
        with autocast:
            return self.wrapped(_move(batch, self.dist.device))

    def train(self) -> None:
        from tqdm import tqdm

        run, sc, dist = self.ctx.cfg.run, self.scfg, self.dist
        accum = sc.grad_accum
        metrics_path = self.dir / "metrics.jsonl"
        bar = tqdm(total=sc.steps, initial=self.progress.step, desc=self.stage, unit="step",
                   disable=not (dist.is_main and run.progress_bar), dynamic_ncols=True)
        began = time.perf_counter()
        window_t, window_samples = time.perf_counter(), 0
        while self.progress.step < sc.steps:
            sums: dict[str, float] = defaultdict(float)
            for micro in range(accum):
                # Augmentation draws depend only on (seed, stage, step, micro, rank): resumable.
                aug = np.random.default_rng([run.seed, STAGE_ORDER.index(self.stage), self.progress.step,
                                             micro, dist.rank])
                batch = self.collate([self.examples[i] for i in self.stream.next_indices()], aug)
                with dist_.gradient_sync(self.wrapped, enabled=micro == accum - 1):
                    losses = self._loss_step(batch)
                    self.scaler.scale(losses["loss"] / accum).backward()
                for k, v in losses.items():
                    sums[k] += float(v.detach()) / accum
            self.scaler.unscale_(self.optimizer)
            # FSDP2: DTensor gradients, so the norm is over all shards (a DTensor itself)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, sc.max_grad_norm)
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.progress.step += 1
            step_samples = sc.batch_size * accum * dist.world
            self.progress.samples_seen += step_samples
            window_samples += step_samples
            metrics = _mean_over_ranks(dist, sums)
            now = time.perf_counter()
            sps = window_samples / max(now - window_t, 1e-9)
            if self.progress.step % run.log_every == 0:
                window_t, window_samples = now, 0
            if dist.is_main:
                record = {"step": self.progress.step, **{k: round(v, 6) for k, v in metrics.items()},
                          "lr": self.scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4),
                          "samples_per_s": round(sps, 2), "epoch": self.stream.epoch}
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", sps=f"{sps:.0f}")
                bar.update(1)
                if self.progress.step % run.log_every == 0:
                    log.info("%s step %d/%d %s", self.stage, self.progress.step, sc.steps,
                             " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            if self.progress.step % run.checkpoint_every == 0 and self.progress.step < sc.steps:
                self.save_checkpoint()
            if self.ctx.on_step is not None:
                self.ctx.on_step(self)
        bar.close()
        self.train_seconds = time.perf_counter() - began
        self.last_metrics = dict(metrics) if sc.steps and self.progress.step else {}

    # final -------------------------------------------------------------------------------
    def save_final(self) -> Path:
        """The stage's result as an Exo2Ego checkpoint (LoRA merged) + tokenizer.json."""
        final = self.dir / "final"
        model = self._full_model()
        if self.dist.is_main:
            if self.spec.lora:
                merge_lora(model)
            if self.spec.shared_tower:
                model.migrate_exo_to_ego()
            with atomic_dir(final, overwrite=True) as tmp:
                model.save_pretrained(tmp, stage=self.stage, steps=self.progress.step, seed=self.ctx.cfg.run.seed)
                self.ctx.tokenizer.save(tmp / "tokenizer.json")
        dist_.barrier(self.dist)
        self.model = model
        return final

    def _full_model(self) -> Exo2Ego:
        """An unsharded model on rank 0 (FSDP: gathered into a fresh CPU copy)."""
        if not self.ctx.cfg.run.fsdp:
            return self.model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.dist.is_main:
            return self.model
        full = Exo2Ego(self.model.cfg)
        if self.spec.lora:
            add_lora(full)
        full.load_state_dict({k.removeprefix("model."): v for k, v in sd.items()}, strict=False)
        return full

    def cleanup(self) -> None:
        """Drop the wrappers and optimizer state so the next stage starts with free memory."""
        del self.optimizer, self.wrapped, self.loss_module
        if self.dist.device.type == "cuda":
            torch.cuda.empty_cache()


def _mean_over_ranks(dist: dist_.DistInfo, values: dict[str, float]) -> dict[str, float]:
    if not dist.distributed:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                     device=dist.device if dist.device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(t)
    return {k: float(v) / dist.world for k, v in zip(keys, t.tolist())}


def _truncate_metrics(path: Path, step: int) -> None:
    """After a resume, forget metric lines of steps the crashed run did past its checkpoint."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    with atomic_file(path) as f:
        f.write("".join(line + "\n" for line in keep))


# --- the run ----------------------------------------------------------------------------------
def run_training(
    config: str | Path | dict = "egosim-tiny",
    stages: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    vision_tower: str | Path | None = None,
    llm: str | Path | None = None,
    on_step: StepHook | None = None,
) -> Path:
    """Train the requested stages in order and return the student folder (or the last stage's).

    ``config``: a YAML path or a bundled config name; ``overrides``: ``key=value`` strings;
    ``stages``: e.g. ``"init,1,2,3"`` (default: all; without ``init`` when ``llm`` is given);
    ``resume``: skip finished stages and continue an interrupted one from its newest checkpoint;
    ``vision_tower`` / ``llm``: local Hugging Face folders to start from (default: the config's
    ``weights``).
    """
    cfg = load_config(config, overrides)
    vision_tower = vision_tower or cfg.weights.folder("vision_tower")
    llm = llm or cfg.weights.folder("llm")
    names = parse_stages(stages, pretrained=llm is not None)
    dist = dist_.setup(cfg.run.device, cfg.run.threads)
    try:
        return _run(cfg, names, resume, vision_tower, llm, on_step, dist)
    finally:
        dist_.cleanup(dist)


def _run(cfg: TrainConfig, names: list[str], resume: bool, vision_tower, llm, on_step, dist) -> Path:
    import yaml

    out = Path(cfg.run.output_dir)
    # The run writes inside the folder: that (or its nearest existing ancestor) must be a writable
    # folder, so a file at run.output_dir is refused here too.
    check_writable(out / "run.yaml", f"run.output_dir={out}")
    if resume and not out.is_dir():
        log.warning("--resume: %s does not exist yet, so the run starts from the beginning", out)
    if not resume:
        for s in names:
            if (out / s / "final").exists() or ckpt.list_checkpoints(out / s / "checkpoints"):
                raise UserError(f"{out / s} already has results: pass --resume to continue the run, "
                                f"or set run.output_dir to a new folder")
    sources = load_sources(cfg.data.clips, cfg.data.instructions)  # bad data: no run folder yet
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "run.yaml") as f:
            yaml.safe_dump({**cfg.to_dict(), "stages": names, "vision_tower": str(vision_tower or ""),
                            "llm": str(llm or "")}, f, sort_keys=False)
    tokenizer = _tokenizer(cfg, out, sources, llm, dist)

    first = names[0]
    model = _start_model(cfg, first, out, tokenizer, vision_tower, llm)
    mc = model.cfg
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    pool = cfg.data.frame_pool
    if dist.is_main:
        build_frame_store(sources, mc.num_frames, mc.vision.image_size, cache_dir, build=True, pool=pool)
    dist_.barrier(dist)
    store = build_frame_store(sources, mc.num_frames, mc.vision.image_size, cache_dir, build=False, pool=pool)
    examples = {stage: checked_examples(stage, cfg, sources, store, dist.world)
                for stage in names if not (out / stage / "final").is_dir()}
    ctx = RunContext(cfg, dist, out, tokenizer, sources, store, examples, on_step)

    for stage in names:
        stage_dir = out / stage
        if (stage_dir / "final").is_dir():
            log.info("%s: already finished (%s), skipping", stage, stage_dir / "final")
            model = None
            continue
        if model is None:
            model = _start_model(cfg, stage, out, tokenizer, vision_tower, llm)
        stage_dir.mkdir(parents=True, exist_ok=True)
        trainer = StageTrainer(ctx, stage)
        trainer.setup(model, ckpt.latest_checkpoint(stage_dir / "checkpoints") if resume else None)
        trainer.train()
        trainer.save_final()
        trainer.cleanup()
        if dist.is_main:
            summary = {"stage": stage, "title": SPECS[stage].title, "steps": trainer.progress.step,
                       "train_seconds": round(trainer.train_seconds, 2), "examples": len(trainer.examples),
                       "final_losses": trainer.last_metrics}
            result = _evaluate(ctx, trainer.model)
            if result is not None:
                summary["eval"] = result.to_dict()
                log.info("%s: %s", stage, result.summary())
            with atomic_file(stage_dir / "summary.json") as f:
                json.dump(summary, f, indent=2)
        dist_.barrier(dist)
        model = None  # the next stage starts from this one's final folder: a path alone

    if (out / "stage3" / "final").is_dir():
        student = out / "student"
        if dist.is_main:
            write_student(out / "stage3" / "final", student)
        dist_.barrier(dist)
        return student
    done = [out / s / "final" for s in STAGE_ORDER if (out / s / "final").is_dir()]
    return done[-1]


def write_student(stage3_final: Path, folder: Path) -> Path:
    """Keep only what inference needs: ego encoder, F, projector, LLM (+ tokenizer, config)."""
    student = Exo2Ego.from_pretrained(stage3_final, student=True)
    with atomic_dir(folder, overwrite=True) as tmp:
        student.save_pretrained(tmp, source=str(stage3_final))
        shutil.copy(stage3_final / "tokenizer.json", tmp / "tokenizer.json")
    log.info("student checkpoint: %s", folder)
    return folder


def _tokenizer(cfg: TrainConfig, out: Path, sources: list[Source], llm, dist) -> TextTokenizer:
    """--llm folder's tokenizer.json, else the run's, else a byte-level BPE trained on the data."""
    template = get_template(cfg.model_config().chat_template)
    if llm is not None:
        return TextTokenizer.from_file(Path(llm) / "tokenizer.json", template)
    path = out / "tokenizer.json"
    if not path.is_file() and dist.is_main:
        mc = cfg.model_config()
        texts = [mc.caption_question]
        for src in sources:
            for row in src.rows:
                if row.get("split") == cfg.data.train_split:
                    texts += [row.get("text") or "", row.get("question") or "", row.get("answer") or ""]
        tok = train_bpe([t for t in texts if t], cfg.run.tokenizer_vocab_size, template, mc.system_prompt)
        tmp = path.with_name(f".{path.name}.tmp")
        tok.save(tmp)
        tmp.replace(path)  # atomic: a crash never leaves a half-written tokenizer
        log.info("trained a %d-token byte-level BPE -> %s", tok.vocab_size, path)
    dist_.barrier(dist)
    return TextTokenizer.from_file(path, template)


def _start_model(cfg: TrainConfig, stage: str, out: Path, tokenizer: TextTokenizer, vision_tower, llm) -> Exo2Ego:
    """A stage's starting weights: its init_from, else the nearest earlier final, else HF / random."""
    ckpt.seed_everything(cfg.run.seed)
    explicit = cfg.stage(stage).init_from
    earlier = [out / s / "final" for s in STAGE_ORDER[: STAGE_ORDER.index(stage)] if (out / s / "final").is_dir()]
    source = Path(explicit) if explicit else (earlier[-1] if earlier else None)
    if source is not None:
        log.info("%s starts from %s", stage, source)
        return Exo2Ego.from_pretrained(source, student=False)
    mc = cfg.model_config()
    if llm is None:
        mc.llm.vocab_size = tokenizer.vocab_size  # the tiny preset's LLM is sized to its BPE
    if stage != "init" and llm is None:
        log.warning("%s starts from random weights (no earlier stage, no --llm): consider --stages init,...", stage)
    if vision_tower is None and cfg.stage(stage).encoder_lr_mult == 0:
        log.warning("%s keeps a random vision tower frozen (%s.encoder_lr_mult=0 without a pretrained tower): "
                    "set it to 1 to train the tower from scratch", stage, stage)
    model = Exo2Ego(mc, vision_tower_path=vision_tower, llm_path=llm)
    if tokenizer.vocab_size > model.cfg.llm.vocab_size:
        raise UserError(f"the tokenizer has {tokenizer.vocab_size} tokens but the LLM's vocabulary only "
                        f"{model.cfg.llm.vocab_size}")
    return model


def _evaluate(ctx: RunContext, model: Exo2Ego) -> EvalResult | None:
    """Held-out "What am I doing?" scores (rank 0), or None without held-out instructions."""
    n = ctx.cfg.run.eval_samples
    if n <= 0:
        return None
    candidates = [{**row, "_src": src.name, "_i": i} for src in ctx.sources if src.kind == "instructions"
                  for i, row in enumerate(src.rows)]
    rows = select_doing_rows(candidates, ctx.cfg.data.eval_split, n, ctx.cfg.run.seed)
    if not rows:
        log.info("no held-out '%s' instructions to evaluate on", ctx.cfg.data.eval_split)
        return None
    model = model.to(ctx.dist.device)
    slots: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        slots[r["_src"]].append(ctx.store.slot(r["_src"], "ego", r["_i"]))
    frames = torch.cat([ctx.store.get(src, "ego", s) for src, s in slots.items()])
    ordered = [r for src in slots for r in rows if r["_src"] == src]
    return evaluate_doing(model, ctx.tokenizer, frames, ordered)
