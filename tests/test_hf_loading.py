"""Tiny random Hugging Face checkpoints loaded through --vision-tower / --llm, like real ones."""

import json

import pytest
import torch
from safetensors.torch import load_file

from exo2ego_edge.prompt import get_template, train_bpe
from exo2ego_edge.model import load_student
from exo2ego_edge.train.evaluation import answer_questions
from exo2ego_edge.train.trainer import run_training
from helpers.datasets import make_dataset, quick_overrides, save_tiny_vision_tower


def _llm(kind: str, folder, clips_dir):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    texts = [json.loads(line).get("text", "") for line in (clips_dir / "train.jsonl").read_text().splitlines()]
    tok = train_bpe(texts + ["What am I doing?", "I am picking up the red cup."], 300, get_template("chatml"))
    dims = dict(vocab_size=tok.vocab_size + 8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(2)
    model = Qwen2ForCausalLM(Qwen2Config(**dims)) if kind == "qwen2" else LlamaForCausalLM(LlamaConfig(**dims))
    model.save_pretrained(folder)
    tok.save(folder / "tokenizer.json")  # the LLM folder's own tokenizer, as in a real checkpoint
    return model


@pytest.mark.parametrize("vision_kind,llm_kind", [("siglip", "qwen2"), ("clip", "llama")])
def test_train_from_hf_folders(tmp_path, vision_kind, llm_kind):
    clips = make_dataset(tmp_path / "data")
    vt, lm = tmp_path / "vision", tmp_path / "llm"
    save_tiny_vision_tower(vision_kind, vt)
    hf_llm = _llm(llm_kind, lm, tmp_path / "data")
    out = tmp_path / "run"
    student = run_training("egosim-tiny-quick", overrides=quick_overrides(clips, out), vision_tower=vt, llm=lm)

    # With --llm the default schedule skips the from-scratch init stage.
    assert not (out / "init").exists() and (out / "stage1" / "final").is_dir()
    stage1 = load_file(out / "stage1" / "final" / "model.safetensors")
    # SigLIP's attention-pooling head is dropped on load (the encoder pools patches itself).
    hf_vision = {k: v for k, v in load_file(vt / "model.safetensors").items() if ".head." not in k}
    hf_lm = load_file(lm / "model.safetensors")
    # Stage 1 freezes the LLM and the ego encoder: they must still be the Hugging Face weights.
    for k, v in hf_lm.items():
        assert torch.equal(stage1[f"llm.{k}"], v), k
    for k, v in hf_vision.items():
        assert torch.equal(stage1[f"ego_encoder.tower.{k}"], v), k
    # ... and the exo encoder, which trains in stage 1, has moved away from them.
    assert any(not torch.equal(stage1[f"exo_encoder.tower.{k}"], v) for k, v in hf_vision.items())

    loaded = load_student(student)
    model, tok = loaded.model, loaded.tokenizer
    assert model.student and not hasattr(model, "exo_encoder")
    assert model.cfg.vision.family == vision_kind and model.cfg.llm.family == llm_kind
    assert model.cfg.llm.vocab_size == hf_llm.config.vocab_size
    assert tok.vocab_size == hf_llm.config.vocab_size - 8  # the folder's tokenizer.json, not a new one
    assert type(model.llm).__name__ == type(hf_llm).__name__  # LoRA merged away: a plain HF LM
    frames = torch.randint(0, 256, (2, model.cfg.num_frames, 32, 32, 3), dtype=torch.uint8)
    answers = answer_questions(model, tok, frames, ["What am I doing?"] * 2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
