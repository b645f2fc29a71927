"""A bundle's decode roofline figure, run after run: how much of its spread is the machine's.

`bench` divides a step's bytes by the STREAM copy bandwidth it measures in the same run. On a
shared VM that bandwidth moves between runs more than the step does, so one run's "% of
roofline" is one draw. This runs `exo2ego-edge bench --bundle BUNDLE` N times and tabulates, per
run, the bandwidth, the decode step's p50, its bound and the fraction achieved, with their median
and range.

    .venv/bin/python benchmarks/roofline_repeats.py BUNDLE --repeats 7 --name roofline_repeats_hybrid
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from made_by import made_by

RESULTS = Path(__file__).resolve().parent / "results"
CLI = Path(sys.executable).with_name("exo2ego-edge")


def one_run(bundle: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        subprocess.run([str(CLI), "bench", "--bundle", str(bundle), "--frames", "8", "--runs", "3",
                        "--threads", str(threads), "--contexts", "512", "--json", str(out)],
                       check=True, capture_output=True)
        report = json.loads(out.read_text())
    decode = report["results"][0]["roofline"]["decode"]
    return {"copy_gbps": report["roofline"]["bandwidth"]["best_gbps"], "step_ms": decode["measured_p50_ms"],
            "bound_ms": decode["bound_ms"], "achieved": decode["fraction_of_bandwidth_bound"],
            "mib_per_token": decode["bytes_per_token"]["total"] / 2**20, "context": decode["mean_context"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="roofline_repeats", help="results file stem")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from exo2ego_edge.runtime.sysinfo import cpu_model, int8_isa

    runs = []
    for i in range(args.repeats):
        runs.append(one_run(args.bundle, args.threads))
        print(f"run {i + 1}/{args.repeats}: {100 * runs[-1]['achieved']:.0f}% of roofline", file=sys.stderr)
    lines = [f"# Decode roofline over {args.repeats} bench runs: {args.bundle.name}", "",
             f"{made_by('roofline_repeats.py', argv)}. Each run: `exo2ego-edge bench --bundle BUNDLE --frames 8 "
             f"--runs 3 --threads {args.threads} --contexts 512`, decode at context "
             f"{runs[0]['context']:.0f}, {runs[0]['mib_per_token']:.1f} MiB/token. CPU: {cpu_model()} "
             f"(int8 instructions: {', '.join(int8_isa() or ['unknown'])}).", "",
             "| run | STREAM copy GB/s | step p50 ms | bound ms | achieved |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {r['copy_gbps']:.1f} | {r['step_ms']:.2f} | {r['bound_ms']:.2f} | {100 * r['achieved']:.0f}% |"
              for i, r in enumerate(runs)]
    summary = {k: (float(np.median([r[k] for r in runs])), min(r[k] for r in runs), max(r[k] for r in runs))
               for k in ("copy_gbps", "step_ms", "achieved")}
    lines += ["", f"Median (range): STREAM copy {summary['copy_gbps'][0]:.1f} GB/s ({summary['copy_gbps'][1]:.1f}-"
              f"{summary['copy_gbps'][2]:.1f}), step {summary['step_ms'][0]:.2f} ms ({summary['step_ms'][1]:.2f}-"
              f"{summary['step_ms'][2]:.2f}), achieved **{100 * summary['achieved'][0]:.0f}%** "
              f"({100 * summary['achieved'][1]:.0f}-{100 * summary['achieved'][2]:.0f}%)."]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"bundle": args.bundle.name, "cpu": cpu_model(), "int8_isa": int8_isa(), "runs": runs,
         "median": {k: v[0] for k, v in summary.items()}}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
