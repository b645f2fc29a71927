"""Train the egosim-tiny preset through every stage on a simulated world; time and score each stage.

    python benchmarks/train_tiny.py --work /tmp/egosim-bench            # synthesize + build + train
    python benchmarks/train_tiny.py --work /tmp/egosim-bench --takes 160 --seed 0

Writes benchmarks/results/training_egosim_tiny.{md,json}: wall time per stage (training only,
evaluation excluded), the whole run's wall time (frame decoding included), and held-out
"What am I doing?" accuracy after each stage (verb, object, both) next to the majority-label
chance level of the scored clips.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
STAGES = ("init", "stage1", "stage2", "stage3")


def prepare(work: Path, takes: int, size: int, seed: int) -> list[str]:
    from exo2ego_edge.data.clips import split_clip_files
    from exo2ego_edge.data.simulator import synthesize_world

    world = work / "world"
    if not (world / "takes.json").is_file():
        synthesize_world(world, takes=takes, size=size, seed=seed, progress=True)
    return split_clip_files(world, work / "clips")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/egosim-bench"))
    ap.add_argument("--takes", type=int, default=160)
    ap.add_argument("--size", type=int, default=64, help="simulator video size (pixels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="egosim-tiny")
    ap.add_argument("--clips", nargs=2, metavar=("TRAIN", "VAL"), default=None,
                    help="use these clip files (already built; decoded-frame caches beside them are reused)")
    ap.add_argument("--vision-tower", type=Path, default=None,
                    help="start both vision encoders from this local Hugging Face folder")
    ap.add_argument("--note", default="", help="where / how it ran, copied into the results")
    ap.add_argument("--name", default="training_egosim_tiny", help="results file name (without extension)")
    ap.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from exo2ego_edge.train.run_config import load_config
    from exo2ego_edge.train.trainer import run_training

    clips = args.clips or prepare(args.work, args.takes, args.size, args.seed)
    out = args.work / f"run-{int(time.time())}"
    load_before = os.getloadavg()
    began = time.perf_counter()
    run_training(args.config, overrides=[f"data.clips=[{','.join(clips)}]", f"run.output_dir={out}",
                                         f"run.seed={args.seed}", "run.progress_bar=false", *args.overrides],
                 vision_tower=args.vision_tower)
    total = time.perf_counter() - began
    tower = args.vision_tower or load_config(args.config, args.overrides).weights.vision_tower
    stages = {s: json.loads((out / s / "summary.json").read_text()) for s in STAGES}
    rows = [r for f in clips for r in map(json.loads, Path(f).read_text().splitlines())]
    result = {
        "config": args.config, "overrides": args.overrides,
        "vision_tower": str(tower) if tower else None, "takes": args.takes, "video_size": args.size,
        "seed": args.seed, "clip_pairs": {s: sum(r["split"] == s for r in rows) for s in ("train", "val")},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(), "torch": torch.__version__},
        "note": args.note,
        "load_avg": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "total_wall_s": round(total, 1),
        "train_wall_s": round(sum(s["train_seconds"] for s in stages.values()), 1),
        "stages": stages,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines = [
        "# Training the egosim-tiny preset on 2 CPU cores",
        "",
        f"Reproduce: `python benchmarks/train_tiny.py --takes {r['takes']} --seed {r['seed']}` "
        f"(config `{r['config']}`{', overrides ' + ' '.join(r['overrides']) if r['overrides'] else ''}; "
        f"vision tower: {r.get('vision_tower') or 'random weights'}).",
        f"World: {r['takes']} simulated takes at {r['video_size']} px, {r['clip_pairs']['train']} train / "
        f"{r['clip_pairs']['val']} val ego-exo clip pairs. Machine: {r['machine']['cpus']} CPUs, "
        f"torch {r['machine']['torch']}, {r['machine']['torch_threads']} torch threads. {r.get('note', '')}",
        *([f"Load average (1/5/15 min) before the run {r['load_avg']['before']}, after {r['load_avg']['after']}."]
          if "load_avg" in r else []),
        "",
        f"Whole run {r['total_wall_s']:.0f} s (frame decoding, tokenizer, evaluation included); "
        f"training alone {r['train_wall_s']:.0f} s.",
        "",
        "Held-out ego clips (val takes), question \"What am I doing?\", greedy answer; a verb counts in any "
        "inflection. Object: the noun (\"block\"); object phrase: the noun with its colour (\"blue block\"), "
        "both as in the reference; per-kind mean: the object's accuracy averaged over its kinds. Chance = always "
        "answering the most frequent label of the scored clips.",
        "",
        "| stage | steps | train s | final loss | verb | object | object, per-kind mean | verb + object | object phrase |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in r["stages"].items():
        e = s.get("eval", {})
        losses = s.get("final_losses", {})
        loss = " / ".join(f"{k} {v:.3f}" for k, v in losses.items() if k != "loss") if len(losses) > 2 else \
            f"{losses.get('loss', float('nan')):.3f}"
        lines.append(f"| {name} ({s['title']}) | {s['steps']} | {s['train_seconds']:.0f} | {loss} | "
                     f"{pct(e.get('verb_acc', 0))} | {pct(e.get('object_acc', 0))} | "
                     f"{pct(e.get('object_balanced_acc', 0))} | {pct(e.get('both_acc', 0))} | "
                     f"{pct(e.get('phrase_acc', 0))} |")
    e = r["stages"]["stage3"].get("eval", {})
    lines += [
        f"| chance (majority label, n={e.get('n', 0)}) | | | | {pct(e.get('chance_verb', 0))} | "
        f"{pct(e.get('chance_object', 0))} | {pct(e.get('chance_object_balanced', 0))} | "
        f"{pct(e.get('chance_both', 0))} | {pct(e.get('chance_phrase', 0))} |",
        "",
        "Sample answers of the student (stage 3):",
        "",
        *[f"- \"{x['answer']}\" (reference: \"{x['reference']}\")" for x in e.get("examples", [])[:5]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
