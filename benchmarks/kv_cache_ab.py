"""Decode per token against context, KV cache layouts side by side: one process, steps interleaved.

Builds (or reuses) the edge-0.5b INT8 bundles that differ only in ``--kv-cache`` (random weights,
all 24 LLM layers, the integer CPU decoder), loads both runtimes, and at each context prefills
random tokens into each, then times decode steps alternately, A B A B: drift on this shared
2-core machine falls on both alike, and each step pair gives a ratio. Reports p50 ms per token,
each layout's time at each context as a multiple of its time at the shortest, and the in-place /
concat ratio (median over step pairs).

    .venv/bin/python benchmarks/kv_cache_ab.py [--contexts 256,512,2048,4000] [--steps 40]

Writes benchmarks/results/kv_cache_ab.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from made_by import made_by

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LAYOUTS = ("concat", "in-place")


def step_times(runtimes: dict, context: int, steps: int, warmup: int, seed: int) -> dict[str, list[float]]:
    """Seconds per decode step with ``context`` positions cached, steps alternating between runtimes."""
    ids = np.random.default_rng(seed).integers(0, 150000, context).tolist()
    states, tokens = {}, {}
    for name, rt in runtimes.items():
        prefix, _ = rt.decoder.extend(None, rt.prompt.embed(ids))
        states[name], tokens[name] = rt.decoder.start(prefix), rt.prompt.embed(ids[-1:])
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    for i in range(warmup + steps):
        for name, rt in runtimes.items():
            t = time.perf_counter()
            rt.decoder.step(states[name], tokens[name])
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-layers", type=int, default=24)
    p.add_argument("--contexts", default="256,512,2048,4000")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from exo2ego_edge.export.random_bundle import build_random_bundle
    from exo2ego_edge.runtime import Runtime
    from exo2ego_edge.runtime.sysinfo import cpu_model, int8_isa

    contexts = [int(c) for c in args.contexts.split(",")]
    # decoder_schemes.py's bundles (the same cache entries): in-place is the CPU export's default
    bundles = {kv: build_random_bundle("edge-0.5b", "int8", llm_layers=args.llm_layers, cpu_decoder="integer",
                                       **({"kv_cache": kv} if kv == "concat" else {}))
               for kv in LAYOUTS}
    runtimes = {kv: Runtime.load(b, backend="ort", device="cpu", threads=args.threads) for kv, b in bundles.items()}
    rows = []
    for i, context in enumerate(contexts):
        times = step_times(runtimes, context, args.steps, args.warmup, seed=i)
        p50 = {kv: float(np.median(t)) * 1e3 for kv, t in times.items()}
        ratio = float(np.median(np.array(times["concat"]) / np.array(times["in-place"])))
        rows.append({"context": context, "p50_ms": p50, "concat_over_in_place": ratio})
        print(f"context {context}: " + ", ".join(f"{kv} {v:.1f} ms" for kv, v in p50.items())
              + f"; in-place {ratio:.2f}x faster", flush=True)
    first = rows[0]["p50_ms"]
    lines = [f"# KV cache layouts: decode per token against context (edge-0.5b, {args.llm_layers} LLM layers, INT8)", "",
             f"{made_by('kv_cache_ab.py', argv)}: random weights, the integer "
             f"CPU decoder, {args.threads} threads, {args.steps} steps per layout and context after {args.warmup} "
             f"warm-up, the two layouts' steps alternating in one process. CPU: {cpu_model()} ({os.cpu_count()} cores; "
             f"int8 instructions: {', '.join(int8_isa() or ['unknown'])}).", "",
             "p50 ms per token; in brackets the time per token as a multiple of the same layout's at "
             f"{contexts[0]} tokens. Last column: concat's time over in-place's, median over step pairs.", "",
             "| context | concat | in-place | in-place speed-up |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['context']} | " + " | ".join(
            f"{r['p50_ms'][kv]:.1f} ({r['p50_ms'][kv] / first[kv]:.2f}x)" for kv in LAYOUTS)
            + f" | {r['concat_over_in_place']:.2f}x |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "kv_cache_ab.md").write_text("\n".join(lines) + "\n")
    (args.results / "kv_cache_ab.json").write_text(json.dumps(
        {"llm_layers": args.llm_layers, "threads": args.threads, "steps": args.steps, "cpu": cpu_model(),
         "int8_isa": int8_isa(), "bundles": {k: str(v) for k, v in bundles.items()}, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
