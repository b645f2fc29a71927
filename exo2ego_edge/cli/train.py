"""`exo2ego-edge train`: a thin command over :func:`exo2ego_edge.train.trainer.run_training`."""

from __future__ import annotations

from pathlib import Path

import click

from exo2ego_edge.config import PRESETS
from exo2ego_edge.errors import UserError


@click.command(name="train", context_settings={"ignore_unknown_options": False})
@click.option("--config", "config", default="egosim-tiny", show_default=True, metavar="FILE|NAME",
              help="YAML run config, or a bundled one: egosim-tiny, egosim-tiny-demo, egosim-tiny-quick, exo2ego-7b.")
@click.option("--stages", default=None, metavar="LIST",
              help="Comma-separated stages to run, in order: init,1,2,3 (default: all of them; "
                   "1,2,3 when --llm is given).")
@click.option("--resume", is_flag=True,
              help="Continue the run in run.output_dir: finished stages are skipped, an interrupted "
                   "one restarts from its newest checkpoint exactly (weights, optimizer, schedule, "
                   "data order, RNG).")
@click.option("--vision-tower", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local Hugging Face SigLIP / CLIP vision model folder for both encoders (default: the "
                   "config's weights.vision_tower; egosim-tiny starts from the shipped pretrained tower).")
@click.option("--llm", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local Hugging Face causal LM folder (Qwen2 / Llama / Mistral) with tokenizer.json.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train(config: str, stages: str | None, resume: bool, vision_tower: str | None, llm: str | None,
          overrides: tuple[str, ...]) -> None:
    """Train the student: init -> stage 1 -> stage 2 -> stage 3 -> student checkpoint.

    \b
    Stages (the Exo2Ego recipe):
      init  from-scratch alignment on exo + ego clip text (only without --llm): one vision tower
            for both views, projector and LLM train; the tower then seeds both encoders
      1     demonstrator self-preparation: exo clip text, VTG; exo encoder + projector train
      2     demonstrator-learner guidance: ego-exo pairs, VTG + KL + cycle; ego encoder
            (migrated from exo), F, G train
      3     learner self-practice: ego instructions, VTG; ego encoder, F, LoRA on the LLM
            (merged at the end)

    \b
    Any config key can be overridden as KEY=VALUE, e.g.
      exo2ego-edge train --config egosim-tiny \\
          data.clips=[clips/train.jsonl,clips/val.jsonl] stage2.kl_weight=0.5 run.output_dir=runs/a

    \b
    Many GPUs / processes: launch the same command with torchrun (DDP; gloo on CPU, nccl on
    GPU; run.fsdp=true shards models that do not fit one GPU):
      torchrun --nproc_per_node 8 $(which exo2ego-edge) train --config exo2ego-7b ...

    \b
    The run folder (run.output_dir) holds per stage: checkpoints/ (atomic, the newest
    run.keep_checkpoints kept), metrics.jsonl, final/ (the stage's result, which the next stage
    loads), summary.json (time, losses, held-out "What am I doing?" accuracy); and student/,
    the input of `exo2ego-edge export`.
    """
    from exo2ego_edge.train.trainer import run_training

    out = run_training(config, stages=stages, overrides=overrides, resume=resume,
                       vision_tower=vision_tower, llm=llm)
    student = out.name == "student"  # else <run>/<stage>/final
    _echo_stage_summaries(out.parent if student else out.parent.parent)
    click.echo(f"{'student checkpoint' if student else 'latest stage checkpoint'}: {out}")


def _echo_stage_summaries(run: Path) -> None:
    """One line per finished stage from its summary.json: steps, time, held-out accuracy."""
    import json

    from exo2ego_edge.train.evaluation import EvalResult
    from exo2ego_edge.train.run_config import STAGE_ORDER

    for stage in STAGE_ORDER:
        path = run / stage / "summary.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            held_out = f"; {EvalResult(**summary['eval']).summary()}" if summary.get("eval") else ""
            click.echo(f"{stage}: {summary['steps']} steps in {summary['train_seconds']:.0f} s{held_out}")


@click.command(name="pretrain-tower")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the tower to.")
@click.option("--preset", default="egosim-tiny", show_default=True, help="Preset whose vision tower is pretrained.")
@click.option("--takes", default=600, show_default=True, help="Simulated takes to render for training.")
@click.option("--val-takes", default=40, show_default=True, help="Further takes held out for the accuracy report.")
@click.option("--steps", default=3000, show_default=True, help="Optimizer steps.")
@click.option("--batch-size", default=64, show_default=True, help="Frames per step.")
@click.option("--seed", default=0, show_default=True, help="Seeds the takes, the weights and the batch order.")
@click.option("--workers", default=2, show_default=True, help="Processes rendering takes.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
@click.argument("overrides", nargs=-1, metavar="[model.KEY=VALUE]...")
def pretrain_tower(out: str, preset: str, takes: int, val_takes: int, steps: int, batch_size: int, seed: int,
                   workers: int, overwrite: bool, overrides: tuple[str, ...]) -> None:
    """Pretrain a vision tower on simulator scene labels (the tiny preset's stand-in for CLIP).

    \b
    Renders ego and exo frames of simulated takes that no `data synth` world contains, and trains
    the preset's tower to name, for every patch, the kind and colour of the object it shows
    (egosim-tiny at the defaults: about 15 minutes on 2 CPU cores). The folder is a Hugging Face
    vision model with pretraining.json (settings, held-out accuracy):
      exo2ego-edge pretrain-tower --out towers/tiny
      exo2ego-edge train --config egosim-tiny --vision-tower towers/tiny data.clips=[...]
    model.* overrides change the tower as they change a training run's model; give the training
    run the same ones:
      exo2ego-edge pretrain-tower --out towers/narrow "model.vision={hidden_size: 48, num_heads: 2}"
    """
    from exo2ego_edge.train.run_config import apply_overrides
    from exo2ego_edge.train.tower_pretrain import TowerPretrainConfig
    from exo2ego_edge.train.tower_pretrain import pretrain_tower as run

    other = [o for o in overrides if not o.startswith("model.") or o.startswith("model.preset=")]
    if other:
        raise UserError(f"pretrain-tower takes only model.* overrides, the preset through --preset (got '{other[0]}')")
    if preset not in PRESETS:
        raise UserError(f"--preset '{preset}' is not one of: {', '.join(PRESETS)}")
    model = apply_overrides({"model": {"preset": preset}}, overrides)["model"]
    cfg = TowerPretrainConfig(model=model, takes=takes, val_takes=val_takes, steps=steps,
                              batch_size=batch_size, seed=seed, workers=workers)
    report = run(cfg, out, overwrite=overwrite)
    ego = report["held_out"]["ego"]
    click.echo(f"vision tower: {out} (held-out ego object patches: kind {ego['kind_acc']:.1%}, majority "
               f"{ego['kind_majority']:.1%}; colour {ego['colour_acc']:.1%})")
