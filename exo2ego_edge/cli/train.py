"""`exo2ego-edge train`: a thin command over :func:`exo2ego_edge.train.trainer.run_training`."""

from __future__ import annotations

import click


@click.command(name="train", context_settings={"ignore_unknown_options": False})
@click.option("--config", "config", default="egosim-tiny", show_default=True, metavar="FILE|NAME",
              help="YAML run config, or a bundled one: egosim-tiny, egosim-tiny-quick, exo2ego-7b.")
@click.option("--stages", default=None, metavar="LIST",
              help="Comma-separated stages to run, in order: init,1,2,3 (default: all of them; "
                   "1,2,3 when --llm is given).")
@click.option("--resume", is_flag=True,
              help="Continue the run in run.output_dir: finished stages are skipped, an interrupted "
                   "one restarts from its newest checkpoint exactly (weights, optimizer, schedule, "
                   "data order, RNG).")
@click.option("--vision-tower", type=click.Path(exists=True, file_okay=False), default=None,
              help="Local Hugging Face SigLIP / CLIP vision model folder for both encoders.")
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
    what = "student checkpoint" if out.name == "student" else "latest stage checkpoint"
    click.echo(f"{what}: {out}")
