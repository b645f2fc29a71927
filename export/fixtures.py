"""Tiny student checkpoints for export tests, runtime tests and benchmarks (no training data needed).

A random model's greedy output is degenerate (one token repeated, logit ties), which makes a
parity check meaningless; ``make_tiny_student`` briefly overfits the random student on a few
captions so its greedy answers are real sentences with clear logit margins.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from exo2ego_edge.config import ModelConfig

log = logging.getLogger(__name__)

CAPTIONS = (
    "the camera wearer picks up the red cup",
    "the camera wearer opens the top drawer",
    "the camera wearer cuts the onion with a knife",
    "the camera wearer pours water into the kettle",
)
QUESTION = "What is the camera wearer doing?"


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


def make_tiny_student(folder: str | Path, overfit_steps: int = 40, seed: int = 0, vocab: int = 320) -> Path:
    """Write a student checkpoint folder (config, weights, checkpoint.json, tokenizer.json)."""
    import torch

    from exo2ego_edge.model import Exo2Ego
    from exo2ego_edge.prompt import get_template, train_bpe

    folder = Path(folder)
    base = ModelConfig.from_name("egosim-tiny")
    tok = train_bpe([*CAPTIONS, QUESTION] * 4, vocab, get_template(base.chat_template), base.system_prompt)
    cfg = tiny_config(tok.vocab_size)
    torch.manual_seed(seed)
    model = Exo2Ego(cfg, student=True)
    if overfit_steps:
        frames = torch.from_numpy(np.stack([clip_frames_for(i, cfg.num_frames, cfg.vision.image_size) for i in range(len(CAPTIONS))]))
        prompts = [tok.prompt_ids(cfg.system_prompt, QUESTION)] * len(CAPTIONS)
        answers = [tok.answer_ids(c) for c in CAPTIONS]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(overfit_steps):
            loss = model.vtg_loss(model(frames), prompts, answers)
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("overfit loss %.3f after %d steps", loss.item(), overfit_steps)
    model.eval()
    model.save_pretrained(folder, note="export test fixture")
    tok.save(folder / "tokenizer.json")
    return folder
