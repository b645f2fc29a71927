"""EgoBench adapters on small synthetic fixtures in each benchmark's real format (the real published
files are read in test_egobench_real_files.py)."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exo2ego_edge.errors import UserError
from exo2ego_edge.eval import egobench as eg
from exo2ego_edge.eval.questions import Question, read_suite, write_questions
from exo2ego_edge.prompt import CAPTION_QUESTION

FIXTURES = Path(__file__).parent / "fixtures" / "egobench"
VIDEOS = FIXTURES / "videos"  # absent on purpose: every reader must say so


@pytest.fixture(scope="module")
def readings() -> dict[str, eg.Reading]:
    return {r.benchmark: r for r in eg.read_egobench(FIXTURES / "egobench.json")}


@pytest.fixture(scope="module")
def suite():
    return eg.load_egobench(FIXTURES / "egobench.json")


def test_every_benchmark_maps_to_tasks(readings, suite):
    assert set(suite) == {"egoschema", "qaego4d", "egotaskqa", "charades_ego", "ek100_mir", "egoplan", "vln_qa",
                          "egomcq_inter", "egomcq_intra"}
    assert {eg.category_of(t) for t in suite} == {"EgoSchema", "QAEgo4D", "EgoTaskQA", "Charades-Ego", "EK-100 MIR",
                                                  "EgoPlan", "VLN-QA", "EgoMCQ"}
    for r in readings.values():
        for q in r.questions:
            assert not q.problems() and Path(q.video).is_relative_to(VIDEOS)


def test_every_reader_counts_the_videos_it_names_once(caplog):
    with caplog.at_level(logging.WARNING, logger="exo2ego_edge.eval.egobench"):
        readings = eg.read_egobench(FIXTURES / "egobench.json")
    for r in readings:
        assert r.found == 0 and r.videos == len({q.video for q in r.questions} |
                                                {c["video"] for q in r.questions for c in q.candidates or []})
        assert sum("videos not found (video folder" in n for n in r.notes) == 1, r.notes
        assert r.summary() == (f"{r.benchmark}: {len(r.questions)} read, {len(r.scorable)} scorable, "
                               f"0 of {r.videos} videos found")
    assert len(caplog.records) == sum(len(r.notes) for r in readings)  # each note said once


def test_egoschema_reads_every_question_and_scores_the_answered(readings, suite):
    r = readings["egoschema"]
    assert len(r.questions) == 3 and [q.answer for q in r.questions] == [1, 0, None]
    assert [q.id for q in suite["egoschema"]] == [q.id for q in r.questions[:2]]
    assert any(n.startswith("1 of 3 questions not scored here") and "{q_uid: option}" in n for n in r.notes)
    q = r.questions[0]
    assert q.options[1] == "C is cooking a meal." and len(q.options) == 5 and (q.start, q.end) == (None, None)
    assert q.video == str(VIDEOS / "001934bb-81bd-4cd8-a574-0472ef3f6678.mp4")
    alone = eg.read_egoschema(FIXTURES / "egoschema_questions.json", VIDEOS)  # answers default to None
    assert len(alone.questions) == 3 and not alone.scorable and any("no answers file given" in n for n in alone.notes)


def test_qaego4d_closed_choices_are_shuffled_with_a_fixed_seed(readings):
    qs = readings["qaego4d"].questions
    assert [q.options[q.answer] for q in qs] == ["in the drawer", "blue"] and all(len(q.options) == 4 for q in qs)
    assert [q.answer for q in qs] != [0, 0]  # the right answer is not always option 0
    again = eg.read_qaego4d(FIXTURES / "qaego4d_annotations.json", VIDEOS, limit=1).questions
    assert again[0].options == qs[0].options  # per question: `limit` does not change the order
    other = eg.read_qaego4d(FIXTURES / "qaego4d_annotations.json", VIDEOS, seed=1).questions
    assert [q.options[q.answer] for q in other] == ["in the drawer", "blue"]


def test_qaego4d_open_file_and_mixed_rows(tmp_path):
    rows = json.loads((FIXTURES / "qaego4d_annotations.json").read_text())
    open_rows = [{k: v for k, v in row.items() if k != "wrong_answers"} for row in rows]
    (tmp_path / "open.json").write_text(json.dumps(open_rows))
    qs = eg.read_qaego4d(tmp_path / "open.json", VIDEOS).questions
    assert [(q.kind, q.answer) for q in qs] == [("open", "in the drawer"), ("open", "blue")]
    (tmp_path / "mixed.json").write_text(json.dumps([rows[0], open_rows[1]]))
    with pytest.raises(UserError, match="item 1: mixes closed"):
        eg.read_qaego4d(tmp_path / "mixed.json", VIDEOS)


def test_egotaskqa_official_interval_is_frames_of_a_lemma_view(readings):
    first, second = readings["egotaskqa"].questions
    assert first.video == str(VIDEOS / "12-3-4-1" / "fpv1.mp4") and second.video.endswith("12-3-4-1/fpv2.mp4")
    assert (first.start, first.end) == (0.0, 10.0) and (second.start, second.end) == (4.0, 20.0)  # 24 fps
    assert second.kind == "open" and second.answer == "no"
    assert second.meta == {"type": ["counterfactual"], "category": ["state", "object"],
                           "reasoning_type": "counterfactual$state$object$state$verify$indirect"}


def test_egotaskqa_refuses_an_interval_in_another_format(tmp_path):
    (tmp_path / "qa.json").write_text(json.dumps([{"interval": "P01_02|12_18", "question": "q?", "answer": "a"}]))
    with pytest.raises(UserError, match=r"item 0: interval 'P01_02\|12_18' is not '<video>\|<fpvN>\|<start>\|<end>'"):
        eg.read_egotaskqa(tmp_path / "qa.json", VIDEOS)


def test_charades_ego_multilabel_from_action_intervals(readings, tmp_path):
    first, second = readings["charades_ego"].questions
    assert first.kind == "multilabel" and first.prefix_options
    assert first.options == ["Holding some clothes", "Putting clothes somewhere", "Taking some clothes from somewhere",
                             "Throwing clothes somewhere"]
    assert first.labels == [1.0, 1.0, 0.0, 0.0] and second.labels == [0.0, 0.0, 0.0, 1.0]
    text = (FIXTURES / "CharadesEgo_v1_test_only1st.csv").read_text().replace("c003 1.20 3.30", "c999 1.20 3.30")
    (tmp_path / "c.csv").write_text(text)
    r = eg.read_charades_ego(tmp_path / "c.csv", FIXTURES / "Charades_v1_classes.txt", VIDEOS)
    assert len(r.questions) == 2 and any(n.startswith("1 action labels name a class not in") for n in r.notes)


def test_ek100_mir_relevance_captions_and_the_official_video_layout(readings):
    qs = readings["ek100_mir"].questions
    assert len(qs) == 4 and qs[0].question == CAPTION_QUESTION
    assert qs[0].options == ["Take plate.", "Put plate in sink.", "Take cup."]  # imperative, as narrated
    assert qs[0].labels == [1.0, 0.25, 0.5]  # same verb + noun; plate of {plate, sink}; same verb only
    assert qs[1].labels[1] == 1.0 and qs[3].labels == qs[0].labels
    assert (qs[1].start, qs[1].end) == (pytest.approx(2.01), pytest.approx(3.36))
    assert qs[0].video == str(VIDEOS / "P01" / "videos" / "P01_11.MP4")


def test_ek100_mir_limit_keeps_the_sentences_its_clips_need():
    args = FIXTURES / "EPIC_100_retrieval_test.csv", FIXTURES / "EPIC_100_retrieval_test_sentence.csv", VIDEOS
    assert eg.read_ek100_mir(*args, limit=1).questions[0].options == ["Take plate."]
    two = eg.read_ek100_mir(*args, limit=2).questions
    assert two[0].options == ["Take plate.", "Put plate in sink."] and two[0].labels == [1.0, 0.25]


def test_ek100_mir_prefers_the_published_relevancy_matrix(tmp_path):
    args = FIXTURES / "EPIC_100_retrieval_test.csv", FIXTURES / "EPIC_100_retrieval_test_sentence.csv", VIDEOS
    matrix = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 0.0], [0.3, 0.0, 1.0], [1.0, 0.0, 0.3]])
    (tmp_path / "rel.pkl").write_bytes(pickle.dumps(matrix))
    assert eg.read_ek100_mir(*args, relevancy=tmp_path / "rel.pkl").questions[2].labels == [0.3, 0.0, 1.0]
    assert eg.read_ek100_mir(*args, relevancy=tmp_path / "rel.pkl", limit=2).questions[1].labels == [0.0, 1.0]
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(matrix.T))
    with pytest.raises(UserError, match=r"shape \(3, 4\), expected clips x sentences \(4, 3\)"):
        eg.read_ek100_mir(*args, relevancy=tmp_path / "bad.pkl")


def test_ek100_mir_says_which_sentences_it_cannot_place(tmp_path):
    (tmp_path / "s.csv").write_text("narration_id,narration\nP01_11_0,take plate\nP09_99_9,open door\n")
    r = eg.read_ek100_mir(FIXTURES / "EPIC_100_retrieval_test.csv", tmp_path / "s.csv", VIDEOS)
    assert r.questions[0].options == ["Take plate."]
    assert any(n.startswith("1 sentences name a narration_id not in") and "P09_99_9" in n for n in r.notes)


def test_egoplan_window_from_progress_steps_at_each_videos_fps(readings):
    epic, ego4d = readings["egoplan"].questions
    assert epic.options[epic.answer] == "turn on tap" and len(epic.options) == 4
    fps = 60000 / 1001  # P01_11 in the fixture's EPIC_100_video_info.csv
    # the step stopping after the current frame (290-330) is not shown; the clip starts at the first shown step
    assert epic.start == pytest.approx(1 / fps) and epic.end == pytest.approx(306 / fps)
    assert epic.video == str(VIDEOS / "P01" / "videos" / "P01_11.MP4") and epic.meta["fps"] == pytest.approx(fps)
    assert ego4d.video == str(VIDEOS / "00000000-0000-4000-8000-00000000e90d.mp4")
    assert (ego4d.start, ego4d.end) == (10.0, 30.0)  # not in the fps table: the default 30
    assert "1 of 2 samples' videos have no fps in EPIC_100_video_info.csv (Ego4D 1): frame numbers read at fps=30" \
        in readings["egoplan"].notes


def test_egoplan_bench2_records_hidden_answers_and_no_finished_step(tmp_path):
    rows = json.loads((FIXTURES / "EgoPlan_validation.json").read_text())
    bench2 = {k: v for k, v in rows[0].items() if k not in ("video_id", "video_source", "question")}
    bench2.update(sample_id="ca6e9ec9-46ac-4a02-8034-7c31157dc52c_2", task_start_frame=0, current_observation_frame=60)
    hidden = {k: v for k, v in rows[0].items() if k != "golden_choice_idx"}
    early = dict(rows[0], current_observation_frame=100)
    (tmp_path / "e.json").write_text(json.dumps([bench2, hidden, early]))
    r = eg.read_egoplan(tmp_path / "e.json", VIDEOS, ego4d_videos=tmp_path,
                        video_info=FIXTURES / "EPIC_100_video_info.csv")
    b2, h, e = r.questions
    assert b2.video == str(tmp_path / "ca6e9ec9-46ac-4a02-8034-7c31157dc52c.mp4") and (b2.start, b2.end) == (0.0, 2.0)
    assert b2.question == eg.EGOPLAN_QUESTION.format(goal="wash the plate") and b2.options[b2.answer] == "turn on tap"
    assert h.answer is None and [q.id for q in r.scorable] == [b2.id, e.id]
    assert e.end == pytest.approx(100 * 1001 / 60000) and e.start == pytest.approx(e.end - 1.0)
    assert {n.split(" (")[0].split(":")[0] for n in r.notes} >= {
        "1 of 3 samples' videos have no fps in EPIC_100_video_info.csv",
        "1 samples have no step finished by the current frame", "1 of 3 samples have no golden_choice_idx"}


def test_vln_qa_letter_answers_and_open_answers(readings):
    choice, open_ = readings["vln_qa"].questions
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
    assert {r.benchmark: r.found for r in eg.read_egobench(tmp_path)}["egoplan"] == 0


def test_bad_inputs_are_one_line_user_errors(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"egoscheme": {}}))
    with pytest.raises(UserError, match="unknown benchmark 'egoscheme'"):
        eg.load_egobench(tmp_path / "cfg.json")
    (tmp_path / "cfg.json").write_text(json.dumps({"egoschema": {"questions": "q.json", "video": "v"}}))
    with pytest.raises(UserError, match="egoschema: .*'videos'"):
        eg.load_egobench(tmp_path / "cfg.json")
    shutil.copy(FIXTURES / "egomcq.json", tmp_path / "egoschema.json")
    with pytest.raises(UserError, match="expected a JSON list of records"):
        eg.read_egoschema(tmp_path / "egoschema.json", tmp_path)
    (tmp_path / "egoschema.json").write_text(json.dumps([{"q_uid": "x", "question": "q?"}]))
    with pytest.raises(UserError, match="item 0: missing field"):
        eg.read_egoschema(tmp_path / "egoschema.json", tmp_path)
    with pytest.raises(UserError, match="no task 'nope'"):
        eg.load_egobench(FIXTURES / "egobench.json", ["nope"])


class _FakeScorer:
    """Prefers the longest option: enough to check what predict_choices asks and returns."""

    num_frames, image_size, caption_question = 2, 8, "What does the wearer do?"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def encode(self, frames):
        return frames

    def option_scores(self, clip, question, options, prefix_options=False):
        from exo2ego_edge.eval.scoring import OptionScore

        self.asked.append(question)
        return [OptionScore(logprob=-10.0 / len(o), tokens=1) for o in options]


def test_predict_choices_reads_cached_frames_and_needs_no_answer(readings):
    qs = readings["egoschema"].questions  # videos absent: the frames must come from the cache
    scorer = _FakeScorer()
    frames = {(q.clip_key, 2, 8): np.zeros((2, 8, 8, 3), np.uint8) for q in qs}
    picks = eg.predict_choices(scorer, qs, frames=frames)
    assert picks == {q.id: int(np.argmax([len(o) for o in q.options])) for q in qs} and len(frames) == len(qs)
    caption = Question(id="c", task="t", kind="choice", video=qs[0].video, start=None, end=None,
                       question=CAPTION_QUESTION, options=["a", "bb"], answer=None)
    assert eg.predict_choices(scorer, [caption], frames=frames) == {"c": 1}
    assert scorer.asked[-1] == scorer.caption_question  # a model is asked its own caption question


def test_cli_prints_what_it_read_and_stops_on_missing_videos():
    from exo2ego_edge.cli import cli

    res = CliRunner().invoke(cli, ["eval", "--suite", "egobench", "--data", str(FIXTURES / "egobench.json")])
    assert "egoschema: 3 read, 2 scorable, 0 of 3 videos found" in res.output
    assert "ek100_mir: 4 read, 4 scorable, 0 of 1 videos found" in res.output
    assert isinstance(res.exception, UserError) and "18 video(s) the questions name are missing" in str(res.exception)
    only = CliRunner().invoke(cli, ["eval", "--suite", "egobench", "--data", str(FIXTURES / "egobench.json"),
                                    "--tasks", "egoschema"])
    assert "egoschema: 3 read" in only.output and "ek100_mir" not in only.output


def test_cli_scores_egoschema_and_writes_the_servers_predictions(tmp_path):
    from exo2ego_edge.assets import SAMPLE_CLIP, SHIPPED_BUNDLE
    from exo2ego_edge.cli import cli

    rows = json.loads((FIXTURES / "egoschema_questions.json").read_text())
    (tmp_path / "videos").mkdir()
    for row in rows:
        (tmp_path / "videos" / f"{row['q_uid']}.mp4").symlink_to(SAMPLE_CLIP)
    shutil.copy(FIXTURES / "egoschema_questions.json", tmp_path / "q.json")
    shutil.copy(FIXTURES / "egoschema_subset_answers.json", tmp_path / "a.json")
    (tmp_path / "cfg.json").write_text(json.dumps({"egoschema": {"questions": "q.json", "answers": "a.json",
                                                                 "videos": "videos"}}))
    out = tmp_path / "pred.json"
    res = CliRunner().invoke(cli, ["eval", "--bundle", str(SHIPPED_BUNDLE), "--suite", "egobench", "--data",
                                   str(tmp_path / "cfg.json"), "--predictions", str(out), "--threads", "1"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "egoschema: 3 read, 2 scorable, 3 of 3 videos found" in res.output
    picks = json.loads(out.read_text())
    assert list(picks) == [r["q_uid"] for r in rows] and all(0 <= v < 5 for v in picks.values())
    truth = json.loads((tmp_path / "a.json").read_text())
    right = sum(picks[uid] == answer for uid, answer in truth.items())  # the predictions are what was scored
    assert f"| egoschema | EgoSchema | 2 | accuracy | {100 * right / 2:.1f} |" in res.output
