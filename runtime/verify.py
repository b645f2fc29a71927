"""The parity gate, torch-free: a bundle's golden inputs through a backend, against PyTorch's outputs.

The exporter runs the PyTorch student on a few held-out clips and stores, in the bundle, the
inputs (frames, question, the checkpoint tokenizer's prompt ids) and the reference outputs
(visual tokens, greedy answer, the logits at the last prompt position): ``golden.npz``. Export
gates on :func:`compare` right after writing the bundle, and ``exo2ego-edge verify`` runs the same
function on the device, through the backend that will serve (ONNX Runtime or the TensorRT
engines built there), so the accuracy of what actually ships is measured where it ships.

Figures (per clip, then aggregated):

- ``visual_cosine_mean`` / ``visual_cosine_min``: cosine of each visual token, bundle vs PyTorch;
- ``token_agreement``: teacher-forced through the generation path (a ``Session``'s frozen prefix,
  the question prefilled, then one decoder step per reference token): the fraction of PyTorch's
  greedy tokens (stop token included) that the bundle also ranks first given the same prefix;
- ``logits_max_abs``: largest |logit difference| at the last prompt position, from the decode
  path and, where the backend has it, from one multi-position call (what option scoring runs);
- ``exact_sequences``: clips whose free-running answer (``Session.ask``) is PyTorch's, token for token;
- ``prompt_ids_match``: the bundle's prompt tokenizes the question as the checkpoint's tokenizer did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.bundle import BundleError

GOLDEN_FILE = "golden.npz"


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


@dataclass
class Golden:
    """One clip's inputs and the PyTorch student's outputs on it."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    question: str
    prefix_ids: list[int]  # the checkpoint tokenizer's prompt: text before the video ...
    question_ids: list[int]  # ... and after it
    visual: np.ndarray  # (T * P, D) float32 visual tokens
    answer: list[int]  # the greedy answer, stop token excluded
    forced: list[int]  # the tokens teacher-forced: the answer, plus the stop token when it stopped
    last_logits: np.ndarray  # (V,) float32: the logits that chose the answer's first token


def _padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, np.array([len(r) for r in rows], np.int64)


def save_golden(folder: Path, goldens: list[Golden]) -> str:
    """Write ``golden.npz`` into the bundle folder; its file name (for the manifest)."""
    arrays: dict[str, np.ndarray] = {
        "frames": np.stack([g.frames for g in goldens]),
        "visual": np.stack([g.visual for g in goldens]).astype(np.float32),
        "last_logits": np.stack([g.last_logits for g in goldens]).astype(np.float32),
        "questions": np.array([g.question for g in goldens]),
    }
    for key in ("prefix_ids", "question_ids", "answer", "forced"):
        arrays[key], arrays[f"{key}_len"] = _padded([getattr(g, key) for g in goldens])
    with open(folder / GOLDEN_FILE, "wb") as f:
        np.savez_compressed(f, **arrays)
    return GOLDEN_FILE


def load_golden(path: Path) -> list[Golden]:
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: unreadable golden inputs ({e})") from None

    def ids(key: str, i: int) -> list[int]:
        return a[key][i, : a[f"{key}_len"][i]].tolist()

    return [Golden(frames=a["frames"][i], question=str(a["questions"][i]), prefix_ids=ids("prefix_ids", i),
                   question_ids=ids("question_ids", i), visual=a["visual"][i], answer=ids("answer", i),
                   forced=ids("forced", i), last_logits=a["last_logits"][i])
            for i in range(len(a["frames"]))]  # fmt: skip


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def compare(rt, goldens: list[Golden], thresholds: ParityThresholds, source: str) -> dict[str, Any]:
    """Run ``goldens`` through the loaded runtime ``rt``; the manifest's parity dict."""
    from exo2ego_edge.runtime.session import Session

    decoder, prompt = rt.decoder, rt.prompt
    cosines, max_abs, agree, compared, exact, prompts_match = [], 0.0, 0, 0, 0, True
    for g in goldens:
        visual = rt.encode_frames(g.frames)  # (T, P, D)
        cosines.append(_row_cosine(visual.reshape(-1, visual.shape[-1]), g.visual))
        session = Session.from_visual_tokens(rt, visual)
        question_ids = prompt.question_ids(g.question)
        prompts_match &= prompt.prefix_ids == g.prefix_ids and question_ids == g.question_ids

        state = decoder.start(session.kv_prefix)
        steps = [decoder.step(state, prompt.embed(question_ids)).copy()]  # copy: the row is reused
        steps += [decoder.step(state, prompt.embed([tok])).copy() for tok in g.forced[:-1]]
        stepped = np.stack(steps).astype(np.float32)
        firsts = [stepped[0]]
        if hasattr(decoder, "logits"):  # the multi-position call option scoring uses
            firsts.append(decoder.logits(session.kv_prefix, prompt.embed(question_ids), 1)[0].astype(np.float32))
        max_abs = max([max_abs] + [float(np.abs(f - g.last_logits).max()) for f in firsts])
        agree += int((stepped.argmax(-1) == np.asarray(g.forced)).sum())
        compared += len(g.forced)
        exact += session.ask(g.question, len(g.forced)).token_ids == g.answer
    cos = np.concatenate(cosines)
    report: dict[str, Any] = {
        "clips": len(goldens),
        "source": source,
        "visual_cosine_mean": float(cos.mean()),
        "visual_cosine_min": float(cos.min()),
        "logits_max_abs": max_abs,
        "token_agreement": agree / max(compared, 1),
        "tokens_compared": compared,
        "exact_sequences": exact,
        "prompt_ids_match": prompts_match,
        "thresholds": asdict(thresholds),
    }
    report["failures"] = parity_failures(report, thresholds)
    report["passed"] = not report["failures"]
    return report


def parity_failures(report: dict[str, Any], t: ParityThresholds) -> list[str]:
    """Human-readable reasons the figures miss the thresholds (empty when they pass)."""
    out = []
    if not report.get("prompt_ids_match", True):
        out.append("the bundle's prompt tokenizes differently from the checkpoint's tokenizer")
    for key in ("visual_cosine_mean", "visual_cosine_min", "token_agreement"):
        limit = getattr(t, key)
        if limit is not None and report[key] < limit:
            out.append(f"{key} {report[key]:.4f} < {limit}")
    if t.logits_max_abs is not None and report["logits_max_abs"] > t.logits_max_abs:
        out.append(f"logits_max_abs {report['logits_max_abs']:.3g} > {t.logits_max_abs}")
    return out


def verify_bundle(bundle: str | Path, backend: str = "ort", device: str = "auto") -> dict[str, Any]:
    """``exo2ego-edge verify``: the bundle's golden inputs through ``backend``, gated by the
    thresholds the bundle was exported with."""
    from exo2ego_edge.runtime.session import Runtime

    rt = Runtime.load(bundle, backend=backend, device=device)
    m = rt.manifest
    if not m.golden:
        raise BundleError(f"{bundle} has no golden inputs (exported before format 3); re-export it to verify it")
    saved = m.parity.get("thresholds")
    thresholds = ParityThresholds(**saved) if saved else DEFAULT_THRESHOLDS[m.graphs["decoder"].precision]
    return compare(rt, load_golden(Path(bundle) / m.golden), thresholds, source=f"{m.golden} ({rt.backend.description})")
