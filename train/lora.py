"""LoRA on the LLM for stage 3: adapters on every attention and MLP projection, merged at the end."""

from __future__ import annotations

# Every linear layer of the attention and MLP blocks of Qwen2 / Llama / Mistral.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(model) -> None:
    """Wrap the LLM with LoRA adapters (r / alpha from the model config) on attention + MLP."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=model.cfg.lora_r, lora_alpha=model.cfg.lora_alpha, lora_dropout=0.0,
        target_modules=list(LORA_TARGETS), bias="none",
    )
    model.llm = get_peft_model(model.llm, cfg)


def merge_lora(model) -> None:
    """Fold the adapters into the base weights so the student LLM is a plain causal LM."""
    if hasattr(model.llm, "merge_and_unload"):
        model.llm = model.llm.merge_and_unload()
