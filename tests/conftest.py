"""Shared fixtures: tiny real models built from configs (never downloaded).

The functions behind them, and other test-only code, are in ``tests/helpers/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exo2ego_edge.prompt import DOING_QUESTION

TINY_TEXTS = [
    "the camera wearer picks up the red cup.",
    "the camera wearer puts the blue ball in the green bowl.",
    "the camera wearer pushes the yellow box.",
    DOING_QUESTION,
    "I am picking up the red cup.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from exo2ego_edge.config import ModelConfig
    from exo2ego_edge.prompt import get_template, train_bpe

    cfg = ModelConfig.from_name("egosim-tiny")
    return train_bpe(TINY_TEXTS * 20, 320, get_template(cfg.chat_template), cfg.system_prompt)


# --- the runtime tests' tiny student, exported by the real export pipeline --------------------


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory) -> Path:
    from helpers.students import make_chaotic_student

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
    from helpers.videos import write_test_mp4

    folder = tmp_path_factory.mktemp("clips")
    return [write_test_mp4(folder / f"clip{i}.mp4", frames=12, size=(48, 32), seed=i) for i in range(3)]
