"""The parity gate: run the written bundle through ONNX Runtime and compare it with the PyTorch student.

``OrtBundle`` is a deliberately minimal greedy loop straight on ONNX Runtime (checksums verified
through :func:`exo2ego_edge.bundle.load_manifest`, as the runtime does). It exists because the
runtime package had no generation API when this was written; once ``exo2ego_edge.runtime`` has
one, parity should run through it so a bundle is validated by the code that will ship it.

Figures recorded in the manifest (per held-out clip, then aggregated):

- ``visual_cosine_mean`` / ``visual_cosine_min``: cosine of each visual token, ONNX vs PyTorch;
- ``logits_max_abs``: largest |logit difference| over the prefill's last position and every
  teacher-forced decode step (the decode steps exercise the KV-cache path);
- ``token_agreement``: fraction of the first ``max_new_tokens`` greedy tokens of the PyTorch
  student (stop token included) that the bundle also ranks first when fed the same prefix.
  Teacher forcing measures every step instead of only the first divergence; agreement 1.0 means
  the bundle's free-running greedy output is identical token for token.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.bundle import Manifest, load_manifest

log = logging.getLogger(__name__)

DEFAULT_QUESTION = "What is the camera wearer doing?"


@dataclass
class ParityThresholds:
    """The gate; ``None`` records a figure without gating on it."""

    visual_cosine_mean: float | None = 0.99
    visual_cosine_min: float | None = None
    token_agreement: float | None = 0.9
    logits_max_abs: float | None = None


# Quantized logits are compared in scale-dependent units, so only FP32 gates on them.
DEFAULT_THRESHOLDS: dict[str, ParityThresholds] = {
    "fp32": ParityThresholds(visual_cosine_mean=0.9999, visual_cosine_min=0.999, token_agreement=1.0, logits_max_abs=1e-2),
    "fp16": ParityThresholds(visual_cosine_mean=0.999, visual_cosine_min=0.99, token_agreement=0.9),
    "int8": ParityThresholds(visual_cosine_mean=0.99, visual_cosine_min=0.95, token_agreement=0.9),
    "int4": ParityThresholds(visual_cosine_mean=0.99, visual_cosine_min=0.95, token_agreement=0.8),
}


class OrtBundle:
    """A bundle loaded into ONNX Runtime sessions: the vision graph and a greedy decoder loop."""

    def __init__(self, folder: str | Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # quantized graphs warn about unused initializers; not actionable
        if threads:
            opts.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        m = self.manifest
        self.vision = ort.InferenceSession(str(self.folder / m.graphs["vision"].file), opts, providers=providers)
        self.decoder = ort.InferenceSession(str(self.folder / m.graphs["decoder"].file), opts, providers=providers)
        self.embeddings = np.load(self.folder / m.embeddings.name, mmap_mode="r")  # (V, D)
        self.float_dtype = np.dtype(m.graphs["decoder"].inputs[0].dtype)
        self.past_names = [t.name for t in m.graphs["decoder"].inputs[3:]]

    def visual_tokens(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) -> (T*P, D) float32 visual tokens of one clip."""
        out = self.vision.run(None, {"frames": np.ascontiguousarray(frames)})[0]  # (T, P, D)
        return out.reshape(-1, out.shape[-1]).astype(np.float32)

    def embed(self, ids: list[int]) -> np.ndarray:
        return np.asarray(self.embeddings[np.asarray(ids, dtype=np.int64)], dtype=np.float32)  # (n, D)

    def empty_past(self) -> dict[str, np.ndarray]:
        d = self.manifest.decoder
        return {n: np.zeros((1, d.num_kv_heads, 0, d.head_dim), self.float_dtype) for n in self.past_names}

    def step(
        self, embeds: np.ndarray, past: dict[str, np.ndarray], start: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run ``embeds`` (S, D) after ``start`` cached tokens -> logits (S, V) float32, new cache."""
        s = embeds.shape[0]
        feed = {
            "inputs_embeds": embeds[None].astype(self.float_dtype),
            "attention_mask": np.ones((1, start + s), np.int64),
            "position_ids": np.arange(start, start + s, dtype=np.int64)[None],
            **past,
        }
        logits, *present = self.decoder.run(None, feed)
        return logits[0].astype(np.float32), dict(zip(self.past_names, present))

    def prompt_embeds(self, visual: np.ndarray, prompt: tuple[list[int], list[int]]) -> np.ndarray:
        prefix, question = prompt
        return np.concatenate([self.embed(prefix), visual, self.embed(question)])

    def greedy(self, frames: np.ndarray, prompt: tuple[list[int], list[int]], max_new_tokens: int = 32) -> list[int]:
        """Greedy answer ids (stop token removed), the bundle's equivalent of ``Exo2Ego.generate``."""
        stop = set(self.manifest.prompt.stop_ids)
        embeds = self.prompt_embeds(self.visual_tokens(frames), prompt)
        logits, past = self.step(embeds, self.empty_past(), 0)
        pos, tokens = embeds.shape[0], []
        for _ in range(max_new_tokens):
            nxt = int(logits[-1].argmax())
            if nxt in stop:
                break
            tokens.append(nxt)
            logits, past = self.step(self.embed([nxt]), past, pos)
            pos += 1
        return tokens


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def measure_parity(
    bundle: OrtBundle,
    model,
    tokenizer,
    clips: list[tuple[np.ndarray, dict[str, Any]]],
    thresholds: ParityThresholds,
    max_new_tokens: int = 32,
    source: str = "random frames",
) -> dict[str, Any]:
    """Compare ``bundle`` with the PyTorch student ``model`` on ``clips``; the manifest's parity dict."""
    import torch

    cosines, max_abs, agree, compared, exact = [], 0.0, 0, 0, 0
    stop_id = tokenizer.stop_id
    for frames, row in clips:
        prompt = tokenizer.prompt_ids(model.cfg.system_prompt, row.get("question") or DEFAULT_QUESTION)
        with torch.no_grad():
            ref_visual = model(torch.from_numpy(frames)[None])  # (1, T*P, D)
            ref_tokens = model.generate(ref_visual, [prompt], stop_id, max_new_tokens)[0]
            if len(ref_tokens) < max_new_tokens:
                ref_tokens = ref_tokens + [stop_id]
            batch = model.assemble(ref_visual, [prompt], [ref_tokens])
            ref_logits = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                                   position_ids=batch.position_ids).logits[0].numpy()  # (L, V)
        visual = bundle.visual_tokens(frames)
        cosines.append(_row_cosine(visual, ref_visual[0].numpy()))
        embeds = bundle.prompt_embeds(visual, prompt)
        n = embeds.shape[0]
        logits, past = bundle.step(embeds, bundle.empty_past(), 0)
        steps = [logits[-1]]
        for k, tok in enumerate(ref_tokens[:-1]):
            logits, past = bundle.step(bundle.embed([tok]), past, n + k)
            steps.append(logits[-1])
        got = np.stack(steps)  # (len(ref), V): the prediction for each reference token
        want = ref_logits[n - 1 : n - 1 + len(ref_tokens)]
        max_abs = max(max_abs, float(np.abs(got - want).max()))
        hits = int((got.argmax(-1) == np.asarray(ref_tokens)).sum())
        agree, compared, exact = agree + hits, compared + len(ref_tokens), exact + (hits == len(ref_tokens))
    cos = np.concatenate(cosines)
    report: dict[str, Any] = {
        "clips": len(clips),
        "source": source,
        "visual_cosine_mean": float(cos.mean()),
        "visual_cosine_min": float(cos.min()),
        "logits_max_abs": max_abs,
        "token_agreement": agree / max(compared, 1),
        "tokens_compared": compared,
        "exact_sequences": exact,
        "thresholds": asdict(thresholds),
    }
    report["failures"] = parity_failures(report, thresholds)
    report["passed"] = not report["failures"]
    return report


def parity_failures(report: dict[str, Any], t: ParityThresholds) -> list[str]:
    """Human-readable reasons the figures miss the thresholds (empty when they pass)."""
    out = []
    for key in ("visual_cosine_mean", "visual_cosine_min", "token_agreement"):
        limit = getattr(t, key)
        if limit is not None and report[key] < limit:
            out.append(f"{key} {report[key]:.4f} < {limit}")
    if t.logits_max_abs is not None and report["logits_max_abs"] > t.logits_max_abs:
        out.append(f"logits_max_abs {report['logits_max_abs']:.3g} > {t.logits_max_abs}")
    return out
