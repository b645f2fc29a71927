"""The decoder's weight MatMuls, kernel by kernel: what each CPU kernel can do for decode and prefill.

Every weight product of the edge-0.5b decoder (per layer q, k, v, o, gate, up, down; the lm_head
once per token, since the runtime asks for the last position's logits only) is timed alone through
ONNX Runtime in each kernel the exporter can choose, at M = 1 (one decoded token) and M = the
prefill length. Summed over the 24 layers this is the floor a whole decoder graph can reach with
that kernel: decode ms/token against the memory roofline (weight bytes / STREAM copy bandwidth),
prefill GFLOP/s against the best kernel. Rounds are interleaved (every kernel once per round), so
the ratios hold on a shared machine; the absolute figures drift with it.

    .venv/bin/python benchmarks/matmul_kernels.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Kernel:
    label: str
    kind: str  # roofline.gemm_session kind
    bits: int = 8
    block: int = 128
    accuracy: int = 4
    head: Kernel | None = None  # the lm_head's kernel when it differs (the integer decoder's)

    def bytes_per_weight(self) -> float:
        if self.kind == "MatMul":
            return 4.0
        if self.kind == "DynamicQuantizeMatMul":
            return 1.0
        return self.bits / 8 + 4 / self.block  # packed weights + a float32 scale per block


WEIGHT_ONLY_INT8 = Kernel("int8 weight-only (MatMulNBits 8-bit, block 128, acc. 4)", "MatMulNBits")
KERNELS = [
    Kernel("fp32 (MatMul)", "MatMul"),
    WEIGHT_ONLY_INT8,
    Kernel("int8 integer (DynamicQuantizeMatMul; lm_head weight-only)", "DynamicQuantizeMatMul", head=WEIGHT_ONLY_INT8),
    Kernel("int4 block 32, acc. 4 (MatMulNBits)", "MatMulNBits", bits=4, block=32),
    Kernel("int4 block 64, acc. 4", "MatMulNBits", bits=4, block=64),
    Kernel("int4 block 128, acc. 4", "MatMulNBits", bits=4, block=128),
    Kernel("int4 block 32, acc. 0 (float compute)", "MatMulNBits", bits=4, block=32, accuracy=0),
]


def shapes(preset: str) -> tuple[list[tuple[str, int, int]], tuple[int, int], int]:
    """(name, K, N) of one layer's weight products, the lm_head's (K, N), and the layer count."""
    from exo2ego_edge.config import PRESETS

    llm = PRESETS[preset]().llm
    d, kv = llm.hidden_size, llm.num_kv_heads * (llm.hidden_size // llm.num_heads)
    layer = [("q", d, d), ("k", d, kv), ("v", d, kv), ("o", d, d),
             ("gate", d, llm.intermediate_size), ("up", d, llm.intermediate_size), ("down", llm.intermediate_size, d)]
    return layer, (d, llm.vocab_size), llm.num_layers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="edge-0.5b")
    p.add_argument("--prefill", type=int, default=448, help="prefill tokens (8 frames x 49 + prompt)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from exo2ego_edge.perf import roofline
    from exo2ego_edge.runtime.sysinfo import cpu_model, int8_isa

    layer, (hk, hn), layers = shapes(args.preset)
    sessions = {}  # (kernel label, shape name, M) -> (session, feeds)
    for kern in KERNELS:
        for name, k, n in layer:
            for m in (1, args.prefill):
                sessions[kern.label, name, m] = roofline.gemm_session(kern.kind, m, n, k, kern.bits, kern.block,
                                                                      args.threads, kern.accuracy)[:2]
        head = kern.head or kern
        sessions[kern.label, "lm_head", 1] = roofline.gemm_session(head.kind, 1, hn, hk, head.bits, head.block,
                                                                   args.threads, head.accuracy)[:2]
    times: dict[tuple, list[float]] = {key: [] for key in sessions}
    for s, f in sessions.values():
        s.run(None, f)  # warm-up: pre-packing
    for _ in range(args.rounds):
        for key, (s, f) in sessions.items():
            t0 = time.perf_counter()
            s.run(None, f)
            times[key].append(time.perf_counter() - t0)
    bandwidth = roofline.measure_memory_bandwidth(threads=args.threads)
    rows = []
    layer_weights = sum(k * n for _, k, n in layer)
    for kern in KERNELS:
        med = lambda name, m: float(np.median(times[kern.label, name, m])) * 1e3  # noqa: E731
        head = kern.head or kern
        decode = layers * sum(med(name, 1) for name, _, _ in layer) + med("lm_head", 1)
        prefill = layers * sum(med(name, args.prefill) for name, _, _ in layer) + med("lm_head", 1)
        nbytes = layers * layer_weights * kern.bytes_per_weight() + hk * hn * head.bytes_per_weight()
        bound = nbytes / (bandwidth.best_gbps * 1e9) * 1e3
        flops = 2 * args.prefill * layers * layer_weights + 2 * hk * hn
        rows.append({"kernel": kern.label, "decode_ms": decode, "weight_mib": nbytes / 2**20, "bound_ms": bound,
                     "roofline": bound / decode, "prefill_ms": prefill, "prefill_gflops": flops / prefill / 1e6,
                     "lm_head_ms": med("lm_head", 1)})
    base = next(r for r in rows if r["kernel"] == WEIGHT_ONLY_INT8.label)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    import onnxruntime as ort

    lines = [f"# Decoder weight MatMuls by kernel ({args.preset}, {layers} layers)", "",
             f"Made on {time.strftime('%Y-%m-%d')} at commit {commit} by `benchmarks/matmul_kernels.py` "
             f"(defaults: prefill {args.prefill} tokens, {args.threads} threads, {args.rounds} interleaved rounds, "
             f"medians). CPU: {cpu_model()} ({os.cpu_count()} cores; int8 instructions: {', '.join(int8_isa() or ['unknown'])}); onnxruntime {ort.__version__}; {platform.machine()}. "
             f"Roofline: weight bytes / {bandwidth.best_gbps:.1f} GB/s (STREAM copy, same run).", "",
             "Each product is timed alone, so this is the floor a whole graph reaches with that kernel: "
             "the graph adds attention, norms, the KV cache and per-op dispatch.", "",
             "| kernel | weights MiB | decode ms/token | % of memory roofline | decode vs int8 weight-only | "
             "prefill ms | prefill GFLOP/s | prefill vs int8 weight-only | lm_head ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['weight_mib']:.0f} | {r['decode_ms']:.2f} | {100 * r['roofline']:.0f}% | "
                     f"{base['decode_ms'] / r['decode_ms']:.2f}x | {r['prefill_ms']:.0f} | {r['prefill_gflops']:.0f} | "
                     f"{base['prefill_ms'] / r['prefill_ms']:.2f}x | {r['lm_head_ms']:.2f} |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "matmul_kernels.md").write_text("\n".join(lines) + "\n")
    (args.results / "matmul_kernels.json").write_text(json.dumps(
        {"preset": args.preset, "prefill": args.prefill, "threads": args.threads, "cpu": cpu_model(), "int8_isa": int8_isa(),
         "bandwidth_gbps": bandwidth.best_gbps, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
