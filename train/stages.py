"""The four stages: what each trains, which loss terms it adds up, which rows it reads.

A stage is fully described by three things, which is all the one trainer needs to know:

- which parameter groups train (everything else is frozen),
- which loss terms it adds up,
- which data rows it reads (the selection knobs live in the stage's config dataclass).

| stage | data                                  | trains                                  | loss            |
|-------|---------------------------------------|-----------------------------------------|-----------------|
| init  | exo + ego clip text, ego instructions | one shared tower, projector, LLM        | VTG (+ tags)    |
| 1     | exo clip text                         | exo encoder, projector                  | VTG             |
| 2     | synchronized ego-exo pairs            | ego encoder, F, G (after migration)     | VTG + KL + cyc  |
| 3     | ego instructions                      | ego encoder, F, LoRA on the LLM         | VTG             |

``init`` stands in for the pretrained MLLM the paper starts from, which has *one* vision encoder:
it trains a single tower (the exo encoder) on both views and copies it into the ego encoder at the
end, so stage 2's migration (ego encoder := exo encoder) hands the learner a tower that has seen
ego frames. Two towers trained apart made that copy a stranger to ego video (measured on the tiny
preset: held-out verb accuracy 58% -> 16% right after migration, and stage 2 ended at chance).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from exo2ego_edge.errors import UserError
from exo2ego_edge.train.run_config import STAGE_ORDER, TrainConfig

log = logging.getLogger(__name__)

_STAGE_ALIASES = {"init": "init", "0": "init", "1": "stage1", "2": "stage2", "3": "stage3"}
_STAGE_ALIASES.update({s: s for s in STAGE_ORDER})

# Parameter groups: names of Exo2Ego sub-modules, plus "lora" for the adapters stage 3 adds.
GROUPS = ("ego_encoder", "exo_encoder", "F", "G", "projector", "llm", "lora")
ENCODERS = ("ego_encoder", "exo_encoder")  # the vision towers (a stage's encoder_lr_mult)


def parse_stages(spec: str | None, pretrained: bool) -> list[str]:
    """``init,1,2,3`` -> canonical names in run order. Default: init only without a pretrained MLLM."""
    if not spec:
        return list(STAGE_ORDER[1:] if pretrained else STAGE_ORDER)
    names = []
    for part in spec.split(","):
        part = part.strip().lower()
        if part not in _STAGE_ALIASES:
            raise UserError(f"--stages: unknown stage '{part}' (use init, 1, 2, 3)")
        names.append(_STAGE_ALIASES[part])
    return sorted(set(names), key=STAGE_ORDER.index)


# --- stage specs: what the trainer varies -----------------------------------------------------
@dataclass(frozen=True)
class DataRule:
    """Which rows of the train split a stage reads; each names the stage config field that holds
    the text sides it takes (``text_side`` of a row: exo / ego / none / all)."""

    clip_text: tuple[tuple[str, str], ...] = ()  # (view, field): caption that view's frames with the clip text
    pairs: str | None = None  # every clip row as an ego-exo pair; VTG on its text for the sides in this field
    instructions: str | None = None  # ego instruction rows of the sides in this field ...
    instructions_switch: str | None = None  # ... when this boolean field is on
    balance: str | None = None  # a boolean field: repeat the scarcer view's rows to match the other

    def kinds(self, sc) -> tuple[str, ...]:
        """The data files (clips / instructions) the rule reads under the stage config ``sc``."""
        reads_instructions = self.instructions and (self.instructions_switch is None or getattr(sc, self.instructions_switch))
        return (("clips",) if self.clip_text or self.pairs else ()) + (("instructions",) if reads_instructions else ())


@dataclass(frozen=True)
class StageSpec:
    name: str
    title: str
    trainable: tuple[str, ...]  # parameter groups (see GROUPS)
    losses: tuple[str, ...]  # "vtg", "kl", "cycle", "tags"
    data: DataRule
    weights: tuple[tuple[str, str], ...] = ()  # (loss, the stage config field weighing it); others weigh 1
    migrate: bool = False  # copy the exo encoder into the ego encoder before training
    shared_tower: bool = False  # ego frames also go through the exo encoder; copied to ego at the end
    lora: bool = False  # train the LLM through LoRA adapters, merged at the end

    def loss_weights(self, sc) -> dict[str, float]:
        fields = dict(self.weights)
        return {loss: float(getattr(sc, fields[loss])) if loss in fields else 1.0 for loss in self.losses}


SPECS: dict[str, StageSpec] = {
    "init": StageSpec("init", "from-scratch alignment", ("exo_encoder", "projector", "llm"), ("vtg", "tags"),
                      DataRule(clip_text=(("exo", "exo_text_sides"), ("ego", "ego_text_sides")),
                               instructions="ego_text_sides", instructions_switch="ego_instructions",
                               balance="balance_views"),
                      weights=(("tags", "tag_weight"),), shared_tower=True),
    "stage1": StageSpec("stage1", "demonstrator self-preparation", ("exo_encoder", "projector"), ("vtg",),
                        DataRule(clip_text=(("exo", "exo_text_sides"),))),
    "stage2": StageSpec("stage2", "demonstrator-learner guidance", ("ego_encoder", "F", "G"), ("vtg", "kl", "cycle"),
                        DataRule(pairs="vtg_text_sides"),
                        weights=(("vtg", "vtg_weight"), ("kl", "kl_weight"), ("cycle", "cycle_weight")), migrate=True),
    "stage3": StageSpec("stage3", "learner self-practice", ("ego_encoder", "F", "lora"), ("vtg",),
                        DataRule(instructions="text_sides"), lora=True),
}  # fmt: skip


def apply_trainable(model, spec: StageSpec, frozen: tuple[str, ...] = ()) -> None:
    """Freeze everything, then unfreeze the stage's groups but ``frozen`` (LoRA adapters: only
    ``lora_`` params)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for group in spec.trainable:
        if group in frozen:
            continue
        if group == "lora":
            for name, p in model.llm.named_parameters():
                if "lora_" in name:
                    p.requires_grad_(True)
        else:
            for p in getattr(model, group).parameters():
                p.requires_grad_(True)


def group_of(param_name: str) -> str:
    """The parameter group a ``model.named_parameters()`` name belongs to."""
    if "lora_" in param_name:
        return "lora"
    return param_name.split(".", 1)[0]


# --- data selection: which rows each stage reads ------------------------------------------------
def select_examples(stage: str, cfg: TrainConfig, sources, store) -> list:
    """The stage's training examples from the data sources (train split only), by its data rule.

    ``sources``: :class:`~exo2ego_edge.train.data.Source` list; ``store``: their frame caches.
    """
    from exo2ego_edge.train.data import Example

    split, question = cfg.data.train_split, cfg.model_config().caption_question
    rule, sc = SPECS[stage].data, cfg.stage(stage)
    kinds = rule.kinds(sc)
    out: list[Example] = []
    for src in sources:
        if src.kind not in kinds:
            continue
        for i, row in enumerate(src.rows):
            if row.get("split") != split:
                continue
            side = row.get("text_side", "all")
            if src.kind == "instructions":
                if side in getattr(sc, rule.instructions) and row.get("question") and row.get("answer"):
                    out.append(Example(src.name, ego=store.slot(src.name, "ego", i), vtg_view="ego",
                                       question=row["question"], answer=row["answer"]))
                continue
            text = (row.get("text") or "").strip()
            for view, sides in rule.clip_text:
                if text and side in getattr(sc, sides):
                    out.append(Example(src.name, vtg_view=view, question=question, answer=text,
                                       **{view: store.slot(src.name, view, i)}))
            if rule.pairs:
                vtg = bool(text) and side in getattr(sc, rule.pairs)
                out.append(Example(src.name, ego=store.slot(src.name, "ego", i), exo=store.slot(src.name, "exo", i),
                                   vtg_view="ego" if vtg else None, question=question if vtg else None,
                                   answer=text if vtg else None))
    if rule.balance and getattr(sc, rule.balance):
        out = balance_views(out)
    if not out:
        files = ", ".join(str(s.path) for s in sources)
        if rule.pairs:  # every clip row of the split, whatever its text
            raise UserError(f"{stage}: no clip rows of split '{split}' in {files} (data.clips, data.train_split)")
        present = sorted({r.get("text_side", "all") for src in sources if src.kind in kinds
                          for r in src.rows if r.get("split") == split})
        keys = [f"{stage}.{f.name}" for f in dataclasses.fields(sc) if f.name.endswith("text_sides")]
        raise UserError(f"{stage}: no training rows selected from {files} (split '{split}': its "
                        f"{' and '.join(kinds)} rows' text sides are {present or 'none'}; {stage} takes those in "
                        f"{', '.join(keys)})")
    return out


def checked_examples(stage: str, cfg: TrainConfig, sources, store, world: int) -> list:
    """The stage's examples, checked before any training (found only when the stage starts, a
    problem would waste the earlier stages): rows are selected, and enough for one batch on every
    process unless ``data.repeat_small_stages`` lets batches repeat examples
    (:class:`~exo2ego_edge.train.data.BatchStream`)."""
    examples, batch = select_examples(stage, cfg, sources, store), cfg.stage(stage).batch_size
    if len(examples) < world * batch:
        if not cfg.data.repeat_small_stages:
            raise UserError(f"{stage}: only {len(examples)} training examples for {stage}.batch_size={batch} on "
                            f"{world} process(es): lower {stage}.batch_size, add data, or set "
                            "data.repeat_small_stages=true")
        log.warning("%s: only %d training examples for %s.batch_size=%d on %d process(es): batches repeat "
                    "examples (data.repeat_small_stages)", stage, len(examples), stage, batch, world)
    return examples


def balance_views(examples: list) -> list:
    """``examples`` with the scarcer view's rows repeated (whole copies, then a prefix) until
    both views have as many rows as the larger one."""
    ego = [e for e in examples if e.vtg_view == "ego"]
    exo = [e for e in examples if e.vtg_view == "exo"]
    small, large = sorted((ego, exo), key=len)
    if not small:
        return examples
    repeats = -(-len(large) // len(small))
    return large + (small * repeats)[: len(large)]
