"""Decode per token (and optionally prefill) of two bundles side by side: one process, calls
interleaved A B A B.

For an A/B of one export change on the same weights (two exports of one checkpoint, before and
after): both runtimes are loaded, each prefills the same random tokens at each context, then
their decode steps alternate, so drift on a shared machine falls on both alike and every step
pair gives a ratio (``kv_cache_ab.step_times``). Reports p50 ms per token and B's speed-up over A
(A's time over B's, median over step pairs). ``--prefill N`` also times prefills of N tokens from
an empty cache, alternating the same way.

    .venv/bin/python benchmarks/decode_ab.py BUNDLE_A BUNDLE_B --labels "before,after" \
        [--contexts 512] [--steps 60] [--prefill 448] --name NAME

Writes benchmarks/results/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from kv_cache_ab import step_times
from made_by import made_by

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def prefill_times(runtimes: dict, tokens: int, runs: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per prefill of ``tokens`` random tokens from an empty cache, alternating between runtimes."""
    ids = np.random.default_rng(seed).integers(0, 150000, tokens).tolist()
    embeds = {name: rt.prompt.embed(ids) for name, rt in runtimes.items()}
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for i in range(runs + 1):  # the first round warms up
        for name, rt in runtimes.items():
            t = time.perf_counter()
            rt.decoder.extend(None, embeds[name])
            if i:
                times[name].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", type=Path, nargs=2, metavar="BUNDLE")
    p.add_argument("--labels", default="A,B", help="the two bundles' names in the report [A,B]")
    p.add_argument("--contexts", default="512")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--name", required=True, help="results file stem")
    p.add_argument("--prefill", type=int, default=0, help="also time prefills of this many tokens (0: none)")
    p.add_argument("--prefill-runs", type=int, default=7)
    p.add_argument("--note", default="", help="a sentence for the report: how the two bundles were made")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from exo2ego_edge.bundle import load_manifest
    from exo2ego_edge.runtime import Runtime
    from exo2ego_edge.runtime.sysinfo import cpu_model, int8_isa

    labels = args.labels.split(",")
    if len(labels) != 2:
        p.error("--labels takes two names, comma-separated")
    runtimes = {label: Runtime.load(b, backend="ort", device="cpu", threads=args.threads)
                for label, b in zip(labels, args.bundles)}
    a, b = labels
    rows = []
    for i, context in enumerate(int(c) for c in args.contexts.split(",")):
        times = step_times(runtimes, context, args.steps, args.warmup, seed=i)
        p50 = {k: float(np.median(t)) * 1e3 for k, t in times.items()}
        ratios = np.array(times[a]) / np.array(times[b])
        rows.append({"context": context, "p50_ms": p50, "speedup": float(np.median(ratios)),
                     "speedup_p10_p90": [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))]})
        print(f"context {context}: {a} {p50[a]:.2f} ms, {b} {p50[b]:.2f} ms; {b} {rows[-1]['speedup']:.3f}x", flush=True)
    prefill = None
    if args.prefill:
        times = prefill_times(runtimes, args.prefill, args.prefill_runs)
        ratios = np.array(times[a]) / np.array(times[b])
        prefill = {"tokens": args.prefill, "runs": args.prefill_runs, "speedup": float(np.median(ratios)),
                   "p50_ms": {k: float(np.median(t)) * 1e3 for k, t in times.items()},
                   "speedup_min_max": [float(ratios.min()), float(ratios.max())]}
        print(f"prefill {args.prefill}: {b} {prefill['speedup']:.3f}x", flush=True)
    decoders = {label: {k: g.matmuls for k, g in load_manifest(path, verify=False).graphs.items() if k != "vision"}
                for label, path in zip(labels, args.bundles)}
    lines = [f"# Decode A/B: {a} vs {b}", "",
             f"{made_by('decode_ab.py', argv)}. {args.threads} threads, {args.steps} steps per bundle and context "
             f"after {args.warmup} warm-up, the two bundles' steps alternating in one process. CPU: {cpu_model()} "
             f"({os.cpu_count()} cores; int8 instructions: {', '.join(int8_isa() or ['unknown'])}).", "",
             f"Decoder graphs (weight products): {a} {decoders[a]}, {b} {decoders[b]}. {args.note}".rstrip(), "",
             f"| context | {a} p50 ms/token | {b} p50 ms/token | {b} speed-up (median of step pairs) | p10-p90 |",
             "|---:|---:|---:|---:|---|"]
    for r in rows:
        lo, hi = r["speedup_p10_p90"]
        lines.append(f"| {r['context']} | {r['p50_ms'][a]:.2f} | {r['p50_ms'][b]:.2f} | {r['speedup']:.3f}x | {lo:.2f}-{hi:.2f} |")
    if prefill:
        lo, hi = prefill["speedup_min_max"]
        lines += ["", f"| prefill from an empty cache | {a} p50 ms | {b} p50 ms | {b} speed-up (median of {prefill['runs']} pairs) | min-max |",
                  "|---|---:|---:|---:|---|",
                  f"| {prefill['tokens']} tokens | {prefill['p50_ms'][a]:.1f} | {prefill['p50_ms'][b]:.1f} | "
                  f"{prefill['speedup']:.3f}x | {lo:.2f}-{hi:.2f} |"]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"bundles": dict(zip(labels, map(str, args.bundles))), "note": args.note, "decoders": decoders, "threads": args.threads,
         "steps": args.steps, "prefill": prefill, "cpu": cpu_model(), "int8_isa": int8_isa(), "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
