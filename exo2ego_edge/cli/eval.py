"""`exo2ego-edge eval`: score a checkpoint or a bundle on EgoSim-Bench / EgoBench.

Thin click over :mod:`exo2ego_edge.eval.scoring` (the same scoring for both, so FP32 vs INT8 is
one flag apart) and the suite readers in :mod:`exo2ego_edge.eval.egosim_bench` /
:mod:`exo2ego_edge.eval.egobench`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from exo2ego_edge.errors import UserError


@click.command(name="eval")
@click.option("--checkpoint", type=click.Path(path_type=Path, file_okay=False), help="Student (or stage) checkpoint folder: scored with PyTorch.")
@click.option("--bundle", type=click.Path(path_type=Path, file_okay=False), help="Bundle folder: scored through the runtime.")
@click.option("--backend", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True,
              help="With --bundle: ONNX Runtime, or the TensorRT engines `engines build` made (the ones that ship).")
@click.option("--suite", type=click.Choice(["egosim", "egobench"]), required=True, help="Which benchmark.")
@click.option("--data", type=click.Path(path_type=Path, exists=True), required=True,
              help="egosim: a simulated world (questions made from its val takes) or a suite folder of "
                   "<task>.jsonl; egobench: a JSON file naming each benchmark's local annotation files, "
                   "or a folder of converted <task>.jsonl.")
@click.option("--tasks", default=None, metavar="LIST", help="Comma-separated task names (default: all).")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), help="Also write the results as JSON here.")
@click.option("--predictions", type=click.Path(path_type=Path, dir_okay=False),
              help="egobench: also write EgoSchema's predictions {q_uid: option} for every question read: the "
                   "file EgoSchema's server scores (only 500 of its answers are public).")
@click.option("--normalize", type=click.Choice(["mean", "sum"]), default="mean", show_default=True,
              help="Multiple choice: mean log-prob per option token, or the sum.")
@click.option("--seed", type=int, default=0, show_default=True, help="EgoSim-Bench generation seed (world input only).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (torch for --checkpoint, ONNX Runtime for --bundle).")
def eval_(checkpoint: Path | None, bundle: Path | None, backend: str, suite: str, data: Path, tasks: str | None,
          json_out: Path | None, predictions: Path | None, normalize: str, seed: int, device: str,
          threads: int | None) -> None:
    """Score a checkpoint (--checkpoint) or a bundle (--bundle) on EgoSim-Bench or EgoBench.

    \b
    Choice questions: the option with the highest mean log-likelihood given the clip and the
    question; action recognition: mAP over verb classes; retrieval: text-to-clip mAP / nDCG;
    open questions: greedy answer, normalised exact match. Every score has its chance level.

    \b
      exo2ego-edge eval --checkpoint runs/egosim-tiny/student --suite egosim --data world/
      exo2ego-edge eval --bundle bundle-int8 --suite egosim --data world/ --json int8.json
      exo2ego-edge eval --bundle bundle --suite egobench --data egobench.json --tasks egoschema \\
          --predictions egoschema-predictions.json

    \b
    EgoBench first prints, per benchmark, how many questions were read, how many are scorable
    (EgoSchema keeps most answers private) and how many of their videos exist, and stops there
    when videos are missing.
    """
    from exo2ego_edge.atomic import atomic_file, check_writable
    from exo2ego_edge.eval.scoring import make_scorer, score_suite

    for path, flag in ((json_out, "--json"), (predictions, "--predictions")):
        if path is not None:
            check_writable(path, f"{flag} {path}")  # before minutes of scoring
    if predictions is not None and suite != "egobench":
        raise UserError("--predictions is for --suite egobench (EgoSchema's server)")
    wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    if suite == "egosim":
        scorer = make_scorer(checkpoint, bundle, device=device, threads=threads, backend=backend)  # fail fast
        (questions, category), egoschema = _egosim(data, wanted, seed), []
    else:  # the counts come first: a config is checked without a model, missing videos before loading one
        questions, category, egoschema = _egobench(data, wanted, predictions is not None)
        scorer = make_scorer(checkpoint, bundle, device=device, threads=threads, backend=backend)
    frames: dict = {}  # decoded clips, shared by scoring and the predictions
    if questions:
        result = score_suite(scorer, questions, normalize=normalize, frames=frames, category=category, progress=True)
        click.echo(result.table())
        click.echo(f"{sum(t.n for t in result.tasks)} questions in {result.seconds:.1f} s ({scorer.name})")
        if json_out is not None:
            with atomic_file(json_out) as f:
                json.dump(result.to_dict(), f, indent=2)
            click.echo(f"results: {json_out}")
    if predictions is not None:
        from exo2ego_edge.eval.egobench import predict_choices

        picks = predict_choices(scorer, egoschema, normalize=normalize, frames=frames, progress=True)
        with atomic_file(predictions) as f:
            json.dump(picks, f, indent=1)
        click.echo(f"EgoSchema predictions for {len(picks)} questions: {predictions} "
                   "(EgoSchema's README says where to send them)")


def _egosim(data: Path, tasks: list[str] | None, seed: int):
    from exo2ego_edge.eval.questions import read_suite
    from exo2ego_edge.eval.egosim_bench import category_of, generate_suite

    if (data / "simulator" / "take_records.jsonl").is_file():
        suite = generate_suite(data, seed=seed, tasks=tasks)
    elif data.is_dir():
        suite = read_suite(data, tasks)
    else:
        raise UserError(f"{data}: neither a simulated world (simulator/take_records.jsonl) nor a suite folder")
    return {t: q for t, q in suite.items() if q}, category_of


def _egobench(data: Path, tasks: list[str] | None, predict: bool):
    """Read every benchmark, print what was read (even when it cannot be scored), and refuse missing
    videos before any model is loaded. Returns the scorable suite, the categories and, for
    ``--predictions``, every EgoSchema question."""
    from exo2ego_edge.eval.egobench import category_of, read_egobench, suite_of

    readings = read_egobench(data)
    suite = suite_of(readings, tasks)
    readings = [r for r in readings if not tasks or r.tasks & set(tasks)]
    for r in readings:
        click.echo(r.summary())
    missing = sum(r.videos - r.found for r in readings)
    if missing:
        raise UserError(f"{missing} video(s) the questions name are missing (counts above): "
                        f"fix the video folders in {data}")
    egoschema = [q for r in readings if r.benchmark == "egoschema" for q in r.questions]
    if predict and not egoschema:
        raise UserError(f"--predictions: {data} reads no EgoSchema question")
    if not suite and not predict:
        raise UserError(f"{data}: no scorable question (counts above)")
    return suite, category_of, egoschema
