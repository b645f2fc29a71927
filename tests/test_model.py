"""The Exo2Ego model: shapes, the F/G identity start, generation, checkpoints, every preset."""

from __future__ import annotations

import pytest
import torch

from exo2ego_edge.config import ModelConfig, VisionConfig
from exo2ego_edge.errors import UserError
from exo2ego_edge.model import Exo2Ego


def _tiny(tokenizer, **overrides) -> ModelConfig:
    cfg = ModelConfig.from_name("egosim-tiny", **overrides)
    cfg.llm.vocab_size = tokenizer.vocab_size
    return cfg


def _frames(b=2, t=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, size, size, 3), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_visual_tokens_shape(family, tiny_tokenizer):
    torch.manual_seed(0)
    cfg = _tiny(tiny_tokenizer, vision=VisionConfig(family=family))
    model = Exo2Ego(cfg).eval()
    tokens = model(_frames())
    assert tokens.shape == (2, cfg.visual_tokens, cfg.llm.hidden_size)


def test_mapping_networks_start_as_identity(tiny_tokenizer):
    model = Exo2Ego(_tiny(tiny_tokenizer))
    x = torch.randn(2, 16, model.cfg.vision.hidden_size)
    assert torch.equal(model.F(x), x) and torch.equal(model.G(x), x)


def test_preprocess_matches_reference_normalisation(tiny_tokenizer):
    model = Exo2Ego(_tiny(tiny_tokenizer))
    frames = _frames(1, 2)
    mean = torch.tensor(model.cfg.image_mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(model.cfg.image_std).view(1, 1, 3, 1, 1)
    expected = (frames.permute(0, 1, 4, 2, 3).float() / 255 - mean) / std
    torch.testing.assert_close(model.preprocess(frames), expected)


def test_frames_are_independent(tiny_tokenizer):
    """The runtime caches per-frame tokens, so a frame's tokens must not depend on its neighbours."""
    torch.manual_seed(0)
    model = Exo2Ego(_tiny(tiny_tokenizer)).eval()
    frames = _frames(1, 4)
    p = model.cfg.tokens_per_frame
    with torch.no_grad():
        whole = model(frames)
        first = model(frames[:, :1])
    torch.testing.assert_close(whole[:, :p], first, rtol=1e-5, atol=1e-5)


def test_batched_generation_equals_one_by_one(tiny_tokenizer):
    torch.manual_seed(0)
    model = Exo2Ego(_tiny(tiny_tokenizer)).eval()
    cfg = model.cfg
    prompts = [
        tiny_tokenizer.prompt_ids(cfg.system_prompt, "What am I doing?"),
        tiny_tokenizer.prompt_ids(cfg.system_prompt, "What is in my hand right now?"),
    ]
    with torch.no_grad():
        visual = model(_frames())
    batched = model.generate(visual, prompts, tiny_tokenizer.stop_id, max_new_tokens=6)
    single = [model.generate(visual[i : i + 1], prompts[i : i + 1], tiny_tokenizer.stop_id, 6)[0] for i in range(2)]
    assert batched == single


def test_vtg_loss_only_scores_answer_tokens(tiny_tokenizer):
    model = Exo2Ego(_tiny(tiny_tokenizer))
    cfg = model.cfg
    prompt = tiny_tokenizer.prompt_ids(cfg.system_prompt, "What am I doing?")
    answer = tiny_tokenizer.answer_ids("I am picking up the red cup.")
    visual = torch.randn(1, cfg.visual_tokens, cfg.llm.hidden_size)
    batch = model.assemble(visual, [prompt], [answer])
    scored = batch.labels[batch.labels != -100].tolist()
    assert scored == answer and answer[-1] == tiny_tokenizer.stop_id
    loss = model.vtg_loss(visual, [prompt], [answer])
    assert torch.isfinite(loss) and loss > 0


def test_checkpoint_round_trip_and_student_view(tiny_tokenizer, tmp_path):
    torch.manual_seed(0)
    full = Exo2Ego(_tiny(tiny_tokenizer)).eval()
    full.save_pretrained(tmp_path / "full", stage="2")
    student = Exo2Ego.from_pretrained(tmp_path / "full", student=True).eval()
    assert not hasattr(student, "exo_encoder") and not hasattr(student, "G")
    frames = _frames()
    with torch.no_grad():
        torch.testing.assert_close(student(frames), full(frames))
    student.save_pretrained(tmp_path / "student")
    with pytest.raises(UserError, match="student checkpoint has no exo encoder"):
        Exo2Ego.from_pretrained(tmp_path / "student", student=False)
    with pytest.raises(UserError, match="not an exo2ego-edge checkpoint .missing config.json"):
        Exo2Ego.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["edge-0.5b", "exo2ego-7b"])
def test_large_presets_build_on_meta_device(name):
    """Build the real architectures without allocating memory and check their sizes."""
    with torch.device("meta"):
        model = Exo2Ego(ModelConfig.from_name(name), student=True)
    llm = sum(p.numel() for p in model.llm.parameters())
    vision = sum(p.numel() for p in model.ego_encoder.parameters())
    expected_llm, expected_vision = {"edge-0.5b": (0.49e9, 0.086e9), "exo2ego-7b": (7.24e9, 0.30e9)}[name]
    assert llm == pytest.approx(expected_llm, rel=0.03)
    assert vision == pytest.approx(expected_vision, rel=0.05)
