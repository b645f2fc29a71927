"""The parity gate at export: PyTorch's reference outputs on held-out clips, then the written bundle
run by the runtime that will ship it.

:func:`make_goldens` runs the PyTorch student (visual tokens, greedy answer, last-position
logits); the exporter stores them in the bundle (``golden.npz``) and gates on
:func:`exo2ego_edge.runtime.verify.compare`, the same torch-free check ``exo2ego-edge verify``
runs on the device. The bundle is loaded with :meth:`exo2ego_edge.runtime.Runtime.load` (format
version and every checksum verified; ONNX Runtime on CPU), so what passes is what users run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.runtime.verify import DEFAULT_THRESHOLDS, Golden, ParityThresholds, compare

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_THRESHOLDS", "ParityThresholds", "make_goldens", "measure_parity"]


def make_goldens(model, tokenizer, clips: list[tuple[np.ndarray, dict[str, Any]]],
                 max_new_tokens: int = 32) -> list[Golden]:
    """The PyTorch student's outputs on ``clips`` (frames, clip row): the parity references."""
    import torch

    stop_id, goldens = tokenizer.stop_id, []
    for frames, row in clips:
        question = row.get("question") or model.cfg.caption_question
        ids = tokenizer.prompt_ids(model.cfg.system_prompt, question)
        with torch.no_grad():
            visual = model(torch.from_numpy(frames)[None])  # (1, T*P, D)
            answer = model.generate(visual, [ids], stop_id, max_new_tokens)[0]
            batch = model.assemble(visual, [ids])
            logits = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids).logits[0, -1]  # (V,): picks answer[0]
        forced = answer + [stop_id] if len(answer) < max_new_tokens else answer
        goldens.append(Golden(frames=frames, question=question, prefix_ids=list(ids[0]), question_ids=list(ids[1]),
                              visual=visual[0].numpy(), answer=answer, forced=forced,
                              last_logits=logits.float().numpy()))  # fmt: skip
    return goldens


def measure_parity(bundle: str | Path, goldens: list[Golden], thresholds: ParityThresholds,
                   source: str = "random frames") -> dict[str, Any]:
    """The written bundle, on ONNX Runtime's CPU provider, against ``goldens``: the manifest's parity dict."""
    from exo2ego_edge.runtime import Runtime

    return compare(Runtime.load(bundle, backend="ort", device="cpu"), goldens, thresholds, source)
