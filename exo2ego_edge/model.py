"""The Exo2Ego model, top to bottom: vision encoder, F/G mapping networks, projector, LLM.

    ego frames --ego encoder--> x --F--> F(x) ~ exo feature space
    exo frames --exo encoder--> y --G--> G(y) ~ ego feature space
    LLM input:  [prompt prefix | projector([x ; F(x)]) | question] -> answer

The ego features x and their exo-space mapping F(x) are joined along the *channel* axis before the
projector (not as two token sequences): the LLM's visual context stays num_frames *
tokens_per_frame tokens, which is what bounds prefill latency on a Jetson, and the projector
learns how much to trust each half. An exo clip is shown to the LLM as [y ; y]: y already lives
in exo space. With F initialised to the identity, a migrated ego encoder starts out looking to
the LLM exactly like the demonstrator did.

Shapes: B batch, T frames, P tokens per frame, Dv vision width, D LLM width, L sequence length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F_
from torch import nn

from exo2ego_edge.config import LLMConfig, ModelConfig, VisionConfig
from exo2ego_edge.errors import UserError

# Hugging Face config keys beyond our dims that a real checkpoint may set and we must carry.
_VISION_EXTRA_KEYS = ("hidden_act", "layer_norm_eps")
_LLM_EXTRA_KEYS = (
    "hidden_act", "head_dim", "rope_scaling", "sliding_window", "use_sliding_window",
    "max_window_layers", "attention_bias", "mlp_bias", "bos_token_id", "eos_token_id",
)


# --- Hugging Face building blocks ----------------------------------------------------------------
def build_vision_tower(vc: VisionConfig, path: str | Path | None = None) -> nn.Module:
    """A SigLIP or CLIP vision tower: from a local folder, or randomly initialised from ``vc``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    config_cls, model_cls = {
        "siglip": (SiglipVisionConfig, SiglipVisionModel),
        "clip": (CLIPVisionConfig, CLIPVisionModel),
    }[vc.family]
    if path is not None:
        # The folder's own model_type decides the class (a CLIP folder under a SigLIP preset);
        # SigLIP's pooling head is dropped as in the random-init path below.
        family = _vision_family(path)
        model_cls = {"siglip": SiglipVisionModel, "clip": CLIPVisionModel}[family]
        extra = {}
        if family == "siglip":
            hf = SiglipVisionConfig.from_pretrained(path, local_files_only=True)
            hf.vision_use_head = False
            extra = {"config": hf}
        return _from_local_folder(model_cls, path, "vision tower", **extra)
    hf = config_cls(
        image_size=vc.image_size, patch_size=vc.patch_size, hidden_size=vc.hidden_size,
        num_hidden_layers=vc.num_layers, num_attention_heads=vc.num_heads,
        intermediate_size=vc.intermediate_size, **vc.extra,
    )
    if vc.family == "siglip":
        hf.vision_use_head = False  # the attention-pooling head is unused: we pool patches ourselves
    return model_cls(hf)


def build_llm(lc: LLMConfig, path: str | Path | None = None) -> nn.Module:
    """A causal LM: from a local folder, or randomly initialised from ``lc``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if path is not None:
        return _from_local_folder(AutoModelForCausalLM, path, "LLM")
    hf = AutoConfig.for_model(
        lc.family, vocab_size=lc.vocab_size, hidden_size=lc.hidden_size,
        num_hidden_layers=lc.num_layers, num_attention_heads=lc.num_heads,
        num_key_value_heads=lc.num_kv_heads, intermediate_size=lc.intermediate_size,
        max_position_embeddings=lc.max_position_embeddings, rope_theta=lc.rope_theta,
        rms_norm_eps=lc.rms_norm_eps, tie_word_embeddings=lc.tie_word_embeddings, **lc.extra,
    )
    return AutoModelForCausalLM.from_config(hf)


def _from_local_folder(model_cls, path: str | Path, what: str, **config_overrides) -> nn.Module:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a Hugging Face {what} folder (config.json missing)")
    # local_files_only: users bring checkpoint folders; nothing is ever fetched from a hub.
    return model_cls.from_pretrained(path, local_files_only=True, dtype=torch.float32, **config_overrides)


def _vision_family(path: str | Path) -> str:
    config = Path(path) / "config.json"
    if not config.is_file():
        raise UserError(f"{path}: not a Hugging Face vision tower folder (config.json missing)")
    model_type = json.loads(config.read_text()).get("model_type", "")
    return "clip" if "clip" in model_type else "siglip"


def vision_config_from_hf(hf) -> VisionConfig:
    family = "clip" if "clip" in hf.model_type else "siglip"
    return VisionConfig(
        family=family, image_size=hf.image_size, patch_size=hf.patch_size,
        hidden_size=hf.hidden_size, num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads, intermediate_size=hf.intermediate_size,
        extra=_extra_keys(hf, _VISION_EXTRA_KEYS),
    )


def llm_config_from_hf(hf) -> LLMConfig:
    return LLMConfig(
        family=hf.model_type, vocab_size=hf.vocab_size, hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers, num_heads=hf.num_attention_heads,
        num_kv_heads=getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        intermediate_size=hf.intermediate_size, max_position_embeddings=hf.max_position_embeddings,
        rope_theta=float(getattr(hf, "rope_theta", 10000.0)), rms_norm_eps=hf.rms_norm_eps,
        tie_word_embeddings=bool(hf.tie_word_embeddings), extra=_extra_keys(hf, _LLM_EXTRA_KEYS),
    )


def _extra_keys(hf, keys: tuple[str, ...]) -> dict:
    return {k: getattr(hf, k) for k in keys if getattr(hf, k, None) is not None}


# --- Exo2Ego parts ---------------------------------------------------------------------------
class VisionEncoder(nn.Module):
    """A vision tower applied per frame, its patch grid average-pooled to P tokens per frame."""

    def __init__(self, cfg: ModelConfig, tower: nn.Module):
        super().__init__()
        self.tower = tower
        self.has_cls_token = cfg.vision.family == "clip"
        self.grid = cfg.vision.grid
        self.pool = self.grid // round(cfg.tokens_per_frame**0.5)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]  # frames: (B, T, 3, H, W), normalised
        h = self.tower(pixel_values=frames.flatten(0, 1)).last_hidden_state  # (B*T, 1? + g*g, Dv)
        if self.has_cls_token:
            h = h[:, 1:]
        dv = h.shape[-1]
        h = h.transpose(1, 2).reshape(b * t, dv, self.grid, self.grid)  # (B*T, Dv, g, g)
        h = F_.avg_pool2d(h, self.pool)  # (B*T, Dv, s, s): a fixed kernel keeps the ONNX graph simple
        return h.flatten(2).transpose(1, 2).reshape(b, -1, dv)  # (B, T*P, Dv)


class ResidualBlock(nn.Module):
    """x + MLP(LayerNorm(x)); the output layer starts at zero so the block starts as identity."""

    def __init__(self, width: int, expansion: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, width * expansion)
        self.down = nn.Linear(width * expansion, width)
        nn.init.zeros_(self.down.weight)
        nn.init.zeros_(self.down.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F_.gelu(self.up(self.norm(x))))


class MappingNet(nn.Sequential):
    """F (ego -> exo feature space) or G (exo -> ego): a stack of residual blocks on Dv."""

    def __init__(self, width: int, blocks: int, expansion: int):
        super().__init__(*(ResidualBlock(width, expansion) for _ in range(blocks)))


class Projector(nn.Module):
    """Two-layer MLP from the joined vision features [x ; F(x)] (2*Dv) to the LLM width D."""

    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.fc1 = nn.Linear(2 * vision_width, llm_width)
        self.fc2 = nn.Linear(llm_width, llm_width)

    def forward(self, joined: torch.Tensor) -> torch.Tensor:
        return self.fc2(F_.gelu(self.fc1(joined)))


@dataclass
class PromptBatch:
    """LLM inputs for a batch of (visual tokens, question[, answer]) samples."""

    inputs_embeds: torch.Tensor  # (B, L, D)
    attention_mask: torch.Tensor  # (B, L) 1 = real token
    position_ids: torch.Tensor  # (B, L)
    labels: torch.Tensor | None  # (B, L) -100 except answer + stop tokens


class Exo2Ego(nn.Module):
    """The full training model; ``student=True`` keeps only what inference needs (no exo, no G)."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        student: bool = False,
        vision_tower_path: str | Path | None = None,
        llm_path: str | Path | None = None,
    ):
        super().__init__()
        self.student = student
        cfg = replace(cfg)  # loaded towers / LLMs set their own sub-configs: never on the caller's config
        tower = build_vision_tower(cfg.vision, vision_tower_path)
        if vision_tower_path is not None:  # before VisionEncoder: its grid / CLS token come from cfg
            cfg.vision = vision_config_from_hf(tower.config)
        self.ego_encoder = VisionEncoder(cfg, tower)
        self.llm = build_llm(cfg.llm, llm_path)
        if llm_path is not None:
            cfg.llm = llm_config_from_hf(self.llm.config)
        self.cfg = cfg
        dv = cfg.vision.hidden_size
        self.F = MappingNet(dv, cfg.mapping_blocks, cfg.mapping_expansion)
        self.projector = Projector(dv, cfg.llm.hidden_size)
        if not student:
            self.exo_encoder = VisionEncoder(cfg, build_vision_tower(cfg.vision, vision_tower_path))
            self.G = MappingNet(dv, cfg.mapping_blocks, cfg.mapping_expansion)
        mean = torch.tensor(cfg.image_mean).view(3, 1, 1)
        std = torch.tensor(cfg.image_std).view(3, 1, 1)
        self.register_buffer("pixel_scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("pixel_shift", -mean / std, persistent=False)

    # --- vision ------------------------------------------------------------------------------
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) frames at the model's size -> normalised float (B, T, 3, H, W)."""
        x = frames.permute(0, 1, 4, 2, 3).to(self.pixel_scale.dtype)
        return x * self.pixel_scale + self.pixel_shift  # == (x/255 - mean) / std, one fused op

    def ego_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.ego_encoder(self.preprocess(frames))  # x: (B, T*P, Dv)

    def exo_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.exo_encoder(self.preprocess(frames))  # y: (B, T*P, Dv)

    def ego_visual_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(torch.cat([x, self.F(x)], dim=-1))  # (B, T*P, D)

    def exo_visual_tokens(self, y: torch.Tensor) -> torch.Tensor:
        return self.projector(torch.cat([y, y], dim=-1))  # (B, T*P, D)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Inference path: uint8 ego frames -> visual tokens for the LLM (the vision graph)."""
        return self.ego_visual_tokens(self.ego_features(frames))

    def migrate_exo_to_ego(self) -> None:
        """Stage 2's migration: the learner starts as an exact copy of the demonstrator."""
        self.ego_encoder.load_state_dict(self.exo_encoder.state_dict())

    # --- language ----------------------------------------------------------------------------
    def assemble(
        self,
        visual: torch.Tensor,
        prompts: list[tuple[list[int], list[int]]],
        answers: list[list[int]] | None = None,
        pad_left: bool = False,
    ) -> PromptBatch:
        """Splice visual tokens between each prompt's prefix and question ids (and answer ids).

        Right padding for training; left padding for batched generation so every row's next
        token is at the same position.
        """
        embed = self.llm.get_input_embeddings()
        rows, label_rows = [], []
        for i, (prefix, question) in enumerate(prompts):
            answer = answers[i] if answers is not None else []
            ids = torch.tensor(prefix + question + answer, dtype=torch.long, device=visual.device)
            e = embed(ids)
            n_pre = len(prefix)
            rows.append(torch.cat([e[:n_pre], visual[i], e[n_pre:]]))  # (L_i, D)
            ignore = len(prefix) + visual.shape[1] + len(question)
            label_rows.append([-100] * ignore + answer)
        length = max(r.shape[0] for r in rows)
        b, d = len(rows), visual.shape[-1]
        embeds = visual.new_zeros(b, length, d)
        mask = torch.zeros(b, length, dtype=torch.long, device=visual.device)
        labels = torch.full((b, length), -100, dtype=torch.long, device=visual.device)
        for i, (row, lab) in enumerate(zip(rows, label_rows)):
            span = slice(length - len(row), length) if pad_left else slice(0, len(row))
            embeds[i, span] = row
            mask[i, span] = 1
            labels[i, span] = torch.tensor(lab, dtype=torch.long)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return PromptBatch(embeds, mask, positions, labels if answers is not None else None)

    def vtg_loss(
        self, visual: torch.Tensor, prompts: list[tuple[list[int], list[int]]], answers: list[list[int]]
    ) -> torch.Tensor:
        """Video-grounded text generation: next-token loss on the answer tokens only."""
        batch = self.assemble(visual, prompts, answers)
        out = self.llm(
            inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
            position_ids=batch.position_ids, labels=batch.labels, use_cache=False,
        )
        return out.loss

    @torch.no_grad()
    def generate(
        self,
        visual: torch.Tensor,
        prompts: list[tuple[list[int], list[int]]],
        stop_id: int,
        max_new_tokens: int = 32,
    ) -> list[list[int]]:
        """Greedy decoding with a KV cache: the reference the exported bundle must match."""
        batch = self.assemble(visual, prompts, pad_left=True)
        mask, positions = batch.attention_mask, batch.position_ids
        out = self.llm(
            inputs_embeds=batch.inputs_embeds, attention_mask=mask, position_ids=positions,
            use_cache=True,
        )
        b = visual.shape[0]
        tokens: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=visual.device)
        next_pos = positions[:, -1:] + 1
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)  # (B,)
            for i in range(b):
                if not done[i]:
                    tokens[i].append(int(nxt[i]))
            done |= nxt == stop_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
            out = self.llm(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos,
                past_key_values=out.past_key_values, use_cache=True,
            )
            next_pos = next_pos + 1
        return [t[:-1] if t and t[-1] == stop_id else t for t in tokens]

    # --- checkpoints -------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, **meta) -> None:
        """config.json (the model config) + model.safetensors + checkpoint.json (what it is)."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.cfg.save(folder / "config.json")
        save_model(self, str(folder / "model.safetensors"))
        info = {"kind": "student" if self.student else "full", **meta}
        (folder / "checkpoint.json").write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path, student: bool | None = None) -> Exo2Ego:
        """Load a checkpoint written by :meth:`save_pretrained` (a full one can load as student)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        missing = [n for n in ("config.json", "model.safetensors", "checkpoint.json") if not (folder / n).is_file()]
        if missing:
            raise UserError(f"{folder}: not an exo2ego-edge checkpoint (missing {', '.join(missing)})")
        info = json.loads((folder / "checkpoint.json").read_text())
        saved_student = info.get("kind") == "student"
        if student is None:
            student = saved_student
        if saved_student and not student:
            raise UserError(f"{folder}: a student checkpoint has no exo encoder or G to train")
        model = cls(ModelConfig.from_checkpoint(folder), student=student)
        state = load_file(str(folder / "model.safetensors"))
        if student and not saved_student:
            state = {k: v for k, v in state.items() if not k.startswith(("exo_encoder.", "G."))}
        _load_tied(model, state)
        return model


def _load_tied(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load that tolerates the one key safetensors drops for tied embeddings."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied input/output embeddings are one tensor; safetensors stores it under one of its names.
    tied = {"llm.lm_head.weight", "llm.model.embed_tokens.weight"}
    if not model.cfg.llm.tie_word_embeddings or tied <= set(missing):
        tied = set()
    if unexpected or set(missing) - tied:
        raise UserError(
            f"checkpoint does not match its config: missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


class Student(NamedTuple):
    """A student checkpoint loaded for inference: its model, tokenizer and folder."""

    model: Exo2Ego  # in eval mode
    tokenizer: object  # exo2ego_edge.prompt.TextTokenizer
    folder: Path


def load_student(folder: str | Path) -> Student:
    """The student checkpoint (ego encoder, F, projector, merged LLM) and its tokenizer.json."""
    from exo2ego_edge.prompt import TextTokenizer, get_template

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such checkpoint folder")
    model = Exo2Ego.from_pretrained(folder, student=True).eval()
    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json", get_template(model.cfg.chat_template))
    if tokenizer.vocab_size > model.cfg.llm.vocab_size:
        raise UserError(
            f"{folder}: tokenizer has {tokenizer.vocab_size} tokens but the LLM only {model.cfg.llm.vocab_size}"
        )
    return Student(model, tokenizer, folder)
