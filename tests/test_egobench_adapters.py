"""EgoBench adapters on small fixtures written from each benchmark's published annotation schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exo2ego_edge.errors import UserError
from exo2ego_edge.eval import egobench as eg
from exo2ego_edge.eval.questions import read_suite, write_questions

FIXTURES = Path(__file__).parent / "fixtures" / "egobench"


@pytest.fixture(scope="module")
def suite():
    return eg.load_egobench(FIXTURES / "egobench.json")


def test_every_benchmark_maps_to_tasks(suite):
    assert set(suite) == {"egoschema", "qaego4d", "egotaskqa", "charades_ego", "ek100_mir", "egoplan", "vln_qa",
                          "egomcq_inter", "egomcq_intra"}
    assert {eg.category_of(t) for t in suite} == {"EgoSchema", "QAEgo4D", "EgoTaskQA", "Charades-Ego", "EK-100 MIR",
                                                  "EgoPlan", "VLN-QA", "EgoMCQ"}
    for qs in suite.values():
        for q in qs:
            assert not q.problems() and Path(q.video).parent.name in ("videos", "P01")


def test_egoschema_keeps_answered_questions_over_the_whole_video(suite):
    qs = suite["egoschema"]
    assert [q.answer for q in qs] == [1, 0]  # the third has no public answer
    assert qs[0].options[1] == "C is cooking a meal." and len(qs[0].options) == 5
    assert (qs[0].start, qs[0].end) == (None, None)
    assert qs[0].video.endswith("001934bb-81bd-4cd8-a574-0472ef3f6678.mp4")


def test_qaego4d_closed_is_choice_open_is_open(suite):
    closed, open_ = suite["qaego4d"]
    assert closed.kind == "choice" and closed.options[closed.answer] == "in the drawer" and len(closed.options) == 4
    assert open_.kind == "open" and open_.answer == "blue"


def test_egotaskqa_open_answers_and_reasoning_type(suite):
    q = suite["egotaskqa"][1]
    assert q.kind == "open" and q.answer == "no" and q.meta["reasoning_type"] == "counterfactual"


def test_charades_ego_multilabel_from_action_intervals(suite):
    first, second = suite["charades_ego"]
    assert first.kind == "multilabel" and first.prefix_options
    assert first.options == ["Holding some clothes", "Putting clothes somewhere", "Taking some clothes from somewhere",
                             "Throwing clothes somewhere"]
    assert first.labels == [1.0, 1.0, 0.0, 0.0] and second.labels == [0.0, 0.0, 0.0, 1.0]


def test_ek100_mir_relevance_is_mean_of_verb_and_noun_iou(suite):
    qs = suite["ek100_mir"]
    assert qs[0].options == ["The camera wearer take plate.", "The camera wearer put plate in sink.",
                             "The camera wearer take cup."]
    assert qs[0].labels == [1.0, 0.25, 0.5]  # same verb + noun; plate of {plate, sink}; same verb only
    assert qs[1].labels[1] == 1.0
    assert (qs[1].start, qs[1].end) == (pytest.approx(2.01), pytest.approx(3.36))
    assert qs[0].video.endswith("P01/P01_11.mp4")


def test_ek100_mir_prefers_the_published_relevancy_matrix(tmp_path):
    import pickle

    import numpy as np

    matrix = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 0.0], [0.3, 0.0, 1.0]])
    (tmp_path / "rel.pkl").write_bytes(pickle.dumps(matrix))
    qs = eg.read_ek100_mir(FIXTURES / "EPIC_100_retrieval_test.csv", FIXTURES / "EPIC_100_retrieval_test_sentence.csv",
                           tmp_path, relevancy=tmp_path / "rel.pkl")
    assert qs[0].labels == [1.0, 0.0, 0.3]


def test_egoplan_golden_letter_and_progress_window(suite):
    q = suite["egoplan"][0]
    assert q.options[q.answer] == "turn on tap" and len(q.options) == 4
    assert q.start == pytest.approx(1 / 30) and q.end == pytest.approx(306 / 30)


def test_vln_qa_letter_answers_and_open_answers(suite):
    choice, open_ = suite["vln_qa"]
    assert choice.options[choice.answer] == "Right." and (choice.start, choice.end) == (0.0, 6.0)
    assert open_.kind == "open"


def test_egomcq_is_text_to_clip_choice_split_by_type(suite):
    inter, intra = suite["egomcq_inter"][0], suite["egomcq_intra"][0]
    assert inter.kind == "clip_choice" and len(inter.candidates) == 5 and inter.answer == 1
    assert inter.options == ["The camera wearer picks a bag from the floor."]
    assert intra.options == ["The camera wearer drops the bag."]
    assert intra.candidates[intra.answer]["start"] == 20.0


def test_converted_suite_folder_round_trips(suite, tmp_path):
    for task, qs in suite.items():
        write_questions(tmp_path / f"{task}.jsonl", qs)
    back = eg.load_egobench(tmp_path, ["egomcq_intra"])
    assert [q.to_dict() for q in back["egomcq_intra"]] == [q.to_dict() for q in suite["egomcq_intra"]]
    assert set(read_suite(tmp_path)) == set(suite)


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"egoscheme": {}}))
    with pytest.raises(UserError, match="unknown benchmark 'egoscheme'"):
        eg.load_egobench(tmp_path / "cfg.json")
    shutil.copy(FIXTURES / "egomcq.json", tmp_path / "egoschema.json")
    with pytest.raises(UserError, match="missing field"):
        eg.read_egoschema(tmp_path / "egoschema.json", None, tmp_path)
    with pytest.raises(UserError, match="no task 'nope'"):
        eg.load_egobench(FIXTURES / "egobench.json", ["nope"])
