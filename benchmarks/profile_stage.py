"""Which op a bundle's stage spends its time in: ONNX Runtime's profiler on one of its graphs.

    .venv/bin/python benchmarks/profile_stage.py BUNDLE [--stage decode|prefill|vision] [--size N]
        [--runs 20] [--threads T] [--out FILE.json]

Runs the graph as the runtime does, with ``enable_profiling``, and sums kernel time per op type over
the runs (the first run is dropped: it pays one-off allocation):

- ``decode``: one token after a KV cache of ``--size`` positions (default 300), the last position's
  logits, in the cache layout the manifest gives (concat or in-place), on the step graph where the
  bundle has one;
- ``prefill``: ``--size`` new tokens (default 448: 8 frames of edge-0.5b and a question) after an
  empty cache;
- ``vision``: ``--size`` frames (default 8) through the vision graph.

``BUNDLE`` may also be an ONNX Runtime GenAI model folder (``genai_config.json``; decode only), so a
peer's step is broken down the same way: its ``model.onnx`` with the past given as an input of
``--size`` positions (GenAI's own loop shares past and present buffers instead; the weight products,
which dominate a step, are the same ops either way).

Prints a table, and writes it as JSON to ``--out``. ORT's trace goes to a temp folder and is deleted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

STAGES = {"decode": 300, "prefill": 448, "vision": 8}


def stage_feeds(manifest, stage: str, size: int) -> dict[str, np.ndarray]:
    from exo2ego_edge.bundle import BATCH, LOGITS_TO_KEEP, PAST

    rng = np.random.default_rng(0)
    if stage == "vision":
        (frames,) = manifest.graphs["vision"].inputs
        side = manifest.preprocessing.image_size
        return {frames.name: rng.integers(0, 256, (size, side, side, 3), dtype=np.uint8)}
    spec = manifest.graphs["decoder"]
    dtypes = {t.name: np.dtype(t.dtype) for t in spec.inputs}
    past, new = (size, 1) if stage == "decode" else (0, size)
    feeds = {
        "inputs_embeds": rng.standard_normal((1, new, manifest.decoder.hidden_size)).astype(dtypes["inputs_embeds"]),
        "attention_mask": np.ones((1, past + new), np.int64),
        "position_ids": np.arange(past, past + new, dtype=np.int64)[None],
    }
    if LOGITS_TO_KEEP in dtypes:  # the runtime asks for the last position's logits only
        feeds[LOGITS_TO_KEEP] = np.array(1, np.int64)
    for t in spec.inputs:
        if t.name.startswith("past_key_values"):
            shape = [past if a == PAST else 1 if a == BATCH else a for a in t.shape]
            feeds[t.name] = rng.standard_normal(shape).astype(dtypes[t.name])
    return feeds


def genai_decode_feeds(folder: Path, size: int) -> dict[str, np.ndarray]:
    """One new token after ``size`` cached positions, as GenAI's decoder graph takes them."""
    cfg = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    rng = np.random.default_rng(0)
    past = (1, cfg["num_key_value_heads"], size, cfg["head_size"])
    feeds = {"input_ids": np.array([[1000]], np.int64), "attention_mask": np.ones((1, size + 1), np.int64)}
    for i in range(cfg["num_hidden_layers"]):
        for kind in ("key", "value"):
            feeds[cfg["inputs"][f"past_{kind}_names"] % i] = rng.standard_normal(past).astype(np.float32)
    return feeds


def profile(bundle: Path, stage: str, size: int, runs: int, threads: int | None) -> dict:
    import onnxruntime as ort

    from exo2ego_edge.bundle import decode_graph, load_manifest
    from exo2ego_edge.runtime.ort_backend import session_options

    if (bundle / "genai_config.json").is_file():
        if stage != "decode":
            raise SystemExit("an ONNX Runtime GenAI folder is profiled at decode only")
        graph, precision, matmuls = "model.onnx", "genai", "genai"
        feeds = genai_decode_feeds(bundle, size)
    else:
        manifest = load_manifest(bundle)
        graphs = manifest.graphs
        spec = {"vision": graphs["vision"], "decode": decode_graph(graphs), "prefill": graphs["decoder"]}[stage]
        graph, precision, matmuls = spec.file, spec.precision, spec.matmuls
        feeds = stage_feeds(manifest, stage, size)
    with tempfile.TemporaryDirectory(prefix="ortprof-") as tmp:
        opts = session_options(threads)  # the runtime's own settings
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "trace")
        sess = ort.InferenceSession(str(bundle / graph), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            sess.run(None, feeds)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    by_op: Counter[str] = Counter()
    by_node: Counter[str] = Counter()
    model_runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else 0
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > first_end:
            op = e["args"].get("op_name", "?")
            by_op[op] += e["dur"]
            by_node[e["name"].removesuffix("_kernel_time")] += e["dur"]
    total = sum(by_op.values())
    run_us = [r["dur"] for r in model_runs[1:]]
    return {
        "bundle": str(bundle), "graph": graph, "precision": precision, "matmuls": matmuls,
        "stage": stage, "size": size, "runs": runs, "threads": threads,
        "run_ms_p50": float(np.median(run_us)) / 1e3 if run_us else None,
        "kernel_ms_per_run": total / runs / 1e3,
        "by_op_share": {op: us / total for op, us in by_op.most_common()},
        "by_op_ms_per_run": {op: us / runs / 1e3 for op, us in by_op.most_common()},
        "top_nodes_ms_per_run": {n: us / runs / 1e3 for n, us in by_node.most_common(8)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--stage", choices=list(STAGES), default="decode")
    ap.add_argument("--size", type=int, help="decode: cache positions; prefill: new tokens; vision: frames")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rep = profile(args.bundle, args.stage, args.size or STAGES[args.stage], args.runs, args.threads)
    if args.out:  # before printing: a reader that stops early (| head) must not lose the file
        args.out.write_text(json.dumps(rep, indent=2) + "\n")
    print(f"{rep['bundle']} {rep['graph']} ({rep['precision']}, {rep['matmuls']}), {rep['stage']} {rep['size']}: "
          f"run p50 {rep['run_ms_p50']:.2f} ms, kernels {rep['kernel_ms_per_run']:.2f} ms/run")
    for op, share in rep["by_op_share"].items():
        print(f"  {op:28s} {100 * share:5.1f}%  {rep['by_op_ms_per_run'][op]:.3f} ms/run")
    print("top nodes:")
    for n, ms in rep["top_nodes_ms_per_run"].items():
        print(f"  {n:60s} {ms:.3f} ms/run")


if __name__ == "__main__":
    main()
