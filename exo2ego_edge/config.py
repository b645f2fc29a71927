"""Typed model configs and the named presets.

One dataclass per part (vision tower, LLM) and one for the whole Exo2Ego model, validated on
construction with errors that name the config. Presets are looked up by name; a config also
round-trips through JSON (``to_dict`` / ``from_dict``) so a checkpoint describes itself.

No torch or transformers here: the runtime reads these dicts from a bundle manifest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exo2ego_edge.errors import UserError
from exo2ego_edge.prompt import CAPTION_QUESTION

VISION_FAMILIES = ("siglip", "clip")
LLM_FAMILIES = ("qwen2", "llama", "mistral")


@dataclass
class VisionConfig:
    """A ViT vision tower (Hugging Face SigLIP or CLIP vision model)."""

    family: str = "siglip"
    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 96
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 192
    # Other Hugging Face config keys carried over from a real checkpoint (layer_norm_eps, ...),
    # so a tower loaded from a folder is rebuilt exactly from our config alone.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("vision.family", self.family, VISION_FAMILIES)
        if self.image_size % self.patch_size:
            raise UserError(
                f"vision: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        _check_heads("vision", self.hidden_size, self.num_heads)

    @property
    def grid(self) -> int:
        """Patches per side of the square patch grid."""
        return self.image_size // self.patch_size


@dataclass
class LLMConfig:
    """A decoder-only causal LM (Hugging Face Qwen2, Llama or Mistral)."""

    family: str = "qwen2"
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice("llm.family", self.family, LLM_FAMILIES)
        _check_heads("llm", self.hidden_size, self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise UserError(
                f"llm: num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return int(self.extra.get("head_dim") or self.hidden_size // self.num_heads)


@dataclass
class ModelConfig:
    """The whole Exo2Ego model: two vision towers, F/G mapping networks, projector, LLM."""

    name: str = "egosim-tiny"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    # Frames sampled uniformly from a clip. The paper uses 16; fewer keeps the tiny preset fast.
    num_frames: int = 4
    # Each frame's patch grid is average-pooled to this many tokens (a perfect square): the LLM's
    # visual context is num_frames * tokens_per_frame, the main lever on prefill latency.
    tokens_per_frame: int = 4
    # F (ego -> exo) and G (exo -> ego): residual MLP blocks on the vision width.
    mapping_blocks: int = 2
    mapping_expansion: int = 2
    # CLIP's normalisation; SigLIP presets override with 0.5 / 0.5.
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    chat_template: str = "chatml"
    system_prompt: str = "You are an assistant that sees through the camera wearer's eyes."
    # The question whose answer is a clip's caption in training; the parity gate and the
    # benchmarks' caption tasks ask the model this one.
    caption_question: str = CAPTION_QUESTION
    # Stage-3 LoRA. The paper uses r=128, alpha=256 at 7B; smaller presets scale it down.
    lora_r: int = 8
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.llm, dict):
            self.llm = LLMConfig(**self.llm)
        self.image_mean = tuple(self.image_mean)
        self.image_std = tuple(self.image_std)
        side = round(self.tokens_per_frame**0.5)
        if side * side != self.tokens_per_frame:
            raise UserError(f"{self.name}: tokens_per_frame {self.tokens_per_frame} is not a perfect square")
        if self.vision.grid % side:
            raise UserError(
                f"{self.name}: the {self.vision.grid}x{self.vision.grid} patch grid cannot be pooled "
                f"evenly to {side}x{side} tokens per frame"
            )
        if self.num_frames < 1:
            raise UserError(f"{self.name}: num_frames must be >= 1")

    @property
    def visual_tokens(self) -> int:
        """Visual tokens the LLM sees per clip."""
        return self.num_frames * self.tokens_per_frame

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"model config has unknown keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"model config is invalid: {e}") from None

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        if name not in PRESETS:
            raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name](), **overrides)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise UserError(f"{path}: no such model config") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> ModelConfig:
        return cls.from_file(Path(folder) / "config.json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _egosim_tiny() -> ModelConfig:
    # Small enough to train every stage on 2 CPU cores in minutes; the embedded default.
    return ModelConfig(name="egosim-tiny")


def _edge_05b() -> ModelConfig:
    # SigLIP-B/16-224 vision + Qwen2-0.5B LLM: what a Jetson Orin Nano runs.
    return ModelConfig(
        name="edge-0.5b",
        vision=VisionConfig(
            family="siglip", image_size=224, patch_size=16, hidden_size=768, num_layers=12,
            num_heads=12, intermediate_size=3072,
        ),
        llm=LLMConfig(
            family="qwen2", vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14,
            num_kv_heads=2, intermediate_size=4864, max_position_embeddings=32768,
            rope_theta=1000000.0, tie_word_embeddings=True,
        ),
        num_frames=8,
        tokens_per_frame=49,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        lora_r=64,
        lora_alpha=128,
    )


def _exo2ego_7b() -> ModelConfig:
    # The paper's sizes: CLIP-L/336 vision, 16 frames, Mistral-7B, LoRA r=128 / alpha=256.
    return ModelConfig(
        name="exo2ego-7b",
        vision=VisionConfig(
            family="clip", image_size=336, patch_size=14, hidden_size=1024, num_layers=24,
            num_heads=16, intermediate_size=4096,
        ),
        llm=LLMConfig(
            family="mistral", vocab_size=32000, hidden_size=4096, num_layers=32, num_heads=32,
            num_kv_heads=8, intermediate_size=14336, max_position_embeddings=32768,
            rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
        ),
        num_frames=16,
        tokens_per_frame=36,
        chat_template="mistral",
        lora_r=128,
        lora_alpha=256,
    )


PRESETS = {"egosim-tiny": _egosim_tiny, "edge-0.5b": _edge_05b, "exo2ego-7b": _exo2ego_7b}


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{what} '{value}' is not one of: {', '.join(choices)}")


def _check_heads(what: str, hidden: int, heads: int) -> None:
    if hidden % heads:
        raise UserError(f"{what}: hidden_size {hidden} is not a multiple of num_heads {heads}")
