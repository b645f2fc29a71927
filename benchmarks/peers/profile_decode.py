"""Which op a bundle's decode step spends its time in: ONNX Runtime's profiler on decoder.onnx.

    .venv/bin/python benchmarks/peers/profile_decode.py BUNDLE [--context 300] [--steps 20] [--threads T]

Runs the decoder graph as the runtime does (one token, a KV cache of ``--context`` positions, the last
position's logits) with
``enable_profiling``, then sums kernel time per op type over the steps (the first step is dropped:
it pays one-off allocation). Prints a table, and writes it as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np


def profile(bundle: Path, context: int, steps: int, threads: int | None) -> dict:
    import onnxruntime as ort

    from exo2ego_edge.bundle import BATCH, LOGITS_TO_KEEP, PAST, load_manifest

    m = load_manifest(bundle)
    d = m.graphs["decoder"]
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(bundle.parent / f"ortprof_{bundle.name}")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(bundle / d.file), opts, providers=["CPUExecutionProvider"])
    dec = m.decoder
    dtypes = {t.name: np.dtype(t.dtype) for t in d.inputs}
    rng = np.random.default_rng(0)
    feeds = {
        "inputs_embeds": rng.standard_normal((1, 1, dec.hidden_size)).astype(dtypes["inputs_embeds"]),
        "attention_mask": np.ones((1, context + 1), np.int64),
        "position_ids": np.array([[context]], np.int64),
    }
    if LOGITS_TO_KEEP in dtypes:  # the runtime asks for the last position's logits only
        feeds[LOGITS_TO_KEEP] = np.array(1, np.int64)
    for t in d.inputs:
        if t.name.startswith("past_key_values"):  # the layout the manifest gives (concat or in-place)
            shape = [context if a == PAST else 1 if a == BATCH else a for a in t.shape]
            feeds[t.name] = rng.standard_normal(shape).astype(dtypes[t.name])
    for _ in range(steps + 1):
        sess.run(None, feeds)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    by_op: Counter[str] = Counter()
    by_node: Counter[str] = Counter()
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > first_end:
            op = e["args"].get("op_name", "?")
            by_op[op] += e["dur"]
            by_node[e["name"].removesuffix("_kernel_time")] += e["dur"]
    total = sum(by_op.values())
    step_us = [r["dur"] for r in runs[1:]]
    return {
        "bundle": str(bundle), "precision": d.precision, "context": context, "steps": steps,
        "step_ms_p50": float(np.median(step_us)) / 1e3 if step_us else None,
        "kernel_ms_per_step": total / steps / 1e3,
        "by_op_share": {op: us / total for op, us in by_op.most_common()},
        "by_op_ms_per_step": {op: us / steps / 1e3 for op, us in by_op.most_common()},
        "top_nodes_ms_per_step": {n: us / steps / 1e3 for n, us in by_node.most_common(8)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--context", type=int, default=300)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rep = profile(args.bundle, args.context, args.steps, args.threads)
    print(f"{rep['bundle']} ({rep['precision']}), context {rep['context']}: step p50 {rep['step_ms_p50']:.2f} ms, "
          f"kernels {rep['kernel_ms_per_step']:.2f} ms/step")
    for op, share in rep["by_op_share"].items():
        print(f"  {op:28s} {100 * share:5.1f}%  {rep['by_op_ms_per_step'][op]:.3f} ms/step")
    print("top nodes:")
    for n, ms in rep["top_nodes_ms_per_step"].items():
        print(f"  {n:60s} {ms:.3f} ms/step")
    if args.out:
        args.out.write_text(json.dumps(rep, indent=2) + "\n")


if __name__ == "__main__":
    main()
