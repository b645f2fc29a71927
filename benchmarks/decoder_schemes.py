"""The same random-weight model exported with each CPU decoder scheme, benchmarked end to end.

Builds edge-0.5b bundles (all 24 LLM layers, random weights, cached) that differ only in
export options (the decoder's quantization and KV cache layout, the vision kernels), then runs ``exo2ego-edge bench`` on each in
alternating rounds (A B C .. A B C ..), so the machine's drift falls on every scheme alike, and
reports each stage's p50 as a ratio to the baseline scheme in the same round (median over rounds),
and decode per token at each ``--contexts`` length.

    .venv/bin/python benchmarks/decoder_schemes.py                  # ~30 min on 2 cores
    .venv/bin/python benchmarks/decoder_schemes.py --rounds 1 --llm-layers 2   # a quick look
    .venv/bin/python benchmarks/decoder_schemes.py --name kv_cache --contexts 256,512,2048,4000 \
        --schemes "int8 integer, concat KV (before)" "int8 integer (default)"
    .venv/bin/python benchmarks/decoder_schemes.py --name ttft_schemes --schemes \
        "int8 weight-only, standard vision (before)" "int8 integer, standard vision (before)" "int8 integer (default)"

Writes benchmarks/results/NAME.{md,json} (NAME: decoder_schemes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from made_by import made_by

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EXE = Path(sys.executable).with_name("exo2ego-edge")

# label -> (precision, export options); the first one run is the baseline of every ratio.
SCHEMES = {
    "int8 weight-only, standard vision (before)": ("int8", {"cpu_decoder": "weight-only", "vision_kernels": "standard"}),
    "int8 integer, standard vision (before)": ("int8", {"cpu_decoder": "integer", "vision_kernels": "standard"}),
    "int8 integer, concat KV (before)": ("int8", {"cpu_decoder": "integer", "kv_cache": "concat"}),
    "int8 integer, no graph passes (before)": ("int8", {"cpu_decoder": "integer", "graph_passes": False}),
    "int8 integer (default)": ("int8", {"cpu_decoder": "integer"}),
    "int8 weight-only, no graph passes (before)": ("int8", {"cpu_decoder": "weight-only", "graph_passes": False}),
    "int8 weight-only": ("int8", {"cpu_decoder": "weight-only"}),
    "int8 hybrid": ("int8", {"cpu_decoder": "hybrid"}),
    "int4 block 32 (before)": ("int4", {"int4_block_size": 32}),
    "int4 block 128": ("int4", {"int4_block_size": 128}),
}
STAGES = ("video_decode", "vision", "prefill", "ttft", "decode_per_token")


def bench(bundle: Path, out: Path, args) -> dict:
    cmd = [str(EXE), "bench", "--bundle", str(bundle), "--frames", str(args.frames), "--runs", str(args.runs),
           "--warmup", "1", "--threads", str(args.threads), "--new-tokens", "32", "--contexts", args.contexts,
           "--no-roofline", "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    stages = {s: report["results"][0]["stages_ms"][s]["p50"] for s in STAGES}
    contexts = {str(r["requested"]): r["decode_per_token_ms"]["p50"] for r in report["decode_vs_context"] if "requested" in r}
    return {"stages": stages, "contexts": contexts, "bytes": report["bundle"]["total_bytes"]}


def context_lines(labels: list[str], rounds: list[dict[str, dict]]) -> list[str]:
    """Decode ms/token at each context (median over rounds) and each scheme's growth over its shortest."""
    contexts = list(rounds[0][labels[0]]["contexts"])
    if len(contexts) < 2:
        return []
    lines = ["", "Decode per token against the KV cache's length (p50 ms, median over rounds); in brackets "
             f"the time per token as a multiple of the same scheme's at {contexts[0]} tokens (same round).", "",
             "| scheme | " + " | ".join(contexts) + " |", "|---|" + "---:|" * len(contexts)]
    for label in labels:
        cells = [f"{np.median([rd[label]['contexts'][c] for rd in rounds]):.1f} "
                 f"({np.median([rd[label]['contexts'][c] / rd[label]['contexts'][contexts[0]] for rd in rounds]):.2f}x)"
                 for c in contexts]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-layers", type=int, default=24)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--runs", type=int, default=3, help="bench runs per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--schemes", nargs="+", choices=list(SCHEMES), default=list(SCHEMES),
                   help="the schemes to compare, the first the baseline [all]")
    p.add_argument("--contexts", default="512", help="comma-separated KV cache lengths for decode per token")
    p.add_argument("--name", default="decoder_schemes", help="results file stem")
    args = p.parse_args(argv)
    schemes = {label: SCHEMES[label] for label in args.schemes}
    from exo2ego_edge.export.random_bundle import build_random_bundle
    from exo2ego_edge.runtime.sysinfo import cpu_model, int8_isa

    bundles = {label: build_random_bundle("edge-0.5b", precision, llm_layers=args.llm_layers,
                                          cache_dir=args.cache_dir, **options)
               for label, (precision, options) in schemes.items()}
    rounds: list[dict[str, dict]] = []
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"decoder-schemes-{os.getpid()}.json"
    for r in range(args.rounds):
        rounds.append({label: bench(bundle, scratch, args) for label, bundle in bundles.items()})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k}: ttft {v['stages']['ttft']:.0f} ms, decode {v['stages']['decode_per_token']:.1f} ms/token"
            for k, v in rounds[-1].items()), flush=True)
    scratch.unlink(missing_ok=True)
    base = next(iter(schemes))
    summary = {}
    for label in schemes:
        summary[label] = {s: {"p50_ms": float(np.median([rd[label]["stages"][s] for rd in rounds])),
                              "vs_baseline": float(np.median([rd[base]["stages"][s] / rd[label]["stages"][s]
                                                              for rd in rounds]))} for s in STAGES}
        summary[label]["bundle_mib"] = rounds[0][label]["bytes"] / 2**20
    lines = [f"# CPU decoder schemes, end to end (edge-0.5b, {args.llm_layers} LLM layers, random weights)", "",
             f"{made_by('decoder_schemes.py', argv)} "
             f"({args.rounds} rounds x {args.runs} bench runs, {args.frames} frames, {args.threads} threads). "
             f"CPU: {cpu_model()} ({os.cpu_count()} cores; int8 instructions: {', '.join(int8_isa() or ['unknown'])}).", "",
             f"p50 ms per stage (median over rounds); in brackets the speed-up over **{base}** measured in "
             "the same round (median over rounds; > 1 is faster).", "",
             "| scheme | bundle MiB | " + " | ".join(STAGES) + " |", "|---|---:|" + "---:|" * len(STAGES)]
    for label, s in summary.items():
        lines.append(f"| {label} | {s['bundle_mib']:.0f} | " + " | ".join(
            f"{s[st]['p50_ms']:.1f} ({s[st]['vs_baseline']:.2f}x)" for st in STAGES) + " |")
    lines += context_lines(list(schemes), rounds)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"llm_layers": args.llm_layers, "frames": args.frames, "threads": args.threads, "cpu": cpu_model(),
         "int8_isa": int8_isa(), "bundles": {k: str(v) for k, v in bundles.items()}, "summary": summary,
         "rounds": rounds}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
