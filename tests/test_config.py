"""Every preset builds and validates; configs round-trip; bad configs fail with a named reason."""

import dataclasses
import json

import pytest

from exo2ego_edge.config import PRESETS, LLMConfig, ModelConfig, VisionConfig
from exo2ego_edge.errors import UserError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name, tmp_path):
    cfg = ModelConfig.from_name(name)
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.from_checkpoint(tmp_path) == cfg
    assert cfg.visual_tokens == cfg.num_frames * cfg.tokens_per_frame


def test_preset_sizes_match_design():
    edge = ModelConfig.from_name("edge-0.5b")
    assert (edge.vision.family, edge.vision.image_size, edge.vision.patch_size) == ("siglip", 224, 16)
    assert (edge.llm.family, edge.llm.hidden_size, edge.llm.num_layers) == ("qwen2", 896, 24)
    big = ModelConfig.from_name("exo2ego-7b")
    assert (big.vision.family, big.vision.image_size, big.num_frames) == ("clip", 336, 16)
    assert (big.llm.family, big.llm.hidden_size, big.lora_r, big.lora_alpha) == ("mistral", 4096, 128, 256)


def test_overrides_apply():
    assert ModelConfig.from_name("egosim-tiny", num_frames=8).num_frames == 8


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: ModelConfig.from_name("nope"), "unknown preset 'nope'"),
        (lambda: VisionConfig(image_size=65), "not a multiple of patch_size"),
        (lambda: VisionConfig(family="vit"), "vision.family 'vit'"),
        (lambda: LLMConfig(num_heads=4, num_kv_heads=3), "num_kv_heads"),
        (lambda: ModelConfig(tokens_per_frame=5), "egosim-tiny: tokens_per_frame 5"),
        (lambda: ModelConfig(tokens_per_frame=9), "cannot be pooled evenly"),
    ],
)
def test_invalid_configs_name_the_problem(make, fragment):
    with pytest.raises(UserError, match=fragment):
        make()


def test_unknown_keys_refused(tmp_path):
    d = dataclasses.asdict(ModelConfig())
    d["frames_per_second"] = 4
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="unknown keys: frames_per_second"):
        ModelConfig.from_checkpoint(tmp_path)


def test_malformed_file_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(UserError, match="not valid JSON"):
        ModelConfig.from_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no such model config"):
        ModelConfig.from_file(tmp_path / "missing.json")
