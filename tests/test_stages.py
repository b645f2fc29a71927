"""Each stage trains exactly its parameter groups; migration copies; LoRA merge is lossless."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from exo2ego_edge.model import Exo2Ego
from exo2ego_edge.errors import UserError
from exo2ego_edge.prompt import get_template, train_bpe
from exo2ego_edge.train.caption_tags import token_idf
from exo2ego_edge.train.data import Collator, Example, FrameStore
from exo2ego_edge.train.lora import add_lora, merge_lora
from exo2ego_edge.train.run_config import load_config
from exo2ego_edge.train.stages import ENCODERS, GROUPS, SPECS, apply_trainable, group_of
from exo2ego_edge.train.trainer import StageLoss

TEXTS = ["The camera wearer picks up the red cup.", "I am pushing the blue bowl.", "What am I doing?"]


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("egosim-tiny-quick")
    mc = cfg.model_config()
    tok = train_bpe(TEXTS, 300, get_template(mc.chat_template), mc.system_prompt)
    mc.llm.vocab_size = tok.vocab_size
    rng = np.random.default_rng(0)
    shape = (6, mc.num_frames, mc.vision.image_size, mc.vision.image_size, 3)
    store = FrameStore()
    for view in ("ego", "exo"):
        store.add("s", view, rng.integers(0, 256, shape, dtype=np.uint8), np.arange(6))
    return cfg, mc, tok, Collator(store, tok, mc.system_prompt)


def _examples(stage: str) -> list[Example]:
    q, a = "What am I doing?", "I am pushing the blue bowl."
    if stage == "init":  # a mixed batch: exo captions and ego captions / instructions
        return [Example("s", exo=0, vtg_view="exo", question=q, answer="The camera wearer picks up the red cup."),
                Example("s", ego=1, vtg_view="ego", question=q, answer=a),
                Example("s", ego=2, vtg_view="ego", question=q, answer="I am picking up the red cup.")]
    if stage == "stage1":
        return [Example("s", exo=i, vtg_view="exo", question=q, answer=a) for i in range(3)]
    if stage == "stage2":  # pairs, only some with text
        return [Example("s", ego=0, exo=0, vtg_view="ego", question=q, answer=a),
                Example("s", ego=1, exo=1), Example("s", ego=2, exo=2)]
    return [Example("s", ego=i, vtg_view="ego", question=q, answer=a) for i in range(3)]


def _model(mc) -> Exo2Ego:
    torch.manual_seed(0)
    model = Exo2Ego(mc)
    # The mapping nets start as the identity (zero output layers): nudge them so gradients
    # reach every layer and "receives a gradient" is a meaningful check.
    with torch.no_grad():
        for p in list(model.F.parameters()) + list(model.G.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    return model


EXPECTED = {
    "init": {"exo_encoder", "projector", "llm"},  # one shared tower: ego frames go through it too
    "stage1": {"exo_encoder", "projector"},
    "stage2": {"ego_encoder", "F", "G"},
    "stage3": {"ego_encoder", "F", "lora"},
}


@pytest.mark.parametrize("frozen", [(), ENCODERS], ids=["all", "encoders_frozen"])
@pytest.mark.parametrize("stage", list(SPECS))
def test_only_the_stage_groups_receive_gradients(setup, stage, frozen):
    """Each stage's groups and no others; with encoder_lr_mult=0 (``frozen``) minus the towers."""
    cfg, mc, tok, collate = setup
    expected = EXPECTED[stage] - set(frozen)
    model, spec = _model(mc), SPECS[stage]
    if spec.migrate:
        model.migrate_exo_to_ego()
    if spec.lora:
        add_lora(model)
        with torch.no_grad():  # LoRA B starts at zero: make A's gradient non-zero too
            for n, p in model.llm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    apply_trainable(model, spec, frozen)
    examples = _examples(stage)
    idf = None
    if "tags" in spec.losses:  # init's caption-token head, on the loss module (not the model)
        idf = token_idf([collate.answer_ids(e.answer) for e in examples], mc.llm.vocab_size)
    loss_module = StageLoss(model, spec, dataclasses.replace(cfg.stage(stage), tag_weight=1.0) if idf is not None
                            else cfg.stage(stage), idf)
    losses = loss_module(collate(examples))
    assert set(losses) == {"loss", *spec.losses}
    losses["loss"].backward()
    if idf is not None:
        assert loss_module.tags.proj.weight.grad.abs().sum() > 0

    got: dict[str, bool] = {}
    for name, p in model.named_parameters():
        g = group_of(name)
        nonzero = p.grad is not None and bool(p.grad.abs().sum() > 0)
        if g not in expected:
            assert p.grad is None, f"{stage}: frozen {name} received a gradient"
            assert not p.requires_grad
        got[g] = got.get(g, False) or nonzero
    assert {g for g, ok in got.items() if ok} == expected
    assert set(got) <= set(GROUPS)
    if stage == "stage3":  # the base LLM weights stay frozen under LoRA
        assert all(not p.requires_grad for n, p in model.llm.named_parameters() if "lora_" not in n)


def test_ego_equals_exo_right_after_migration(setup):
    _, mc, _, collate = setup
    model = _model(mc)
    frames = collate([Example("s", ego=0, exo=0)]).ego_frames
    assert not torch.allclose(model.ego_features(frames), model.exo_features(frames))
    model.migrate_exo_to_ego()
    ego, exo = model.ego_encoder.state_dict(), model.exo_encoder.state_dict()
    assert ego.keys() == exo.keys()
    assert all(torch.equal(ego[k], exo[k]) for k in ego)
    torch.testing.assert_close(model.ego_features(frames), model.exo_features(frames), rtol=0, atol=0)
    # a copy, not shared storage: training the learner must not move the demonstrator
    next(model.ego_encoder.parameters()).data.add_(1.0)
    assert not torch.equal(next(model.ego_encoder.parameters()), next(model.exo_encoder.parameters()))


def test_lora_merge_leaves_outputs_unchanged(setup):
    _, mc, tok, collate = setup
    model = _model(mc).eval()
    add_lora(model)
    with torch.no_grad():
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    batch = collate(_examples("stage3"))
    with torch.no_grad():
        visual = model.ego_visual_tokens(model.ego_features(batch.ego_frames))
        before = model.vtg_loss(visual, batch.prompts, batch.answers)
        ids_before = model.generate(visual, batch.prompts, tok.stop_id, max_new_tokens=5)
        merge_lora(model)
        after = model.vtg_loss(visual, batch.prompts, batch.answers)
        ids_after = model.generate(visual, batch.prompts, tok.stop_id, max_new_tokens=5)
    assert not any("lora" in n for n, _ in model.llm.named_parameters())
    assert type(model.llm).__name__.endswith("ForCausalLM")
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert ids_after == ids_before


def test_frame_store_augmentation_is_seeded_and_eval_sees_the_centre():
    rng = np.random.default_rng(1)
    pool, t, n = 3, 2, 5
    frames = rng.integers(0, 256, (n, t * pool, 8, 8, 3), dtype=np.uint8)
    store = FrameStore()
    store.add("s", "ego", frames, np.arange(n), pool)
    centre = store.get("s", "ego", [3, 1]).numpy()
    assert np.array_equal(centre, frames[[3, 1]][:, [1, 4]])  # frame pool*i + pool//2
    a = store.get("s", "ego", [3, 1, 4], np.random.default_rng([0, 7]), shift=2).numpy()
    b = store.get("s", "ego", [3, 1, 4], np.random.default_rng([0, 7]), shift=2).numpy()
    assert a.shape == (3, t, 8, 8, 3) and np.array_equal(a, b)
    jit = store.get("s", "ego", [0] * 64, np.random.default_rng(2)).numpy()  # jitter only: whole frames
    for i in range(t):
        group = [frames[0, pool * i + j] for j in range(pool)]
        assert all(any(np.array_equal(f, g) for g in group) for f in jit[:, i])
    assert len({jit[k].tobytes() for k in range(64)}) > 1


def test_frame_cache_centre_frames_are_the_runtimes_pixels(tmp_path):
    import json

    from helpers.datasets import make_dataset

    from exo2ego_edge.runtime.video import decode_clip
    from exo2ego_edge.train.data import read_jsonl
    from exo2ego_edge.data.video_cache import load_or_build

    train, _ = make_dataset(tmp_path / "d", videos=1, clips_per_video=3)
    rows = read_jsonl(train, ("ego_video", "start", "end"))
    frames, slots = load_or_build(Path(train), rows, "ego", 2, 32, tmp_path / "cache", pool=3)
    store = FrameStore()
    store.add("s", "ego", frames, slots, 3)
    for i, row in enumerate(rows):
        want = decode_clip(row["ego_video"], row["start"], row["end"], 2, 32)
        assert np.array_equal(store.get("s", "ego", [store.slot("s", "ego", i)])[0].numpy(), want), json.dumps(row)


def test_balance_views_repeats_the_scarcer_view_to_the_larger_count():
    from exo2ego_edge.train.stages import balance_views

    exo = [Example("s", exo=i, vtg_view="exo", question="q", answer="a") for i in range(7)]
    ego = [Example("s", ego=i, vtg_view="ego", question="q", answer="a") for i in range(3)]
    out = balance_views(exo + ego)
    assert sum(e.vtg_view == "exo" for e in out) == sum(e.vtg_view == "ego" for e in out) == 7
    assert [e.ego for e in out if e.vtg_view == "ego"] == [0, 1, 2, 0, 1, 2, 0]  # whole copies first
    assert balance_views(exo) == exo  # one view only: nothing to balance


def test_overrides_read_exponent_floats_and_refuse_words():
    # YAML 1.1 reads 5e-4 (no dot) as a string: a float key still takes it as a number
    assert load_config("egosim-tiny-quick", ["stage3.lr=5e-4"]).stage3.lr == 5e-4
    with pytest.raises(UserError, match="stage3.lr"):
        load_config("egosim-tiny-quick", ["stage3.lr=fast"])


def test_the_demo_config_is_the_full_schedule_with_fewer_steps():
    """egosim-tiny-demo.yaml names egosim-tiny as its base and gives only what differs."""
    full, demo = load_config("egosim-tiny").to_dict(), load_config("egosim-tiny-demo").to_dict()
    differs = {(section, key) for section, values in full.items() if isinstance(values, dict)
               for key, value in values.items() if demo[section][key] != value}
    assert differs == {("run", "output_dir"), ("run", "checkpoint_every"), ("init", "steps"), ("stage1", "steps"),
                       ("stage2", "steps"), ("stage3", "steps")}
    assert demo["stage3"]["lr"] == full["stage3"]["lr"] and demo["model"] == full["model"]


def test_a_config_whose_base_comes_back_to_itself_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a\nrun: {seed: 1}\n")
    with pytest.raises(UserError, match="'base' comes back to itself"):
        load_config(tmp_path / "a.yaml")


def test_each_stage_weighs_its_losses_with_its_own_config_fields():
    cfg = load_config("egosim-tiny-quick", ["stage2.kl_weight=0.25", "init.tag_weight=0"])
    assert SPECS["stage2"].loss_weights(cfg.stage2) == {"vtg": 1.0, "kl": 0.25, "cycle": 1.0}
    assert SPECS["init"].loss_weights(cfg.init) == {"vtg": 1.0, "tags": 0.0}
    assert SPECS["stage3"].loss_weights(cfg.stage3) == {"vtg": 1.0}
    for spec in SPECS.values():  # every field a rule or a weight names exists in the stage's section
        section = cfg.stage(spec.name)
        rule = spec.data
        named = [f for _, f in rule.clip_text] + [rule.pairs, rule.instructions, rule.instructions_switch, rule.balance]
        named += [f for _, f in spec.weights]
        assert all(hasattr(section, f) for f in named if f), spec.name


def test_batches_keep_their_size_when_a_stage_has_fewer_examples_than_a_batch():
    from exo2ego_edge.train.data import BatchStream

    small = BatchStream(n=3, batch_size=8, seed=0)
    batches = [small.next_indices() for _ in range(4)]
    assert all(len(b) == 8 and set(b) == {0, 1, 2} for b in batches)
    # with enough examples an epoch is one permutation, as before
    plain = BatchStream(n=32, batch_size=8, seed=0)
    order = np.random.default_rng([0, 0]).permutation(32)
    assert sum((plain.next_indices() for _ in range(4)), []) == order.tolist()
