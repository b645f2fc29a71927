"""`exo2ego-edge demo`: the whole product on simulated egocentric video, one step at a time.

synthesize a world -> build Ego-ExoClip pairs -> train the tiny student -> evaluate it ->
export it with --int8 -> answer questions on held-out ego clips (streamed) -> benchmark the bundle.
Each step is a call into the same library function the step's own command uses.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from exo2ego_edge.assets import SHIPPED_STUDENT
from exo2ego_edge.prompt import DOING_QUESTION



@dataclass
class DemoPaths:
    root: Path

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle-int8"

    @property
    def report(self) -> Path:
        return self.root / "bench"


def run_steps(steps: list[tuple[str, Callable[[], str]]]) -> None:
    """Numbered, timed steps that say what they did and where the output is."""
    began = time.perf_counter()
    for number, (title, fn) in enumerate(steps, 1):
        click.secho(f"\n[{number}/{len(steps)}] {title}", bold=True)
        t = time.perf_counter()
        where = fn()
        click.echo(f"    done in {time.perf_counter() - t:.1f} s -> {where}")
    click.secho(f"\ndemo finished in {time.perf_counter() - began:.0f} s", bold=True)


def _synthesize(p: DemoPaths, takes: int, seed: int) -> str:
    from exo2ego_edge.data.simulator import synthesize_world

    report = synthesize_world(p.world, takes=takes, seed=seed, size=64, overwrite=True, progress=True)
    click.echo(f"    {report.summary()}")
    return str(p.world)


def _build_clips(p: DemoPaths) -> str:
    from exo2ego_edge.data.clips import build_clips, dataset_stats, format_stats

    for split in ("train", "val"):
        report = build_clips(p.world, split, p.clips / f"{split}.jsonl", progress=False)
        click.echo(f"    {split}: {report.summary().splitlines()[0]}")
    stats = format_stats(dataset_stats(p.world, p.clips / "train.jsonl"))
    click.echo("    " + stats.replace("\n", "\n    "))
    return str(p.clips)


def _train(p: DemoPaths, config: str) -> str:
    from exo2ego_edge.train.trainer import run_training

    shutil.rmtree(p.run, ignore_errors=True)  # a fresh run each time, not a resume of the last
    clips = f"data.clips=[{p.clips / 'train.jsonl'},{p.clips / 'val.jsonl'}]"
    student = run_training(config, overrides=[clips, f"run.output_dir={p.run}"])
    return str(student)


def _held_out_rows(p: DemoPaths, limit: int) -> list[dict]:
    from exo2ego_edge.data.clips import read_jsonl
    from exo2ego_edge.train.evaluation import select_doing_rows

    rows = read_jsonl(p.clips / "val.instructions.jsonl")
    return select_doing_rows(rows, "val", limit)


def _evaluate(p: DemoPaths, student: Path) -> str:
    import numpy as np
    import torch

    from exo2ego_edge.runtime.video import decode_clip
    from exo2ego_edge.model import load_student
    from exo2ego_edge.train.evaluation import evaluate_doing

    model, tokenizer, _ = load_student(student)
    cfg = model.cfg
    rows = _held_out_rows(p, 64)
    frames = np.stack([decode_clip(r["ego_video"], r["start"], r["end"], cfg.num_frames, cfg.vision.image_size)
                       for r in rows])
    result = evaluate_doing(model, tokenizer, torch.from_numpy(frames), rows)
    click.echo(f"    '{DOING_QUESTION}' on {result.n} held-out ego clips: verb {result.verb_acc:.0%} "
               f"(chance {result.chance_verb:.0%}), object {result.object_acc:.0%} "
               f"(chance {result.chance_object:.0%}), both {result.both_acc:.0%} (chance {result.chance_both:.0%}), "
               f"object with its colour {result.phrase_acc:.0%} (chance {result.chance_phrase:.0%})")
    return "printed above"


def _export(p: DemoPaths, student: Path) -> str:
    from exo2ego_edge.export.inspect_bundle import format_manifest
    from exo2ego_edge.export.pipeline import export_bundle

    export_bundle(student, p.bundle, precision="int8", overwrite=True, eval_data=p.clips / "val.jsonl")
    click.echo("    " + format_manifest(p.bundle).replace("\n", "\n    "))
    return str(p.bundle)


def _ask(p: DemoPaths, questions: int) -> str:
    from exo2ego_edge.runtime import Runtime
    from exo2ego_edge.train.evaluation import answer_parts

    rt = Runtime.load(p.bundle)
    right = 0
    for row in _held_out_rows(p, questions):
        click.echo(f"    {Path(row['ego_video']).parts[-3]} [{row['start']:.1f}-{row['end']:.1f} s] {DOING_QUESTION}")
        session = rt.session(row["ego_video"], start=row["start"], end=row["end"])
        click.echo("      answer:       ", nl=False)
        stream = session.stream(DOING_QUESTION, max_new_tokens=24)
        for token in stream:
            click.echo(token.text, nl=False)
        # Verb and noun alone read as right when the colour is wrong: say which part matched.
        parts = answer_parts(stream.answer.text, row)
        right += all(parts.values())
        click.echo(f"\n      ground truth: {row['answer']}  ("
                   + ", ".join(f"{part} {'right' if ok else 'WRONG'}" for part, ok in parts.items()) + ")")
    click.echo(f"    {right} of {questions} answers have the right verb, object and colour")
    return f"{p.bundle} via exo2ego_edge.runtime"


def _bench(p: DemoPaths) -> str:
    from exo2ego_edge.perf.harness import BenchConfig, plot, run_benchmark, to_markdown

    from exo2ego_edge.bundle import read_manifest

    frames = read_manifest(p.bundle).preprocessing.num_frames  # the clip length the student was trained on
    report = run_benchmark(p.bundle, BenchConfig(frames=[frames], runs=5, warmup=1, new_tokens=16))
    p.report.mkdir(parents=True, exist_ok=True)
    (p.report / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = to_markdown(report)
    (p.report / "bench.md").write_text(markdown)
    plot(report, p.report / "bench.png")
    click.echo("    " + "\n    ".join(markdown.splitlines()[:24]))
    return str(p.report)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Where every step writes its output (replaced if it exists).")
@click.option("--quick", is_flag=True, help="Skip training: use the student shipped in the package.")
@click.option("--takes", type=int, default=None, help="Simulated takes (default: 120, or 24 with --quick).")
@click.option("--config", default="egosim-tiny-demo", show_default=True, help="Training config for the demo.")
@click.option("--questions", type=int, default=6, show_default=True, help="Held-out clips to ask about.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, quick: bool, takes: int | None, config: str, questions: int, seed: int) -> None:
    """Run the whole pipeline on simulated egocentric video (about 10 minutes on 2 CPU cores).

    \b
    synthesize -> build clips -> train -> evaluate -> export --int8 -> ask (streamed) -> bench
    With --quick, training is skipped and the shipped egosim-tiny student is used.
    """
    from exo2ego_edge.errors import UserError

    missing = [m for m in ("torch", "onnx") if not _importable(m)]
    if missing:
        raise UserError(f"the demo trains, evaluates and exports, which needs {' and '.join(missing)}: this is a "
                        "device install; install exo2ego-edge[train,export], or here run a bundle: "
                        "exo2ego-edge run --video exo2ego_edge/assets/sample_ego.mp4 --question 'What am I doing?'")
    if quick and not (SHIPPED_STUDENT / "config.json").is_file():
        raise UserError(f"no shipped student at {SHIPPED_STUDENT}; run the demo without --quick")
    p = DemoPaths(out)
    student = SHIPPED_STUDENT if quick else p.run / "student"
    # The shipped student was trained on a world of another seed (benchmarks/ship_student.py), so
    # with --quick every take here is new to it.
    train = [] if quick else [(f"Train the egosim-tiny student (init -> stage 1 -> 2 -> 3, config {config})",
                               lambda: _train(p, config))]
    run_steps([
        ("Synthesize a simulated Ego-Exo4D world", lambda: _synthesize(p, takes or (24 if quick else 120), seed)),
        ("Build Ego-ExoClip pairs and instructions", lambda: _build_clips(p)),
        *train,
        ("Evaluate the student on held-out ego clips (PyTorch)", lambda: _evaluate(p, student)),
        ("Export with --int8 and inspect the bundle", lambda: _export(p, student)),
        ("Answer questions on held-out ego clips with the INT8 bundle (streamed)", lambda: _ask(p, questions)),
        ("Benchmark the bundle", lambda: _bench(p)),
    ])
