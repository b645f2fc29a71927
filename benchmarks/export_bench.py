"""Vision-graph latency on ONNX Runtime CPU: PyTorch eager FP32 vs ONNX FP32 vs ONNX INT8 variants.

One run, one machine, all variants interleaved round-robin (the machines here are shared and
noisy: interleaving spreads the noise over every variant alike). Reports p50/p90/p99, throughput
ratio to FP32 ONNX measured in the same run, visual-token cosine to PyTorch, and file sizes.

Random weights for latency (enough for it); the bundle-size table exports the shipped student.
The vision graph depends on the LLM only through its width, so the LLM is built with one layer
and a small vocabulary to keep start-up fast; the vision graph (ego encoder, pooling, F,
projector to the real LLM width) is the preset's.

    .venv/bin/python benchmarks/export_bench.py [--presets egosim-tiny edge-0.5b] [--iters 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from exo2ego_edge.config import ModelConfig
from exo2ego_edge.export import onnx_graphs, ort_offline, quantize
from exo2ego_edge.export.clip_frames import random_clips
from exo2ego_edge.model import Exo2Ego
from exo2ego_edge.runtime import sysinfo

RESULTS = Path(__file__).parent / "results"
# Frames per call: a whole clip for the tiny preset; two for edge-0.5b keeps a 2-core run short.
FRAMES = {"egosim-tiny": 4, "edge-0.5b": 2}


def vision_model(preset: str) -> Exo2Ego:
    cfg = ModelConfig.from_name(preset)
    cfg.llm = dataclasses.replace(cfg.llm, num_layers=1, vocab_size=256, intermediate_size=64)
    torch.manual_seed(0)
    return Exo2Ego(cfg, student=True).eval()


def cpu_session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


def percentiles(ms: list[float]) -> dict[str, float]:
    q = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(q[0]), "p90_ms": float(q[1]), "p99_ms": float(q[2]), "mean_ms": statistics.fmean(ms)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).mean())


def bench_preset(preset: str, iters: int, warmup: int, threads: int, work: Path) -> dict:
    model = vision_model(preset)
    cfg = model.cfg
    n = FRAMES[preset]
    frames = random_clips(1, n, cfg.vision.image_size, seed=1)[0][0]
    calib = [{"frames": c} for c, _ in random_clips(8, n, cfg.vision.image_size, seed=2)]
    fp32 = work / f"{preset}-fp32.onnx"
    onnx_graphs.export_vision(model, fp32)
    files = {"onnx_fp32": fp32}
    pre = work / f"{preset}-pre.onnx"  # what export does before its CPU quantizers
    quantize.preprocess(fp32, pre)
    files["onnx_int8_dynamic"] = work / f"{preset}-int8-dynamic.onnx"
    quantize.quantize_dynamic_int8(pre, files["onnx_int8_dynamic"])
    files["onnx_int8_static_qdq"] = work / f"{preset}-int8-static.onnx"
    quantize.quantize_static_int8(pre, files["onnx_int8_static_qdq"], calib, qdq=True, method="minmax")
    files["onnx_int8_static_qop"] = work / f"{preset}-int8-static-qop.onnx"
    quantize.quantize_static_int8(pre, files["onnx_int8_static_qop"], calib, qdq=False, method="minmax")

    opts = cpu_session_options(threads)
    # No spin-waiting: four sessions' idle spinning threads would otherwise steal the cores from
    # whichever variant (or torch) runs next in the round-robin and wreck every timing.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in files.items()}
    torch.set_num_threads(threads)
    graph = onnx_graphs.VisionGraph(model)
    x = torch.from_numpy(frames)

    def run_torch():
        with torch.no_grad():
            return graph(x).numpy()

    runners = {"torch_eager_fp32": run_torch}
    for k, s in sessions.items():
        runners[k] = (lambda s=s: s.run(None, {"frames": frames})[0])
    reference = run_torch()
    outputs = {k: r() for k, r in runners.items()}
    for _ in range(warmup):
        for r in runners.values():
            r()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(iters):  # round-robin: every variant sees the same machine noise
        for k, r in runners.items():
            t = time.perf_counter()
            r()
            times[k].append((time.perf_counter() - t) * 1e3)
    cpu_bundle_variants = ("onnx_fp32", "onnx_int8_dynamic")
    profiles = {k: op_time_shares(files[k], {"frames": frames}, threads, work / f"{preset}-{k}")
                for k in cpu_bundle_variants}
    starts = session_starts({k: files[k] for k in cpu_bundle_variants}, work, threads, max(iters // 2, 5))
    base = statistics.median(times["onnx_fp32"])
    rows = {}
    for k in runners:
        stats = percentiles(times[k])
        rows[k] = {
            **stats,
            "frames_per_s": n / (stats["p50_ms"] / 1e3),
            "throughput_vs_onnx_fp32": base / stats["p50_ms"],
            "cosine_vs_torch": cosine(outputs[k], reference),
            "size_mb": files[k].stat().st_size / 1e6 if k in files else
            sum(p.numel() * 4 for p in [*model.ego_encoder.parameters(), *model.F.parameters(), *model.projector.parameters()]) / 1e6,
        }
    return {"preset": preset, "frames_per_call": n, "image_size": cfg.vision.image_size,
            "tokens_per_frame": cfg.tokens_per_frame, "iters": iters, "variants": rows, "op_shares": profiles,
            "session_start": starts}


def session_starts(files: dict[str, Path], work: Path, threads: int, reps: int) -> dict:
    """Session-creation p50 (and file MB) of each graph as exported vs as the CPU bundle saves it,
    ORT-optimized (export/ort_offline.py); interleaved like the latency runs."""
    variants = {}
    for k, path in files.items():
        saved = work / f"{path.stem}-ort-offline" / path.name
        saved.parent.mkdir()
        shutil.copy(path, saved)
        ort_offline.optimize_for_cpu(saved)
        variants[k] = {"as exported": path, "ORT-optimized": saved}
    opts = cpu_session_options(threads)
    times: dict[tuple[str, str], list[float]] = {(k, form): [] for k, forms in variants.items() for form in forms}
    for _ in range(reps):
        for k, form in times:
            t = time.perf_counter()
            ort.InferenceSession(str(variants[k][form]), opts, providers=["CPUExecutionProvider"])
            times[(k, form)].append((time.perf_counter() - t) * 1e3)
    return {k: {form: {"p50_ms": statistics.median(times[(k, form)]), "mb": path.stat().st_size / 1e6}
                for form, path in forms.items()} for k, forms in variants.items()}


def op_time_shares(path: Path, feeds: dict[str, np.ndarray], threads: int, prefix: Path, runs: int = 3) -> dict:
    """Share of kernel time per op type over ``runs`` calls (ORT's profiler), and the ms per call:
    where the time goes that quantization can and cannot speed up."""
    opts = cpu_session_options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(prefix)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] = by_op.get(e["args"]["op_name"], 0.0) + e["dur"]
    total = sum(by_op.values())
    shares = {op: us / total for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])}
    return {"kernel_ms_per_call": total / runs / 1e3, "shares": shares}


def full_bundle_sizes(work: Path) -> dict:
    """FP32 vs INT8 vs INT4 bundle bytes of the shipped egosim-tiny student. Trained weights, not
    random ones: a random student's F blocks start at zero, and the exporter stores identical
    tensors once, which a trained student never has."""
    from exo2ego_edge.assets import SHIPPED_STUDENT
    from exo2ego_edge.export.pipeline import export_bundle

    sizes = {}
    for precision in ("fp32", "int8", "int4"):
        out = export_bundle(SHIPPED_STUDENT, work / f"bundle-{precision}", precision, force=True, parity_samples=1).out
        sizes[precision] = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    return sizes


def markdown(report: dict) -> str:
    lines = [
        "# Export benchmark: vision graph on ONNX Runtime CPU",
        "",
        f"Machine: {report['machine']}, int8-relevant ISA: {_isa_text(report.get('int8_isa'))}; ORT {report['onnxruntime']}, torch {report['torch']}, "
        f"{report['threads']} threads. Random weights. p50/p90/p99 over {report['results'][0]['iters']} "
        "interleaved iterations; ratio = FP32-ONNX p50 / variant p50 (same run).",
        "",
    ]
    for res in report["results"]:
        lines += [
            f"## {res['preset']} ({res['frames_per_call']} frames x {res['image_size']}px per call)",
            "",
            "| variant | p50 ms | p90 ms | p99 ms | frames/s | x FP32 ONNX | cosine vs torch | MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, v in res["variants"].items():
            lines.append(f"| {k} | {v['p50_ms']:.2f} | {v['p90_ms']:.2f} | {v['p99_ms']:.2f} | {v['frames_per_s']:.1f} | "
                         f"{v['throughput_vs_onnx_fp32']:.2f} | {v['cosine_vs_torch']:.5f} | {v['size_mb']:.2f} |")
        lines += ["", "Where the kernel time goes (ORT profiler, 3 calls; op types over 2% of a variant's time):", "",
                  "| variant | kernel ms / call | op-type shares |", "|---|---:|---|"]
        for k, prof in res["op_shares"].items():
            top = ", ".join(f"{op} {share:.0%}" for op, share in prof["shares"].items() if share >= 0.02)
            lines.append(f"| {k} | {prof['kernel_ms_per_call']:.1f} | {top} |")
        lines += ["", "Session creation, graph as exported vs as a `--target cpu` bundle saves it (ORT-optimized offline):", "",
                  "| variant | as exported p50 ms | ORT-optimized p50 ms | x faster | MB as exported | MB optimized |",
                  "|---|---:|---:|---:|---:|---:|"]
        for k, forms in res["session_start"].items():
            raw, opt = forms["as exported"], forms["ORT-optimized"]
            lines.append(f"| {k} | {raw['p50_ms']:.1f} | {opt['p50_ms']:.1f} | {raw['p50_ms'] / opt['p50_ms']:.2f} | "
                         f"{raw['mb']:.3f} | {opt['mb']:.3f} |")
        lines.append("")
    if report.get("bundle_sizes"):
        lines += ["## egosim-tiny full bundle bytes (the shipped trained student)", "", "| precision | total MB | ratio to FP32 | files |", "|---|---:|---:|---|"]
        fp32 = sum(report["bundle_sizes"]["fp32"].values())
        for prec, files in report["bundle_sizes"].items():
            total = sum(files.values())
            detail = ", ".join(f"{k} {v / 1e6:.3f}" for k, v in sorted(files.items()))
            lines.append(f"| {prec} | {total / 1e6:.3f} | {total / fp32:.1%} | {detail} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["egosim-tiny", "edge-0.5b"])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bundles", action="store_true")
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="where export_TAG.{json,md} go (default: %(default)s)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = [bench_preset(p, args.iters if p == "egosim-tiny" else max(args.iters // 3, 8), args.warmup, args.threads, work)
                   for p in args.presets]
        report = {
            "machine": f"{platform.processor() or platform.machine()} ({sysinfo.cpu_model()})",
            "int8_isa": sysinfo.int8_isa(),
            "onnxruntime": ort.__version__, "torch": torch.__version__, "threads": args.threads,
            "results": results,
            "bundle_sizes": None if args.no_bundles else full_bundle_sizes(work),
        }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"export_{args.tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"export_{args.tag}.md").write_text(markdown(report))
    sys.stdout.write(markdown(report) + "\n")


def _isa_text(isa: list[str] | None) -> str:
    if isa is None:
        return "unknown"
    return ", ".join(isa) or f"none of {', '.join(sysinfo.INT8_ISA)}"


if __name__ == "__main__":
    main()
