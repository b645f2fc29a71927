"""One decode step's attention, ours against ONNX Runtime's GroupQueryAttention: is a fused
kernel with a shared past/present buffer worth a new KV cache layout?

Ours is cut out of an exported in-place INT8 decoder (``BUNDLE``'s ``decoder.onnx``, one layer):
from the joined q/k/v projection's output to the attention output before o_proj, i.e. the split,
the two RotaryEmbedding kernels, the head reshapes, the scores against the past and the new key,
the softmax and the two value products. GroupQueryAttention (``com.microsoft``, ``do_rotary=1``,
as ONNX Runtime GenAI's model builder writes it) takes the same packed projection and writes the
new key and value into the cache buffer it reads (past and present bound to one buffer). Both run
with the runtime's session options, one step each in turn (A B A B), at each context.

    .venv/bin/python benchmarks/attention_kernels.py BUNDLE [--layer 5] [--contexts 512,4000]

Writes benchmarks/results/attention_kernels.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from made_by import made_by

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def ours(decoder: Path, layer: int, folder: Path) -> tuple[Path, list[str]]:
    """Layer ``layer``'s attention cut out of ``decoder``: (its file, its input names)."""
    import onnx
    from onnx import TensorProto, helper

    a = f"/llm/model/layers.{layer}/self_attn"
    types = {f"{a}/q_proj+k_proj+v_proj/Add_output_0": TensorProto.FLOAT, "position_ids": TensorProto.INT64,
             "/Where_output_0": TensorProto.FLOAT, f"past_key_values.{layer}.key": TensorProto.FLOAT,
             f"past_key_values.{layer}.value": TensorProto.FLOAT}
    output = f"{a}/Reshape_7_output_0"
    model = onnx.load(str(decoder))
    # Cut by hand: onnx.utils.extract_model wants value_info for the cut's names, which the
    # exported graph does not keep.
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes, stack, seen = [], [output], set()
    while stack:  # the nodes between the inputs above and the output, walked back from the output
        name = stack.pop()
        if name in types or name in seen or name not in producer:
            continue
        seen.add(name)
        node = producer[name]
        nodes.append(node)
        stack.extend(x for x in node.input if x)
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
    used = {x for n in nodes for x in n.input}
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(n, t, None) for n, t in types.items()],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              [t for t in model.graph.initializer if t.name in used])
    path = folder / "ours.onnx"
    onnx.save(helper.make_model(graph, opset_imports=model.opset_import), str(path))
    return path, list(types)


def gqa(heads: int, kv_heads: int, head_dim: int, cos: np.ndarray, sin: np.ndarray, folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = (heads + 2 * kv_heads) * head_dim
    node = helper.make_node(
        "GroupQueryAttention", ["qkv", "", "", "past_key", "past_value", "seqlens_k", "total_length", "cos", "sin"],
        ["out", "present_key", "present_value"], domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads,
        do_rotary=1, rotary_interleaved=0)
    cache = ["batch", kv_heads, "capacity", head_dim]
    graph = helper.make_graph(
        [node], "gqa",
        [helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, 1, width]),
         helper.make_tensor_value_info("past_key", TensorProto.FLOAT, cache),
         helper.make_tensor_value_info("past_value", TensorProto.FLOAT, cache),
         helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
         helper.make_tensor_value_info("total_length", TensorProto.INT32, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, heads * head_dim]),
         helper.make_tensor_value_info("present_key", TensorProto.FLOAT, cache),
         helper.make_tensor_value_info("present_value", TensorProto.FLOAT, cache)],
        [numpy_helper.from_array(cos, "cos"), numpy_helper.from_array(sin, "sin")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    path = folder / "gqa.onnx"
    onnx.save(model, str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="an in-place CPU bundle (its decoder.onnx)")
    p.add_argument("--layer", type=int, default=5)
    p.add_argument("--contexts", default="512,4000")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from exo2ego_edge.bundle import load_manifest
    from exo2ego_edge.runtime.ort_backend import session_options
    from exo2ego_edge.runtime.sysinfo import cpu_model

    d = load_manifest(args.bundle, verify=False).decoder
    heads, kv, hd = d.hidden_size // d.head_dim, d.num_kv_heads, d.head_dim
    contexts = [int(c) for c in args.contexts.split(",")]
    capacity = max(contexts) + 64
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ours_path, names = ours(args.bundle / "decoder.onnx", args.layer, Path(tmp))
        tables = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(ours_path)).graph.initializer
                  if t.name.startswith("rotary.")}
        cos, sin = tables["rotary.cos_cache"], tables["rotary.sin_cache"]
        if cos.shape[0] < capacity:
            p.error(f"the bundle's rotary tables cover {cos.shape[0]} positions; use contexts below {cos.shape[0] - 64}")
        sessions = {k: ort.InferenceSession(str(path), session_options(args.threads), providers=["CPUExecutionProvider"])
                    for k, path in (("ours", ours_path), ("gqa", gqa(heads, kv, hd, cos, sin, Path(tmp))))}
        for context in contexts:
            qkv = rng.standard_normal((1, 1, (heads + 2 * kv) * hd)).astype(np.float32)
            past = [rng.standard_normal((1, kv, capacity, hd)).astype(np.float32) for _ in range(2)]
            mask = np.zeros((1, 1, 1, context + 1), np.float32)  # our cache exactly full: nothing masked
            ours_feeds = dict(zip(names, [qkv, np.array([[context]], np.int64), mask,
                                          past[0][:, :, :context].copy(), past[1][:, :, :context].copy()]))
            binding = sessions["gqa"].io_binding()
            binding.bind_cpu_input("qkv", qkv)
            binding.bind_cpu_input("seqlens_k", np.array([context], np.int32))
            binding.bind_cpu_input("total_length", np.array(context + 1, np.int32))
            binding.bind_output("out", "cpu")  # first: copy_outputs_to_cpu()[0]
            for name, buffer in zip(("key", "value"), past):  # one buffer: the new row is written in place
                binding.bind_input(f"past_{name}", "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
                binding.bind_output(f"present_{name}", "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
            sessions["gqa"].run_with_iobinding(binding)  # the same arithmetic: both give one output
            differ = float(np.abs(sessions["ours"].run(None, ours_feeds)[0] - binding.copy_outputs_to_cpu()[0]).max())
            runs = {"ours": lambda: sessions["ours"].run(None, ours_feeds),
                    "gqa": lambda: sessions["gqa"].run_with_iobinding(binding)}
            times: dict[str, list[float]] = {k: [] for k in runs}
            for i in range(args.steps + 10):
                for k, run in runs.items():
                    t = time.perf_counter()
                    run()
                    if i >= 10:
                        times[k].append(time.perf_counter() - t)
            p50 = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
            rows.append({"context": context, "p50_us": p50, "max_abs_difference": differ,
                         "gqa_speedup": float(np.median(np.array(times["ours"]) / np.array(times["gqa"])))})
            print(f"context {context}: ours {p50['ours']:.0f} us, GQA {p50['gqa']:.0f} us", flush=True)
    lines = ["# One decode step's attention: ours vs GroupQueryAttention (one layer)", "",
             f"{made_by('attention_kernels.py', argv)}. Layer {args.layer} of {args.bundle.name}'s decoder "
             f"({heads} query / {kv} KV heads of {hd}), {args.threads} threads, {args.steps} steps each after 10 "
             f"warm-up, alternating. CPU: {cpu_model()} ({os.cpu_count()} cores); onnxruntime {ort.__version__}.", "",
             "Per layer and step, from the joined q/k/v projection to the attention output; x 24 layers for "
             "edge-0.5b's step.", "",
             "| context | ours p50 us | GroupQueryAttention p50 us | GQA speed-up (median of pairs) | outputs' max abs difference |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['context']} | {r['p50_us']['ours']:.0f} | {r['p50_us']['gqa']:.0f} | {r['gqa_speedup']:.2f}x "
                     f"| {r['max_abs_difference']:.1e} |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "attention_kernels.md").write_text("\n".join(lines) + "\n")
    (args.results / "attention_kernels.json").write_text(json.dumps(
        {"bundle": str(args.bundle), "layer": args.layer, "threads": args.threads, "steps": args.steps,
         "cpu": cpu_model(), "onnxruntime": ort.__version__, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
