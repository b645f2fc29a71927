"""Runtime speed on ONNX Runtime CPU, side by side with Hugging Face transformers, in one run.

Measured (same random weights, same prompt, same thread count, greedy):

1. decode tokens/s: our runtime (IOBinding, preallocated KV) vs ``transformers`` ``generate`` in
   PyTorch eager mode (no torch.compile; default SDPA attention) on the LLM of the same student.
   HF per-token time = (time of generate(N) - time of generate(1)) / (N - 1), so its prefill and
   set-up are excluded as they are for ours. Goal: >= 3x.
2. time to first token of a second question on the same clip vs the first (the first pays video
   decoding, the vision graph and the visual-token prefill; the second only its own question).
   Goal: <= 30%.

Random weights never emit the stop token reliably either way, so stop ids are cleared for the
runs: every run generates exactly N tokens on both sides.

    python benchmarks/runtime_speed.py [--preset edge-0.5b] [--llm-layers 24] [--tokens 32] [--runs 5]

Writes benchmarks/results/runtime_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("runtime_speed")


def dist(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "n": int(a.size)}


def hf_reference(cfg, seed: int, bundle: Path):
    """The student the random bundle was exported from, rebuilt from the same seed (and checked)."""
    import torch

    from exo2ego_edge.model import Exo2Ego

    torch.manual_seed(seed)
    model = Exo2Ego(cfg, student=True).eval()
    table = np.load(bundle / "embeddings.npy", mmap_mode="r")
    ours = model.llm.get_input_embeddings().weight.detach().numpy()
    if not np.array_equal(np.asarray(table[:64]), ours[:64]):
        raise SystemExit("rebuilt student does not match the bundle's weights; cannot compare")
    return model


def hf_generate_seconds(model, embeds: np.ndarray, new_tokens: int) -> float:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(embeds))[None]
    mask = torch.ones(x.shape[:2], dtype=torch.long)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.llm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                 pad_token_id=0, use_cache=True)
    elapsed = time.perf_counter() - t0
    assert out.shape[-1] == new_tokens, out.shape
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="edge-0.5b")
    ap.add_argument("--llm-layers", type=int, default=None, help="fewer LLM layers at the same widths")
    ap.add_argument("--vision-layers", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from exo2ego_edge.export.random_bundle import build_random_bundle, preset_config
    from exo2ego_edge.runtime import Runtime
    from video_fixtures_path import write_test_mp4  # noqa: F401  (resolved below)

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = build_random_bundle(args.preset, "fp32", seed=args.seed, llm_layers=args.llm_layers,
                                 vision_layers=args.vision_layers)
    build_s = time.perf_counter() - t0
    cfg = preset_config(args.preset, args.llm_layers, args.vision_layers)
    rt = Runtime.load(bundle, backend="ort", device="cpu", threads=args.threads)
    rt.prompt.stop_ids = []  # see the module docstring: exactly N tokens per run
    model = hf_reference(cfg, args.seed, bundle)

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_test_mp4(Path(tmp) / "clip.mp4", frames=30, size=(320, 240), fps=10)
        questions = ["What am I doing right now?", "What is in my left hand?"]

        # --- 2. TTFT, first vs second question on one clip (fresh session per run) ---------
        rt.session(clip).ask(questions[0], 2)  # warm-up: ORT arenas, the text-prefix KV
        first, second, decode_tok_s, token_s = [], [], [], []
        for _ in range(args.runs):
            s = rt.session(clip)
            a = s.ask(questions[0], args.tokens)
            b = s.ask(questions[1], args.tokens)
            first.append(a.timings.ttft_s)
            second.append(b.timings.ttft_s)
            for ans in (a, b):
                decode_tok_s.append(ans.timings.tokens_per_s)
                token_s.extend(ans.timings.token_s)
        stages = a.timings.to_dict()

        # --- 1. HF generate on the same prompt embeddings ------------------------------------
        sess = rt.session(clip)
        sess.ask(questions[0], 1)
        prompt_ids = rt.prompt.prefix_ids
        visual = sess.visual_tokens.reshape(-1, sess.visual_tokens.shape[-1])
        embeds = np.concatenate([rt.prompt.embed(prompt_ids), visual,
                                 rt.prompt.embed(rt.prompt.question_ids(questions[0]))])
        hf_generate_seconds(model, embeds, 2)  # warm-up
        hf_tok_s = []
        for _ in range(args.runs):
            one = hf_generate_seconds(model, embeds, 1)
            many = hf_generate_seconds(model, embeds, args.tokens)
            hf_tok_s.append((args.tokens - 1) / max(many - one, 1e-9))

    ours, theirs = dist(decode_tok_s), dist(hf_tok_s)
    ttft1, ttft2 = dist(first), dist(second)
    result = {
        "preset": args.preset,
        "llm_layers": cfg.llm.num_layers,
        "vision_layers": cfg.vision.num_layers,
        "vocab_size": cfg.llm.vocab_size,
        "prompt_tokens": int(embeds.shape[0]),
        "new_tokens": args.tokens,
        "runs": args.runs,
        "threads": args.threads,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
        "bundle_build_s": round(build_s, 1),
        "decode_tokens_per_s": {"runtime_ort_cpu": ours, "hf_transformers_eager": theirs,
                                "ratio_p50": ours["p50"] / theirs["p50"], "goal": ">= 3"},
        "runtime_token_s": dist(token_s),
        "ttft_s": {"first_question": ttft1, "second_question": ttft2,
                   "ratio_p50": ttft2["p50"] / ttft1["p50"], "goal": "<= 0.30"},
        "first_question_stages_s": {k: stages[k] for k in ("decode_video_s", "preprocess_s", "vision_s",
                                                             "prefix_prefill_s", "question_prefill_s", "ttft_s")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "runtime_speed.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    d, t = r["decode_tokens_per_s"], r["ttft_s"]
    st = r["first_question_stages_s"]
    return "\n".join([
        "# Runtime speed (ONNX Runtime CPU vs transformers, same weights, one run)",
        "",
        f"{r['preset']}: {r['llm_layers']} LLM layers, {r['vision_layers']} vision layers, vocab {r['vocab_size']}; "
        f"prompt {r['prompt_tokens']} tokens, {r['new_tokens']} new tokens, {r['runs']} runs, "
        f"{r['threads']} threads on {r['machine']['cpu_count']} CPUs.",
        "",
        "| measure | p50 | p90 | ratio (p50) | goal |",
        "|---|---|---|---|---|",
        f"| decode tok/s, runtime (ORT CPU) | {d['runtime_ort_cpu']['p50']:.1f} | {d['runtime_ort_cpu']['p90']:.1f} | "
        f"{d['ratio_p50']:.2f}x vs HF | >= 3x |",
        f"| decode tok/s, HF transformers eager | {d['hf_transformers_eager']['p50']:.1f} | "
        f"{d['hf_transformers_eager']['p90']:.1f} | 1.00x | |",
        f"| TTFT first question (s) | {t['first_question']['p50']:.3f} | {t['first_question']['p90']:.3f} | 1.00 | |",
        f"| TTFT second question, same clip (s) | {t['second_question']['p50']:.3f} | "
        f"{t['second_question']['p90']:.3f} | {t['ratio_p50']:.2f} of first | <= 0.30 |",
        "",
        "First question's stages (s, last run): " + ", ".join(f"{k} {v:.4f}" for k, v in st.items()),
        "",
    ])


if __name__ == "__main__":
    import sys

    # The test helper that writes small H.264 clips lives in tests/; reuse it rather than copy it.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import video_fixtures

    sys.modules["video_fixtures_path"] = video_fixtures
    main()
