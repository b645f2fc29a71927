"""Tiny student checkpoints for the export, runtime and scoring tests (no training data needed).

A random model's greedy output is degenerate (one token repeated, logit ties), which makes a
parity check meaningless; ``make_tiny_student`` briefly overfits the random student on a few
captions so its greedy answers are real sentences with clear logit margins.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from exo2ego_edge.config import ModelConfig
from exo2ego_edge.prompt import CAPTION_QUESTION, DOING_QUESTION

log = logging.getLogger(__name__)

CAPTIONS = (
    "the camera wearer picks up the red cup",
    "the camera wearer opens the top drawer",
    "the camera wearer cuts the onion with a knife",
    "the camera wearer pours water into the kettle",
)
QUESTION = CAPTION_QUESTION
QUESTIONS = (DOING_QUESTION, "What is in my hand?", "Where am I?")  # the runtime tests ask these


def tiny_config(vocab_size: int) -> ModelConfig:
    """egosim-tiny, shrunk further so a test trains, exports and runs it in seconds on 2 cores.

    Still two LLM layers (so per-layer KV names are exercised) and grouped-query attention.
    """
    from exo2ego_edge.config import LLMConfig, VisionConfig

    return ModelConfig.from_name(
        "egosim-tiny",
        vision=VisionConfig(image_size=32, patch_size=8, hidden_size=48, num_layers=1, num_heads=2, intermediate_size=96),
        llm=LLMConfig(vocab_size=vocab_size, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      intermediate_size=128, max_position_embeddings=256),
        num_frames=2,
    )


def clip_frames_for(index: int, num_frames: int, size: int) -> np.ndarray:
    """A deterministic, distinct uint8 clip (T, H, W, 3) per caption index."""
    rng = np.random.default_rng(100 + index)
    base = rng.integers(0, 256, size=(1, 4, 4, 3))
    clip = np.repeat(np.repeat(base, size // 4, axis=1), size // 4, axis=2)
    return np.repeat(clip, num_frames, axis=0).astype(np.uint8)


def overfit(model, frames, prompts: list, answers: list, target_loss: float = 0.05,
            max_steps: int = 400) -> tuple[int, float]:
    """Train ``model`` on the examples until its loss is below ``target_loss``; (steps, loss).

    Adam at 3e-3 descends smoothly on every CPU kernel set (at 1e-2 one seed plateaued at 0.06 on
    PyTorch's default kernels while AVX-512 reached 0.003), so a target loss, not a step count,
    says when the model is trained; the target is reached in about 80 steps.
    """
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(1, max_steps + 1):
        loss = model.vtg_loss(model(frames), prompts, answers)
        if loss.item() < target_loss:
            return step - 1, loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return max_steps, loss.item()


def _new_student(texts: list[str], vocab: int, seed: int):
    """A tiny student with random weights and a tokenizer trained on ``texts``: (model, tokenizer)."""
    import torch

    from exo2ego_edge.model import Exo2Ego
    from exo2ego_edge.prompt import get_template, train_bpe

    base = ModelConfig.from_name("egosim-tiny")
    tok = train_bpe(texts * 4, vocab, get_template(base.chat_template), base.system_prompt)
    torch.manual_seed(seed)
    return Exo2Ego(tiny_config(tok.vocab_size), student=True), tok


def _save(model, tok, folder: str | Path, note: str) -> Path:
    folder = Path(folder)
    model.eval().save_pretrained(folder, note=note)
    tok.save(folder / "tokenizer.json")
    return folder


def make_tiny_student(folder: str | Path, overfit_to: float | None = 0.05, seed: int = 0, vocab: int = 320,
                      captions: int = len(CAPTIONS)) -> Path:
    """Write a student checkpoint folder (config, weights, checkpoint.json, tokenizer.json).

    The student is overfit until its loss is below ``overfit_to`` on the first ``captions``
    captions, clip i answering CAPTIONS[i] (None: random weights).
    """
    import torch

    model, tok = _new_student([*CAPTIONS, QUESTION], vocab, seed)
    cfg = model.cfg
    if overfit_to is not None:
        frames = torch.from_numpy(np.stack([clip_frames_for(i, cfg.num_frames, cfg.vision.image_size) for i in range(captions)]))
        prompts = [tok.prompt_ids(cfg.system_prompt, QUESTION)] * captions
        answers = [tok.answer_ids(c) for c in CAPTIONS[:captions]]
        steps, loss = overfit(model, frames, prompts, answers, overfit_to)
        if loss >= overfit_to:
            raise RuntimeError(f"the tiny student's loss is {loss:.3f} after {steps} steps, not < {overfit_to}")
        log.info("overfit loss %.3f after %d steps", loss, steps)
    return _save(model, tok, folder, "export test fixture")


# A freshly initialised LLM answers every prompt with one repeated token, which would make a
# "bundle == PyTorch" check vacuous. Re-drawing its matrices with a larger spread (std 0.25) gives
# answers that differ per clip and per question, in seconds and without training.
def make_chaotic_student(folder: Path, seed: int = 0) -> Path:
    import torch

    model, tok = _new_student([*CAPTIONS, QUESTION, *QUESTIONS], 320, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.llm.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.25)
    return _save(model, tok, folder, "runtime test fixture")


def frames_of(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
