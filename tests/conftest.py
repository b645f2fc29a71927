"""Shared fixtures: tiny real models built from configs (never downloaded)."""

from __future__ import annotations

import pytest

TINY_TEXTS = [
    "the camera wearer picks up the red cup.",
    "the camera wearer puts the blue ball in the green bowl.",
    "the camera wearer pushes the yellow box.",
    "What am I doing?",
    "I am picking up the red cup.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from exo2ego_edge.config import ModelConfig
    from exo2ego_edge.prompt import get_template, train_bpe

    cfg = ModelConfig.from_name("egosim-tiny")
    return train_bpe(TINY_TEXTS * 20, 320, get_template(cfg.chat_template), cfg.system_prompt)
