"""EgoSim-Bench: every answer re-derived from the take records independently; scoring by option
log-likelihood (torch and bundle) on a tiny overfit student; the metrics on hand-made rankings.

The world here is take records only (the simulator's planner + its record writer, no rendering):
the generators read records, never pixels, so the answer tests need no video.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exo2ego_edge.eval import egosim_bench as eb
from exo2ego_edge.data import simulator as sim
from exo2ego_edge.eval.questions import Question, read_suite
from exo2ego_edge.data.instructions import parse_description
from exo2ego_edge.eval.scoring import (
    average_precision, column_map, constant_answer_accuracy, ndcg, random_expectation,
)
from exo2ego_edge.data.clips import clip_window
from exo2ego_edge.prompt import TURN_QUESTION


# --- a world of records ---------------------------------------------------------------------------
def write_records(root: Path, takes: int = 10, seed: int = 3) -> Path:
    """take_records.jsonl of ``takes`` val takes, planned by the simulator, not rendered."""
    cfg = sim.SynthConfig(takes=takes, seed=seed, size=32, fps=8, val_frac=0.99)
    records = []
    for a in sim.assign_takes(cfg):
        rng = np.random.default_rng([seed, a.index])
        uid = sim._uid(rng)
        plan = sim.plan_take(rng, a.activity)
        exo = sim.exo_cameras(2, 32)
        seen = sim.TakeRender({i: True for i in range(len(plan.actions))}, int(np.ceil(plan.duration * 8)))
        ann = sim.annotation_entry(uid, plan, seen, exo, rng)
        a.split = "val"
        records.append(sim.take_record(uid, f"sim_{a.activity}_{a.index:05d}", a, plan, seen, exo, 8,
                                       ann["descriptions"]))
    (root / "simulator").mkdir(parents=True)
    (root / "simulator" / "take_records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_records(tmp_path_factory.mktemp("egosim_world"))


@pytest.fixture(scope="module")
def records(world) -> dict[str, dict]:
    rows = [json.loads(x) for x in (world / "simulator" / "take_records.jsonl").read_text().splitlines()]
    return {r["take_name"]: r for r in rows}


@pytest.fixture(scope="module")
def suite(world) -> dict[str, list[Question]]:
    return eb.generate_suite(world, seed=0)


def _name(rec: dict, oid: str) -> str:
    return "table" if oid == "table" else next(o["name"] for o in rec["objects"] if o["id"] == oid)


def _action(rec: dict, index: int) -> dict:
    return rec["actions"][index]


def _truth(q: Question) -> str:
    return q.options[q.answer]


# --- generation -----------------------------------------------------------------------------------
def test_every_task_has_questions_and_generation_is_deterministic(world, suite):
    assert set(suite) == set(eb.TASKS)
    for task, qs in suite.items():
        assert qs, task
        assert len({q.id for q in qs}) == len(qs), f"{task}: duplicate ids"
    again = eb.generate_suite(world, seed=0)
    assert {t: [q.to_dict() for q in qs] for t, qs in again.items()} == {t: [q.to_dict() for q in qs] for t, qs in suite.items()}
    other = eb.generate_suite(world, seed=1)
    assert any([q.answer for q in other[t]] != [q.answer for q in suite[t]] for t in suite)


def test_choice_options_are_distinct_and_answers_spread(suite):
    for task, qs in suite.items():
        for q in qs:
            assert len(set(q.options)) == len(q.options), (task, q.options)
        if qs[0].kind == "choice" and len(qs) >= 8:
            assert len({q.answer for q in qs}) > 1, f"{task}: the right answer is always in one slot"


def test_action_recognition_labels_are_the_record_verb(suite, records):
    for q in suite["action_recognition"]:
        verb = _action(records[q.meta["take"]], q.meta["action"])["verb"]  # "pick_up"
        assert q.prefix_options
        hot = [o for o, y in zip(q.options, q.labels) if y == 1.0]
        assert len(hot) == 1
        words = verb.split("_")
        assert hot[0].split()[2].startswith(words[0][:3]) and hot[0].endswith(words[-1] if len(words) > 1 else hot[0][-3:])


def test_normalise_verb_maps_both_spellings_to_one_class():
    assert eb.normalise_verb("pick_up") == eb.normalise_verb("pick up") == eb.normalise_verb("Pick-Up") == "pick up"
    assert eb.verb_ing("pick_up") == "picking up" and eb.verb_ing("put") == "putting"


def test_clip_text_answer_is_the_clip_description(suite, records):
    for task in ("clip_text_inter", "clip_text_intra"):
        for q in suite[task]:
            rec = records[q.meta["take"]]
            text = _action(rec, q.meta["action"])["text"]
            assert _truth(q) == text.replace("C ", "The camera wearer ", 1)
            own = {a["text"].replace("C ", "The camera wearer ", 1) for a in rec["actions"]}
            if task == "clip_text_intra":
                assert set(q.options) <= own
            assert len(q.options) == 5


def _locations(rec: dict) -> dict[str, tuple[str, str] | None]:
    """Where each object was last put, replaying the action list."""
    where: dict[str, tuple[str, str] | None] = {o["id"]: None for o in rec["objects"]}
    for a in rec["actions"]:
        if a["verb"] == "put":
            where[a["object"]] = (a["relation"], a["target"])
    return where


def test_episodic_memory_answer_is_where_the_object_was_last_put(suite, records):
    for q in suite["episodic_memory"]:
        rec = records[q.meta["take"]]
        relation, target = _locations(rec)[q.meta["object"]]
        assert _truth(q) == f"{relation.capitalize()} the {_name(rec, target)}."
        assert q.question == f"Where did I put the {_name(rec, q.meta['object'])}?"
        assert q.end == rec["duration_sec"]


def test_overall_goal_answer_is_the_take_goal_over_the_whole_take(suite, records):
    for q in suite["overall_goal"]:
        rec = records[q.meta["take"]]
        assert _truth(q).rstrip(".").lower() == rec["goal"].lower()
        assert (q.start, q.end) == (0.0, rec["duration_sec"]) and len(q.options) == 5


def _contents_replayed(rec: dict) -> list[tuple[dict, dict]]:
    """(before, after) contents of every container per action, from the start state and the verbs
    alone (not the record's contents_before/after fields)."""
    containers = [o["id"] for o in rec["objects"] if o["kind"] in ("bowl", "box")]
    inside = {c: {o["id"] for o in rec["objects"] if o["start"]["in"] == c} for c in containers}
    out = []
    for a in rec["actions"]:
        before = {c: set(v) for c, v in inside.items()}
        if a["verb"] == "pick_up":
            for v in inside.values():
                v.discard(a["object"])
        if a["verb"] == "put" and a["relation"] == "in":
            inside[a["target"]].add(a["object"])
        out.append((before, {c: set(v) for c, v in inside.items()}))
    return out


def test_task_state_answer_matches_replayed_contents(suite, records):
    for q in suite["task_state"]:
        rec = records[q.meta["take"]]
        before, after = _contents_replayed(rec)[q.meta["action"]]
        state = (before if q.meta["when"] == "before" else after)[q.meta["container"]]
        truth = _truth(q)
        if not state:
            assert truth == "Nothing."
        else:
            named = {_name(rec, o) for o in state}
            assert all(n in truth for n in named) and truth.count(" the ") + 1 == len(named) or truth.startswith("The ")
            mentioned = {o["name"] for o in rec["objects"] if o["name"] in truth}
            assert mentioned == named, (truth, named)


def test_next_step_answer_is_the_next_non_turn_action(suite, records):
    for q in suite["next_step"]:
        rec = records[q.meta["take"]]
        k = q.meta["action"]
        nxt = next(a for a in rec["actions"][k + 1:] if a["verb"] != "turn")
        parsed = parse_description(nxt["text"])  # the description text, parsed independently
        expected = f"{parsed.verb} {parsed.object_phrase}" + (f" {parsed.place_phrase}" if parsed.place_phrase else "")
        assert _truth(q).rstrip(".").lower() == expected.replace("the ", "the ", 1).lower()
        assert rec["goal"] in q.question


def test_navigation_answer_is_the_turn_direction_asked_as_training_asks(suite, records):
    for q in suite["navigation"]:
        turn = _action(records[q.meta["take"]], q.meta["action"])
        assert turn["verb"] == "turn" and _truth(q) == turn["direction"].capitalize() + "."
        assert q.question == TURN_QUESTION
        assert (q.start, q.end) == clip_window(turn["timestamp"], eb.CLIP_LEN, records[q.meta["take"]]["duration_sec"])
    answers = [_truth(q) for q in suite["navigation"]]
    assert answers.count("Left.") == answers.count("Right.") > 0
    assert constant_answer_accuracy(suite["navigation"]) == 50.0  # chance: no fixed answer wins


@pytest.mark.parametrize("task, default", [("task_state", "Nothing."), ("episodic_memory", "On the table.")])
def test_the_answer_a_blind_model_would_learn_is_always_offered_and_rarely_right(suite, task, default):
    qs = suite[task]
    assert all(default in q.options for q in qs)
    assert sum(_truth(q) == default for q in qs) <= len(qs) / 4


def test_constant_answer_accuracy_finds_an_unbalanced_answer():
    def q(answer: int, options=("Left.", "Right.")) -> Question:
        return Question(id=f"q{answer}", task="t", kind="choice", video="v.mp4", start=0.0, end=1.0,
                        question="?", options=list(options), answer=answer)

    assert constant_answer_accuracy([q(0), q(0), q(0), q(1)]) == 75.0  # always "Left."
    assert constant_answer_accuracy([q(0), q(1)]) == 50.0
    assert constant_answer_accuracy([q(0, ("A", "B", "C", "D")), q(1, ("E", "F", "G", "H"))]) == 62.5


def test_text_to_clip_relevance(suite, records):
    qs = suite["text_to_clip"]
    texts = qs[0].options
    assert all(q.options == texts for q in qs)
    for q in qs:
        own = _action(records[q.meta["take"]], q.meta["action"])["text"].replace("C ", "The camera wearer ", 1)
        assert q.labels[texts.index(own)] == 1.0
        assert set(q.labels) <= {0.0, 0.5, 1.0}


def test_write_and_read_suite_round_trip(world, tmp_path):
    counts = eb.write_suite(world, tmp_path / "suite", seed=0)
    back = read_suite(tmp_path / "suite")
    assert {t: len(q) for t, q in back.items()} == counts
    assert json.loads((tmp_path / "suite" / "suite.json").read_text())["seed"] == 0


# --- metrics --------------------------------------------------------------------------------------
def test_average_precision_and_ndcg_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert average_precision(scores, np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    rel = np.array([0.5, 1.0, 0.0, 0.0])
    dcg = 0.5 / math.log2(2) + 1.0 / math.log2(3)
    idcg = 1.0 / math.log2(2) + 0.5 / math.log2(3)
    assert ndcg(scores, rel) == pytest.approx(dcg / idcg)
    labels = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
    assert column_map(labels.copy(), labels) == 1.0
    assert random_expectation(column_map, labels, trials=200) == pytest.approx(0.52, abs=0.08)  # ~ 2/8 prevalence, small n


# --- scoring with models --------------------------------------------------------------------------
FORCED = 2  # clips the student is overfit on, each with its own caption


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A tiny student overfit so clip i answers CAPTIONS[i]: the scorer must pick it per clip."""
    from helpers.students import make_tiny_student

    return make_tiny_student(tmp_path_factory.mktemp("student") / "ckpt", captions=FORCED)


def _forced_questions():
    from helpers.students import CAPTIONS, QUESTION

    return QUESTION, list(CAPTIONS)


@pytest.mark.isa
def test_torch_scorer_picks_the_answer_the_model_was_overfit_on(student):
    from helpers.students import clip_frames_for
    from exo2ego_edge.eval.scoring import TorchScorer

    scorer = TorchScorer.from_checkpoint(student)
    question, options = _forced_questions()
    for i in range(FORCED):
        clip = scorer.encode(clip_frames_for(i, scorer.num_frames, scorer.image_size))
        scores = scorer.option_scores(clip, question, options)
        assert int(np.argmax([s.value("mean") for s in scores])) == i
        assert all(s.tokens == len(scorer.tok.encode(o)) + 1 for s, o in zip(scores, options))  # + stop
        prefix = scorer.option_scores(clip, question, options, prefix_options=True)
        assert all(p.tokens == s.tokens - 1 for p, s in zip(prefix, scores))


@pytest.mark.isa
def test_bundle_scorer_matches_torch_scorer(student, tmp_path):
    from helpers.students import clip_frames_for
    from exo2ego_edge.export.pipeline import export_bundle
    from exo2ego_edge.eval.scoring import BundleScorer, TorchScorer

    bundle = export_bundle(student, tmp_path / "fp32", "fp32", parity_samples=1).out
    torch_s, bundle_s = TorchScorer.from_checkpoint(student), BundleScorer.from_bundle(bundle, threads=1)
    stepped = BundleScorer.from_bundle(bundle, threads=1)
    stepped.dec = _LastRowOnly(stepped.dec)  # as TensorRT engines: no multi-position logits
    question, options = _forced_questions()
    for i in range(2):
        frames = clip_frames_for(i, torch_s.num_frames, torch_s.image_size)
        a = torch_s.option_scores(torch_s.encode(frames), question, options)
        for scorer in (bundle_s, stepped):
            b = scorer.option_scores(scorer.encode(frames), question, options)
            assert [s.tokens for s in a] == [s.tokens for s in b]
            np.testing.assert_allclose([s.logprob for s in a], [s.logprob for s in b], rtol=1e-3, atol=1e-3)
        assert torch_s.answer(torch_s.encode(frames), question) == bundle_s.answer(bundle_s.encode(frames), question)


class _LastRowOnly:
    """A decoder with the TensorRT backend's interface: extend / start / step, no ``logits``."""

    def __init__(self, decoder):
        self.extend, self.start, self.step = decoder.extend, decoder.start, decoder.step


@pytest.mark.isa
def test_score_task_end_to_end_on_a_video(student, tmp_path):
    """A choice task on a real mp4: decode once, score, accuracy and chance reported."""
    from helpers.videos import write_test_mp4

    from exo2ego_edge.eval.scoring import TorchScorer, score_task

    video = str(write_test_mp4(tmp_path / "ego.mp4", frames=20, size=(48, 48), fps=10))
    question, options = _forced_questions()
    qs = [Question(id=f"q{i}", task="t", kind="choice", video=video, start=0.0, end=1.5, question=question,
                   options=options, answer=i % 4) for i in range(4)]
    result = score_task(TorchScorer.from_checkpoint(student), "t", qs)
    assert result.n == 4 and result.chance == pytest.approx(25.0) and result.metric == "accuracy"
    assert result.score == pytest.approx(25.0)  # one clip, four different answers: exactly one is right


@pytest.mark.isa
def test_cli_eval_on_a_suite_folder(student, tmp_path):
    from helpers.videos import write_test_mp4

    from exo2ego_edge.cli import cli
    from exo2ego_edge.eval.questions import write_questions

    video = str(write_test_mp4(tmp_path / "ego.mp4", frames=20, size=(48, 48), fps=10))
    question, options = _forced_questions()
    write_questions(tmp_path / "suite" / "navigation.jsonl", [
        Question(id="n0", task="navigation", kind="choice", video=video, start=0.0, end=1.0, question=question,
                 options=options[:2], answer=0)])
    out = tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["eval", "--checkpoint", str(student), "--suite", "egosim", "--data",
                                   str(tmp_path / "suite"), "--json", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["tasks"][0]["task"] == "navigation" and data["tasks"][0]["chance"] == 50.0
    bad = CliRunner().invoke(cli, ["eval", "--suite", "egosim", "--data", str(tmp_path / "suite")])
    assert bad.exit_code != 0


def _pattern_video(path: Path, index: int, size: int) -> str:
    """An mp4 whose every frame is the overfit clip ``index``'s pattern."""
    import av

    from helpers.students import clip_frames_for

    frame = clip_frames_for(index, 1, size)[0]
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for _ in range(10):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return str(path)


def test_clip_choice_picks_the_clip_the_text_belongs_to(student, tmp_path):
    """EgoMCQ's direction (text -> one of several clips) through the same option scoring."""
    from exo2ego_edge.eval.scoring import TorchScorer, score_task

    scorer = TorchScorer.from_checkpoint(student)
    question, options = _forced_questions()
    videos = [_pattern_video(tmp_path / f"p{i}.mp4", i, scorer.image_size) for i in range(FORCED)]
    cands = [{"video": v, "start": 0.0, "end": 0.9} for v in videos]
    qs = [Question(id=f"m{i}", task="egomcq_inter", kind="clip_choice", video=videos[0], start=0.0, end=0.9,
                   question=question, options=[options[i]], answer=i, candidates=cands) for i in range(FORCED)]
    result = score_task(scorer, "egomcq_inter", qs)
    assert result.score == 100.0 and result.chance == 50.0


def test_a_task_with_private_answers_is_refused_not_miscounted():
    from exo2ego_edge.errors import UserError
    from exo2ego_edge.eval.scoring import score_task

    q = Question(id="q0", task="overall_goal", kind="choice", video="v.mp4", start=None, end=None,
                 question="Why?", options=["a", "b"], answer=None)
    with pytest.raises(UserError, match="1 of 1 questions have no public answer"):
        score_task(None, "overall_goal", [q])
