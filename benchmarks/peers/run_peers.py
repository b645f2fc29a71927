"""Peer comparison: our runtime vs. HF transformers, Optimum ORT and ONNX Runtime GenAI, same weights.

    bash benchmarks/peers/setup.sh            # once: builds benchmarks/.venv-genai
    .venv/bin/python benchmarks/peers/run_peers.py [--llm-layers 6] [--runs 5]

Steps, all local (nothing from a hub):

1. one random-weight edge-0.5b student checkpoint (vision reduced: only the decoder is compared);
   its LLM saved with ``save_pretrained`` as a plain Hugging Face Qwen2 folder + tokenizer;
2. our bundles from that checkpoint through ``export_bundle`` at fp32 / int8 / int4;
   Optimum's exporter (``main_export``) on the HF folder; GenAI's model builder
   (``python -m onnxruntime_genai.models.builder -p fp32|int8|int4 -e cpu``) on the HF folder;
3. for each pair (ours at a precision vs. a peer at the same precision), both workers loaded side by
   side and runs interleaved A B A B after warm-up, so drift on this shared machine cancels in the
   ratio; per-pair ratios of decode tokens/s and TTFT;
4. ``benchmarks/results/peers.md`` (table + machine), ``peers.json`` and ``peers.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
GENAI_PY = ROOT / "benchmarks" / ".venv-genai" / "bin" / "python"
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("peers")

# (label, engine, precision) of each peer, and the precision of ours it is paired with.
PAIRS = [
    ("HF transformers eager", "hf", "fp32"),
    ("Optimum ORTModelForCausalLM", "optimum", "fp32"),
    ("ORT GenAI", "genai", "fp32"),
    ("ORT GenAI", "genai", "int8"),
    ("ORT GenAI", "genai", "int4"),
]


# --- preparation ---------------------------------------------------------------------------------
def prepare_checkpoint(work: Path, llm_layers: int, vision_layers: int, seed: int) -> tuple[Path, Path]:
    """Random student checkpoint + the same LLM as a Hugging Face folder (with a fast tokenizer)."""
    from transformers import PreTrainedTokenizerFast

    from exo2ego_edge.export.random_bundle import preset_config, random_student_checkpoint
    from exo2ego_edge.model import Exo2Ego

    ckpt, hf = work / "checkpoint", work / "hf-llm"
    if not (ckpt / "model.safetensors").is_file():
        cfg = preset_config("edge-0.5b", llm_layers=llm_layers, vision_layers=vision_layers)
        random_student_checkpoint(cfg, ckpt, seed)
    if not (hf / "config.json").is_file():
        model = Exo2Ego.from_pretrained(ckpt, student=True)
        model.llm.save_pretrained(hf, safe_serialization=True)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(ckpt / "tokenizer.json"), eos_token="<|im_end|>",
                                      pad_token="<|pad|>")
        tok.save_pretrained(hf)
    return ckpt, hf


def ours_bundle(ckpt: Path, work: Path, precision: str, max_seq: int = 1024, cpu_decoder: str = "integer") -> Path:
    """Our bundle of the checkpoint, its KV cache sized for ``max_seq`` tokens, an INT8 decoder as
    ``cpu_decoder`` (export's ``--cpu-decoder``; cached while the export code is unchanged)."""
    from exo2ego_edge.export.pipeline import export_bundle
    from exo2ego_edge.export.random_bundle import export_code

    decoder = f"-{cpu_decoder}" if precision == "int8" and cpu_decoder != "integer" else ""
    out = work / (f"ours-{precision}{decoder}" + (f"-seq{max_seq}" if max_seq != 1024 else ""))
    digest = hashlib.sha256(export_code()).hexdigest()
    stamp = work / f"{out.name}.export-code"  # beside the bundle: export replaces the folder whole
    if not (out / "manifest.json").is_file() or not stamp.is_file() or stamp.read_text() != digest:
        export_bundle(ckpt, out, precision=precision, overwrite=True, force=True, parity_samples=1,
                      max_new_tokens=4, max_seq=max_seq, cpu_decoder=cpu_decoder)
        stamp.write_text(digest)
    return out


def optimum_model(hf: Path, work: Path) -> Path:
    out = work / "optimum-fp32"
    if not (out / "model.onnx").is_file():
        from optimum.exporters.onnx import main_export

        main_export(str(hf), output=str(out), task="text-generation-with-past", device="cpu",
                    local_files_only=True, do_validation=False)
    return out


def genai_model(hf: Path, work: Path, precision: str) -> Path:
    out = work / f"genai-{precision}"
    if not (out / "genai_config.json").is_file():
        cmd = [str(GENAI_PY), "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")]
        log.info("%s", " ".join(cmd))
        subprocess.run(cmd, check=True)
    return out


# --- running -------------------------------------------------------------------------------------
class Worker:
    """A contender loaded in its own process; ``run()`` is one generation, JSON back."""

    def __init__(self, python: Path | str, engine: str, model_dir: Path, ids_file: Path, new: int, threads: int | None):
        cmd = [str(python), str(WORKER), engine, str(model_dir), "--prompt-ids", str(ids_file), "--new-tokens", str(new)]
        if threads:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args[2]} exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self) -> dict[str, Any]:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": int(a.size)}


def interleaved(a: Worker, b: Worker, runs: int, warmup: int) -> tuple[list[dict], list[dict]]:
    """A B A B ...: each side's k-th run sits next to the other's in time."""
    for _ in range(warmup):
        a.run()
        b.run()
    ra, rb = [], []
    for _ in range(runs):
        ra.append(a.run())
        rb.append(b.run())
    return ra, rb


def summarize_runs(runs: list[dict]) -> dict[str, Any]:
    tokens = [t for r in runs for t in r["token_ms"]]
    per_run_tps = [1e3 / float(np.median(r["token_ms"])) for r in runs]
    token = _stats(tokens)
    return {"ttft_ms": _stats([r["ttft_ms"] for r in runs]), "token_ms": token,
            "decode_tokens_per_s": 1e3 / token["p50"], "per_run_decode_tokens_per_s": per_run_tps,
            "total_ms": _stats([r["total_ms"] for r in runs]), "tokens": runs[0]["tokens"]}


def pair_ratio(ours: list[dict], peer: list[dict]) -> dict[str, float]:
    """Ratios of per-run medians, paired run by run (neighbours in time), then their median."""
    tps = [np.median(p["token_ms"]) / np.median(o["token_ms"]) for o, p in zip(ours, peer)]
    ttft = [p["ttft_ms"] / o["ttft_ms"] for o, p in zip(ours, peer)]
    return {"decode_speedup_median": float(np.median(tps)), "decode_speedup_min": float(np.min(tps)),
            "decode_speedup_max": float(np.max(tps)), "ttft_speedup_median": float(np.median(ttft))}


# --- reporting -----------------------------------------------------------------------------------
def to_markdown(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        "# Peer comparison: decode on the same weights",
        "",
        "Model: random-weight edge-0.5b decoder, "
        + ("**all 24 layers** " if c["llm_layers"] >= 24 else f"**reduced to {c['llm_layers']} of 24 layers** ")
        + "(hidden 896, 14 heads / 2 KV heads, MLP 4864, vocab 151,936, tied embeddings)"
        + ("" if c["llm_layers"] >= 24 else " — the full model's exports and 8 contenders x interleaved runs take "
           "longer; width, vocabulary and KV layout are the real ones") + ". "
        f"Prompt {' / '.join(map(str, c['prompt_tokens']))} tokens, {c['new_tokens']} new tokens (end-of-sequence ignored), greedy, "
        f"{c['runs']} runs per side after {c['warmup']} warm-up, interleaved A B A B, {c['threads'] or 'default'} threads.",
        "",
        "Speed-up = peer ms/token ÷ ours ms/token per interleaved run pair (median [min–max] over pairs); > 1 means ours is faster.",
        "",
        "| ours | peer | prompt | ours decode tok/s (p50) | peer decode tok/s (p50) | decode speed-up | ours TTFT p50 ms | peer TTFT p50 ms | TTFT speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["pairs"]:
        prompt = p.get("prompt_tokens", c["prompt_tokens"][0])
        if "error" in p:
            lines.append(f"| ours {p['precision']} | {p['peer']} {p['precision']} | {prompt} | — | — | failed: {p['error']} | | | |")
            continue
        o, q, r = p["ours"], p["peer_result"], p["ratio"]
        lines.append(
            f"| ours {p['precision']} | {p['peer']} {p['precision']} | {prompt} | {o['decode_tokens_per_s']:.1f} | {q['decode_tokens_per_s']:.1f} | "
            f"{r['decode_speedup_median']:.2f}× [{r['decode_speedup_min']:.2f}–{r['decode_speedup_max']:.2f}] | "
            f"{o['ttft_ms']['p50']:.0f} | {q['ttft_ms']['p50']:.0f} | {r['ttft_speedup_median']:.2f}× |")
    lines += ["", "Notes:", "",
              "- TTFT: ours caches the fixed prompt prefix (system line) once per loaded runtime, so its prefill "
              f"runs all but the first {c['ours_prefix_tokens']} tokens of the prompt; peers prefill all of them.",
              "- Ours as `export` writes it; each decoder's weight MatMuls (manifest `matmuls`): "
              + ", ".join(f"{k} {v}" for k, v in report.get("ours_decoders", {}).items())
              + f" ({int8_scheme(report)}; INT4: MatMulNBits 4-bit, block 128, "
              "accuracy level 4). GenAI's `-p int8` / `-p int4` are its builder's MatMulNBits 8-bit / 4-bit.",
              "- Model sizes on disk: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in report["model_bytes"].items()) + ".",
              "", "## Machine", "", report["machine"], ""]
    return "\n".join(lines)


def decoder_matmuls(manifest) -> str:
    """The decoder's weight MatMuls as its manifest records them, and its one-token graph's where
    it has one (``--cpu-decoder hybrid``)."""
    from exo2ego_edge.bundle import STEP_DECODER

    graphs = manifest.graphs
    steps = f", steps {graphs[STEP_DECODER].matmuls}" if STEP_DECODER in graphs else ""
    return graphs["decoder"].matmuls + steps


def int8_scheme(report: dict[str, Any]) -> str:
    ours = report.get("ours_decoders", {}).get("ours-int8", "")
    if ours == "weight-only":
        return "INT8 with `--cpu-decoder weight-only`: MatMulNBits 8-bit, block 128"
    if "steps" in ours:
        return ("INT8 with `--cpu-decoder hybrid`: prefill on the CPU's integer GEMM, one-token steps on "
                "MatMulNBits 8-bit, block 128")
    return "INT8: layers on the CPU's integer GEMM, lm_head weight-only"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [p for p in report["pairs"] if "error" not in p]
    c = report["config"]
    labels = [f"{p['peer']}\n{p['precision']}" + (f", {p['prompt_tokens']} tok" if len(c["prompt_tokens"]) > 1 else "")
              for p in pairs]
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(pairs)), 4))
    ax.bar(x - 0.2, [p["ours"]["decode_tokens_per_s"] for p in pairs], 0.4, label="exo2ego-edge (ours)")
    ax.bar(x + 0.2, [p["peer_result"]["decode_tokens_per_s"] for p in pairs], 0.4, label="peer")
    for i, p in enumerate(pairs):
        ax.text(i, max(p["ours"]["decode_tokens_per_s"], p["peer_result"]["decode_tokens_per_s"]) * 1.02,
                f"{p['ratio']['decode_speedup_median']:.2f}×", ha="center", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("decode tokens/s (p50)")
    ax.set_title(f"edge-0.5b width, {c['llm_layers']} layers, prompt {' / '.join(map(str, c['prompt_tokens']))}, "
                 f"{c['new_tokens']} new tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_line() -> str:
    from exo2ego_edge.runtime.sysinfo import describe_system, int8_isa, package_versions

    s = describe_system()
    genai = ""
    if GENAI_PY.exists():
        out = subprocess.run([str(GENAI_PY), "-c", "import importlib.metadata as m; print(m.version('onnxruntime-genai'), m.version('onnxruntime'), m.version('transformers'))"],
                             capture_output=True, text=True)
        v = out.stdout.split()
        if len(v) == 3:
            genai = f"; GenAI venv: onnxruntime-genai {v[0]}, onnxruntime {v[1]}, transformers {v[2]}"
    vers = package_versions(("onnxruntime", "torch", "transformers", "optimum", "optimum-onnx", "numpy"))
    return (f"{s['cpu_model']} (int8 instructions: {', '.join(int8_isa() or ['unknown'])}), {s['cpu_logical_cores']} "
            f"logical cores, {(s['memory_total_bytes'] or 0) / 2**30:.0f} GiB RAM, "
            f"{s['os']}, Python {s['python']}; " + ", ".join(f"{k} {v}" for k, v in vers.items()) + genai
            + ". A shared machine: absolute figures drift, the interleaved ratios are the result.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "exo2ego-edge" / "peers",
                    help="where checkpoints and exported models go (reused across runs)")
    ap.add_argument("--llm-layers", type=int, default=6)
    ap.add_argument("--prompt-tokens", type=int, nargs="+", default=[256],
                    help="prompt lengths; each pair is measured at each (decode speed against context)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--only", nargs="*", help="engines to run (hf optimum genai)")
    ap.add_argument("--precisions", nargs="*", help="precisions to run (fp32 int8 int4)")
    ap.add_argument("--ours-cpu-decoder", choices=["integer", "weight-only", "hybrid"], default="integer",
                    help="our INT8 decoder, as export's --cpu-decoder [integer]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ckpt, hf = prepare_checkpoint(work, args.llm_layers, vision_layers=1, seed=args.seed)
    log.info("checkpoint ready (%.0f s)", time.perf_counter() - t0)
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(1000, 150000, size=max(args.prompt_tokens)).tolist()  # ordinary ids: no specials
    ids_files = {n: work / f"prompt_ids_{n}.json" for n in args.prompt_tokens}  # each a prefix of the longest
    for n, path in ids_files.items():
        path.write_text(json.dumps(ids[:n]))
    pairs = [p for p in PAIRS if (not args.only or p[1] in args.only)
             and (not args.precisions or p[2] in args.precisions)]
    models: dict[str, Path] = {}
    max_seq = max(1024, max(args.prompt_tokens) + args.new_tokens)
    for precision in sorted({p[2] for p in pairs}):
        models[f"ours-{precision}"] = ours_bundle(ckpt, work, precision, max_seq, args.ours_cpu_decoder)
    for _, engine, precision in pairs:
        key = f"{engine}-{precision}"
        try:
            if engine == "hf":
                models[key] = hf
            elif engine == "optimum":
                models[key] = optimum_model(hf, work)
            else:
                models[key] = genai_model(hf, work, precision)
        except Exception as e:  # noqa: BLE001 - one peer failing to build must not sink the table
            log.error("building %s failed: %s", key, e)
    log.info("models ready (%.0f s)", time.perf_counter() - t0)
    results: list[dict[str, Any]] = []
    facts = {"prefix_tokens": None}
    for (label, engine, precision), prompt in [(p, n) for p in pairs for n in args.prompt_tokens]:
        key = f"{engine}-{precision}"
        entry: dict[str, Any] = {"peer": label, "engine": engine, "precision": precision, "prompt_tokens": prompt}
        if key not in models:
            entry["error"] = "model build failed"
            results.append(entry)
            continue
        python = GENAI_PY if engine == "genai" else sys.executable
        ours = peer = None
        try:
            ids_file = ids_files[prompt]
            ours = Worker(sys.executable, "ours", models[f"ours-{precision}"], ids_file, args.new_tokens, args.threads)
            facts["prefix_tokens"] = ours.ready.get("prefix_tokens")
            peer = Worker(python, engine, models[key], ids_file, args.new_tokens, args.threads)
            log.info("pair ours-%s vs %s at %d tokens: loaded", precision, key, prompt)
            ro, rp = interleaved(ours, peer, args.runs, args.warmup)
            entry.update(ours=summarize_runs(ro), peer_result=summarize_runs(rp), ratio=pair_ratio(ro, rp),
                         raw={"ours": ro, "peer": rp})
            log.info("pair ours-%s vs %s at %d tokens: %.2fx decode", precision, key, prompt,
                     entry["ratio"]["decode_speedup_median"])
        except Exception as e:  # noqa: BLE001
            log.error("pair %s failed: %s", key, e)
            entry["error"] = str(e).splitlines()[0][:120]
        finally:
            for w in (ours, peer):
                if w is not None:
                    w.close()
        results.append(entry)
        # Written after every pair: a late failure must not lose the pairs already measured.
        report = _report(args, facts, models, results)
        _write_outputs(report, args.out)
    print(to_markdown(report))


def _report(args, facts: dict[str, Any], models: dict[str, Path], results: list[dict[str, Any]]) -> dict[str, Any]:
    from exo2ego_edge.bundle import load_manifest

    model_bytes = {k: sum(f.stat().st_size for f in Path(v).rglob("*") if f.is_file()) for k, v in models.items() if k != "hf-fp32"}
    return {
        "schema": "exo2ego-edge-peers/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {"llm_layers": args.llm_layers, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
                   "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                   "ours_prefix_tokens": facts["prefix_tokens"] or 0},
        "model_bytes": model_bytes,
        "ours_decoders": {k: decoder_matmuls(load_manifest(v)) for k, v in models.items() if k.startswith("ours-")},
        "pairs": results,
        "machine": machine_line(),
    }


def _write_outputs(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "peers.md").write_text(to_markdown(report))
    if any("error" not in p for p in report["pairs"]):
        plot(report, out / "peers.png")


if __name__ == "__main__":
    main()
