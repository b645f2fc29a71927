"""The parity gate: the written bundle, run by the runtime that will ship it, against the PyTorch student.

The bundle is loaded with :meth:`exo2ego_edge.runtime.Runtime.load` (format version and every
checksum verified; ONNX Runtime on CPU) and driven through the runtime's own code paths, so what
passes here is what users run; there is no second generation loop to drift from it.

Figures recorded in the manifest (per held-out clip, then aggregated):

- ``visual_cosine_mean`` / ``visual_cosine_min``: cosine of each visual token,
  ``Runtime.encode_frames`` vs PyTorch;
- ``token_agreement``: teacher-forced through the generation path (a ``Session``'s frozen prefix,
  the question prefilled with ``logits_to_keep = 1``, then one decoder step per reference token):
  the fraction of the PyTorch student's first ``max_new_tokens`` greedy tokens (stop token
  included) that the bundle also ranks first when fed the same prefix. Teacher forcing measures
  every step instead of only the first divergence;
- ``logits_max_abs``: largest |logit difference| over those steps (which exercise the KV-cache
  path) and over one multi-position pass of the question and the reference answer with
  ``logits_to_keep`` = the answer's length (what option scoring runs);
- ``exact_sequences``: clips whose free-running answer from ``Session.ask`` (the runtime's
  generation loop, stop tokens and all) is the PyTorch student's greedy answer token for token;
- ``prompt_ids_match``: the bundle's prompt (manifest template + tokenizer) tokenizes the question
  as the checkpoint's tokenizer does.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


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


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def measure_parity(
    bundle: str | Path,
    model,
    tokenizer,
    clips: list[tuple[np.ndarray, dict[str, Any]]],
    thresholds: ParityThresholds,
    max_new_tokens: int = 32,
    source: str = "random frames",
) -> dict[str, Any]:
    """Compare the bundle folder with the PyTorch student ``model`` on ``clips``; the manifest's parity dict."""
    import torch

    from exo2ego_edge.runtime import Runtime, Session

    rt = Runtime.load(bundle, backend="ort", device="cpu")
    decoder, prompt = rt.decoder, rt.prompt
    cosines, max_abs, agree, compared, exact, prompts_match = [], 0.0, 0, 0, 0, True
    stop_id = tokenizer.stop_id
    for frames, row in clips:
        question = row.get("question") or model.cfg.caption_question
        ids = tokenizer.prompt_ids(model.cfg.system_prompt, question)
        with torch.no_grad():
            ref_visual = model(torch.from_numpy(frames)[None])  # (1, T*P, D)
            ref_tokens = model.generate(ref_visual, [ids], stop_id, max_new_tokens)[0]
            forced = ref_tokens + [stop_id] if len(ref_tokens) < max_new_tokens else ref_tokens
            batch = model.assemble(ref_visual, [ids], [forced])
            ref_logits = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                                   position_ids=batch.position_ids).logits[0].numpy()  # (L, V)
        n = len(ids[0]) + ref_visual.shape[1] + len(ids[1])
        want = ref_logits[n - 1 : n - 1 + len(forced)]  # the prediction of each reference token

        visual = rt.encode_frames(frames)  # (T, P, D)
        cosines.append(_row_cosine(visual.reshape(-1, visual.shape[-1]), ref_visual[0].numpy()))
        session = Session.from_visual_tokens(rt, visual)
        question_ids = prompt.question_ids(question)
        prompts_match &= prompt.prefix_ids == ids[0] and question_ids == ids[1]

        # Teacher-forced through the generation path: one decoder step per reference token.
        state = decoder.start(session.kv_prefix)
        steps = [decoder.step(state, prompt.embed(question_ids)).copy()]  # copy: the row is reused
        steps += [decoder.step(state, prompt.embed([tok])).copy() for tok in forced[:-1]]
        stepped = np.stack(steps).astype(np.float32)
        # The same predictions from one multi-position call (logits_to_keep = answer length).
        scored = decoder.logits(session.kv_prefix, prompt.embed(question_ids + forced[:-1]), len(forced))
        for got in (stepped, scored.astype(np.float32)):
            max_abs = max(max_abs, float(np.abs(got - want).max()))
        hits = int((stepped.argmax(-1) == np.asarray(forced)).sum())
        agree, compared = agree + hits, compared + len(forced)

        exact += session.ask(question, max_new_tokens).token_ids == ref_tokens
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
