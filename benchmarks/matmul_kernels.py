"""The decoder's weight MatMuls, kernel by kernel: what each CPU kernel can do for decode and prefill.

For each kernel the exporter can choose, one ONNX graph holds every weight product of the edge-0.5b
decoder in order (per layer q/k/v as one product, o, gate/up as one, down, as the export writes
them, joined by the Split / Mul / Add / LayerNorm that keep values bounded; the lm_head once, on
the last position, since the runtime asks for that position's logits only) and nothing else: no
attention, no KV cache, no rotary. It runs at M = 1 (one decoded token) and M = the prefill length. That is the floor a whole decoder graph can reach
with the kernel: decode ms/token against the memory roofline (weight bytes / STREAM copy
bandwidth), prefill GFLOP/s against the best kernel. Rounds are interleaved (every graph once per
round), so the ratios hold on a shared machine; the absolute figures drift with it.

    .venv/bin/python benchmarks/matmul_kernels.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from made_by import made_by

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


def chain_model(kern: Kernel, preset: str):
    """The decoder's weight products in ``kern``'s kernel, M rows in (any M), the lm_head's logits out."""
    from onnx import TensorProto, helper, numpy_helper

    from exo2ego_edge.config import PRESETS
    from exo2ego_edge.perf.roofline import weight_product

    llm = PRESETS[preset]().llm
    d, kv, inter = llm.hidden_size, llm.num_kv_heads * (llm.hidden_size // llm.num_heads), llm.intermediate_size
    rng = np.random.default_rng(0)
    nodes, inits, outputs = [], [numpy_helper.from_array(np.ones(d, np.float32), "gamma")], []

    def product(x: str, y: str, k: int, n: int, how: Kernel = kern) -> str:
        node, weights = weight_product(how.kind, x, y, k, n, rng, how.bits, how.block, how.accuracy)
        nodes.append(node)
        inits.extend(weights)
        return y

    def split(x: str, sizes: list[int]) -> list[str]:
        outs = [f"{x}.{j}" for j in range(len(sizes))]
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), f"{x}.sizes"))
        nodes.append(helper.make_node("Split", [x, f"{x}.sizes"], outs, axis=-1))
        return outs

    x = "x"
    for i in range(llm.num_layers):  # q/k/v and gate/up each one product, as the export's graph passes write them
        q, k, v = split(product(x, f"l{i}.qkv", d, d + 2 * kv), [d, kv, kv])
        for name in (k, v):  # read by attention in a real decoder: graph outputs here
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["M", kv]))
        o = product(q, f"l{i}.o", d, d)
        gate, up = split(product(x, f"l{i}.gate_up", d, 2 * inter), [inter, inter])
        nodes.append(helper.make_node("Mul", [gate, up], [f"l{i}.h"]))
        nodes.append(helper.make_node("Add", [o, product(f"l{i}.h", f"l{i}.down", inter, d)], [f"l{i}.sum"]))
        nodes.append(helper.make_node("LayerNormalization", [f"l{i}.sum", "gamma"], [f"l{i}.out"], axis=-1))
        x = f"l{i}.out"
    inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("last", [-1]), ("end", [2**62]), ("axis0", [0]))]
    nodes.append(helper.make_node("Slice", [x, "last", "end", "axis0"], ["final"]))
    logits = product("final", "logits", d, llm.vocab_size, kern.head or kern)
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", d])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, llm.vocab_size]), *outputs],
                              initializer=inits)
    opset = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    weights = llm.num_layers * d * (2 * d + 2 * kv + 3 * inter)
    return helper.make_model(graph, opset_imports=opset), weights, d * llm.vocab_size, llm.num_layers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="edge-0.5b")
    p.add_argument("--prefill", type=int, default=448, help="prefill tokens (8 frames x 49 + prompt)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--name", default="matmul_kernels", help="results file stem")
    args = p.parse_args(argv)
    import onnxruntime as ort

    from exo2ego_edge.perf import roofline
    from exo2ego_edge.runtime.sysinfo import cpu_model, int8_isa

    from exo2ego_edge.config import PRESETS

    hidden = PRESETS[args.preset]().llm.hidden_size
    feeds = {m: {"x": np.random.default_rng(1).standard_normal((m, hidden), dtype=np.float32)} for m in (1, args.prefill)}
    sessions = {}  # one per kernel (M is a free dimension): the weights are in memory once
    for kern in KERNELS:
        model, layer_weights, head_weights, layers = chain_model(kern, args.preset)
        sessions[kern.label] = roofline.cpu_session(model, args.threads)
        for m in feeds:
            sessions[kern.label].run(None, feeds[m])  # warm-up: pre-packing
    times: dict[tuple, list[float]] = {(label, m): [] for label in sessions for m in feeds}
    for _ in range(args.rounds):
        for label, session in sessions.items():
            for m in feeds:
                for _ in range(3 if m == 1 else 1):  # decode steps come back to back, as in generation
                    t0 = time.perf_counter()
                    session.run(None, feeds[m])
                    times[label, m].append(time.perf_counter() - t0)
    bandwidth = roofline.measure_memory_bandwidth(threads=args.threads)
    rows = []
    for kern in KERNELS:
        decode = float(np.median(times[kern.label, 1])) * 1e3
        prefill = float(np.median(times[kern.label, args.prefill])) * 1e3
        nbytes = layer_weights * kern.bytes_per_weight() + head_weights * (kern.head or kern).bytes_per_weight()
        bound = nbytes / (bandwidth.best_gbps * 1e9) * 1e3
        flops = 2 * args.prefill * layer_weights + 2 * head_weights
        rows.append({"kernel": kern.label, "decode_ms": decode, "weight_mib": nbytes / 2**20, "bound_ms": bound,
                     "roofline": bound / decode, "prefill_ms": prefill, "prefill_gflops": flops / prefill / 1e6})
    base = next(r for r in rows if r["kernel"] == WEIGHT_ONLY_INT8.label)
    lines = [f"# Decoder weight MatMuls by kernel ({args.preset}, {layers} layers)", "",
             f"{made_by('matmul_kernels.py', argv)} "
             f"(prefill {args.prefill} tokens, {args.threads} threads, {args.rounds} interleaved rounds, "
             f"medians). CPU: {cpu_model()} ({os.cpu_count()} cores; int8 instructions: {', '.join(int8_isa() or ['unknown'])}); "
             f"onnxruntime {ort.__version__}; {platform.machine()}. "
             f"Roofline: weight bytes / {bandwidth.best_gbps:.1f} GB/s (STREAM copy, same run).", "",
             "One graph per kernel holds only the decoder's weight products (and the norms between them): the floor "
             "a whole decoder reaches with that kernel, before attention, the KV cache and rotary.", "",
             "| kernel | weights MiB | decode ms/token | % of memory roofline | decode vs int8 weight-only | "
             "prefill ms | prefill GFLOP/s | prefill vs int8 weight-only |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['weight_mib']:.0f} | {r['decode_ms']:.2f} | {100 * r['roofline']:.0f}% | "
                     f"{base['decode_ms'] / r['decode_ms']:.2f}x | {r['prefill_ms']:.0f} | {r['prefill_gflops']:.0f} | "
                     f"{base['prefill_ms'] / r['prefill_ms']:.2f}x |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (args.results / f"{args.name}.json").write_text(json.dumps(
        {"preset": args.preset, "prefill": args.prefill, "threads": args.threads, "cpu": cpu_model(),
         "int8_isa": int8_isa(), "bandwidth_gbps": bandwidth.best_gbps, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
