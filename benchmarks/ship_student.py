"""Reproduce the egosim-tiny student and INT8 bundle shipped in ``exo2ego_edge/assets/``.

    python benchmarks/ship_student.py            # the exact command the shipped files came from

It runs the demo pipeline on the full ``egosim-tiny`` schedule (synthesize, build clips, train,
evaluate, export --int8, answer, bench) and copies its student, its bundle and one held-out ego
clip into the package, with a PROVENANCE.md that records the command, seed and accuracy. The
world's seed (7) differs from the demo's (0), so ``make demo`` / ``demo --quick`` never asks the
shipped student about a take it was trained on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "exo2ego_edge" / "assets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--takes", type=int, default=160)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", default="egosim-tiny")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "ship")
    args = parser.parse_args()

    command = [sys.executable, "-c", "from exo2ego_edge.cli import main; main()", "demo", "--out", str(args.work),
               "--takes", str(args.takes), "--seed", str(args.seed), "--config", args.config, "--questions", "8"]
    log = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    print(log)

    for name, src in (("egosim-tiny-student", args.work / "run" / "student"),
                      ("egosim-tiny-int8", args.work / "bundle-int8")):
        shutil.rmtree(ASSETS / name, ignore_errors=True)
        shutil.copytree(src, ASSETS / name)
    for stray in ("metrics.jsonl",):
        (ASSETS / "egosim-tiny-student" / stray).unlink(missing_ok=True)
    sample = ship_sample_clip(args.work)
    evaluation = next(line.strip() for line in log.splitlines() if "held-out ego clips:" in line)
    (ASSETS / "PROVENANCE.md").write_text(
        "# Shipped egosim-tiny student, INT8 bundle and sample clip\n\n"
        f"Made by `python benchmarks/ship_student.py --takes {args.takes} --seed {args.seed} "
        f"--config {args.config}` (world seed {args.seed}, {args.takes} simulated takes at 64 px).\n\n"
        f"Held-out evaluation at ship time: {evaluation}\n\n"
        f"`sample_ego.mp4`: the ego video of held-out take `{sample['take']}`; ask about "
        f"[{sample['start']}, {sample['end']}] s, ground truth: \"{sample['answer']}\".\n"
    )


def ship_sample_clip(work: Path) -> dict:
    """The ego video of one held-out take, and the question window the README uses."""
    rows = [json.loads(line) for line in (work / "clips" / "val.instructions.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["question"] == "What am I doing?" and r.get("object"))
    shutil.copyfile(row["ego_video"], ASSETS / "sample_ego.mp4")
    sample = {"take": Path(row["ego_video"]).parts[-3], "start": row["start"], "end": row["end"],
              "question": row["question"], "answer": row["answer"]}
    (ASSETS / "sample_ego.json").write_text(json.dumps(sample, indent=2) + "\n")
    return sample


if __name__ == "__main__":
    main()
