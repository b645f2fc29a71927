"""Shared fixtures for the runtime tests: a tiny student exported by the real export pipeline.

A freshly initialised LLM answers every prompt with one repeated token, which would make the
"bundle == PyTorch" check vacuous. Re-drawing its matrices with a larger spread (std 0.25) gives
answers that differ per clip and per question, in seconds and without training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

QUESTIONS = ("What am I doing?", "What is in my hand?", "Where am I?")


def make_chaotic_student(folder: Path, seed: int = 0) -> Path:
    import torch

    from exo2ego_edge.config import ModelConfig
    from exo2ego_edge.export.fixtures import CAPTIONS, QUESTION, tiny_config
    from exo2ego_edge.model import Exo2Ego
    from exo2ego_edge.prompt import get_template, train_bpe

    base = ModelConfig.from_name("egosim-tiny")
    tok = train_bpe([*CAPTIONS, QUESTION, *QUESTIONS] * 4, 320, get_template(base.chat_template), base.system_prompt)
    cfg = tiny_config(tok.vocab_size)
    torch.manual_seed(seed)
    model = Exo2Ego(cfg, student=True).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.llm.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.25)
    model.save_pretrained(folder, note="runtime test fixture")
    tok.save(folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    return make_chaotic_student(tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="session")
def bundle_dir(student_dir, tmp_path_factory) -> Path:
    from exo2ego_edge.export.pipeline import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "fp32"
    export_bundle(student_dir, out, parity_samples=1)
    return out


@pytest.fixture(scope="session")
def runtime(bundle_dir):
    from exo2ego_edge.runtime import Runtime

    return Runtime.load(bundle_dir, backend="ort", device="cpu", threads=1)


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[Path]:
    from video_fixtures import write_test_mp4

    folder = tmp_path_factory.mktemp("clips")
    return [write_test_mp4(folder / f"clip{i}.mp4", frames=12, size=(48, 32), seed=i) for i in range(3)]


def frames_of(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
