"""The EgoBench readers and the Ego-Exo4D reader on the real published files.

The files are third-party data, copied verbatim from the benchmarks' public repositories into
``shared/real-annotations/`` beside the repository (its SOURCES.md names each file's repository,
path, commit and whether it is whole or a subset). They are read from there, never copied into the
project; README snippets that are not valid JSON as published are repaired in ``tmp_path``.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from exo2ego_edge.data.egoexo4d import read_descriptions, read_takes
from exo2ego_edge.eval import egobench as eg
from exo2ego_edge.prompt import CAPTION_QUESTION, DOING_QUESTION

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-annotations"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"the real annotation files ({REAL}) are absent")
MIR = REAL / "ek100_mir"


def _snippet(path: Path) -> dict:
    """A README's JSON record as published, less its trailing commas (not JSON, as printed there)."""
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", path.read_text(encoding="utf-8")).strip().rstrip(","))


def _docs_json(text: str) -> str:
    """Ego-Exo4D's documentation samples (pseudo-JSON with comments and placeholders) -> JSON."""
    text = re.sub(r"\s*//.*", "", text)  # comments
    text = re.sub(r"^\s*\.\.\..*$", "", text, flags=re.MULTILINE)  # "... other fields"
    text = re.sub(r"^\s*<[^>]*>: \{<[^>]*>\},?$", "", text, flags=re.MULTILINE)  # <take_uid2>: {<same-schema as above>}
    text = re.sub(r'^\s*"\w+":\s*$', "", text, flags=re.MULTILINE)  # "cam02": whose value was a comment
    text = re.sub(r"(:\s*)<([^>]*)>", r'\1"\2"', text)  # a bare placeholder value -> a string
    text = re.sub(r'([\]}"\w])(\s*\n\s*")', r"\1,\2", text)  # the comma the docs leave out before a key
    return re.sub(r",(\s*[}\]])", r"\1", text)


# --- EgoSchema ------------------------------------------------------------------------------------
def test_egoschema_real_pair_reads_all_20_and_reports_none_scorable(tmp_path):
    r = eg.read_egoschema(REAL / "egoschema" / "questions.json", tmp_path, REAL / "egoschema" / "subset_answers.json")
    assert len(r.questions) == 20 and r.scorable == [] and (r.videos, r.found) == (20, 0)
    assert all(len(q.options) == 5 and q.answer is None and (q.start, q.end) == (None, None) for q in r.questions)
    assert "20 of 20 questions not scored here (no answer in subset_answers.json, whose 500 answers match 0 of them)" \
        in r.notes[-1]
    # the full release: 5,031 q_uids (uid_to_ego4d.json), the 500 public answers among them, so a full
    # questions.json would give 500 scorable and report 4,531
    uids = json.loads((REAL / "egoschema" / "uid_to_ego4d.json").read_text())
    answers = json.loads((REAL / "egoschema" / "subset_answers.json").read_text())
    assert len(uids) == 5031 and len(answers) == 500 and set(answers) <= set(uids)


# --- EK-100 MIR -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mir(tmp_path_factory):
    return eg.read_ek100_mir(MIR / "EPIC_100_retrieval_test.csv", MIR / "EPIC_100_retrieval_test_sentence.csv",
                             tmp_path_factory.mktemp("epic"))


def test_ek100_mir_test_set_clips_sentences_and_layout(mir):
    qs = mir.questions
    assert len(qs) == 9668 and all(len(q.options) == len(q.labels) == 3842 for q in qs[:50])
    assert qs[0].options is qs[-1].options and qs[0].question == CAPTION_QUESTION  # one shared query list
    assert qs[0].options[:2] == ["Take plate.", "Put down plate."]  # as narrated: no "C " before an imperative
    assert not any(o.startswith(("C ", "The camera wearer")) for o in qs[0].options)
    assert qs[0].video.endswith("P01/videos/P01_11.MP4") and (qs[0].start, qs[0].end) == (0.0, 1.89)
    assert mir.videos == 138 and mir.found == 0 and mir.notes[0].startswith("138 of 138 videos not found")


def test_ek100_mir_each_narration_is_relevant_to_its_own_clip(mir):
    sents = eg._csv(MIR / "EPIC_100_retrieval_test_sentence.csv")
    row = {q.id: i for i, q in enumerate(mir.questions)}
    # every sentence has relevance 1.0 with the clip that defines it (its narration_id)
    assert all(mir.questions[row[s["narration_id"]]].labels[j] == 1.0 for j, s in enumerate(sents))
    # every clip has 1.0 with a sentence of its own narration, except where the sentence file gives that
    # narration other classes than the clip's (EK-100 keeps one class set per sentence: "stir" is noun 20)
    clips = eg._csv(MIR / "EPIC_100_retrieval_test.csv")
    by_id = {c["narration_id"]: c for c in clips}
    said = defaultdict(list)
    for j, s in enumerate(sents):
        said[s["narration"]].append(j)
    differ = {c["narration_id"] for c in clips if all(eg._classes(by_id[sents[j]["narration_id"]]) != eg._classes(c)
                                                      for j in said[c["narration"]])}
    own = {q.id for q, c in zip(mir.questions, clips) if any(q.labels[j] == 1.0 for j in said[c["narration"]])}
    assert own == set(row) - differ and len(differ) == 29


def test_ek100_mir_relevance_matches_the_definition_and_is_fast(mir):
    clips = eg._csv(MIR / "EPIC_100_retrieval_test.csv")
    sents = eg._csv(MIR / "EPIC_100_retrieval_test_sentence.csv")
    by_id = {c["narration_id"]: c for c in clips}
    began = time.perf_counter()
    eg.mir_relevance(clips, [by_id[s["narration_id"]] for s in sents])
    assert time.perf_counter() - began < 10.0  # pure Python took 172 s
    rng = random.Random(0)
    for i, j in ((rng.randrange(len(clips)), rng.randrange(len(sents))) for _ in range(3000)):
        (cv, cn), (sv, sn) = eg._classes(clips[i]), eg._classes(by_id[sents[j]["narration_id"]])
        iou = len(set(cn) & set(sn)) / len(set(cn) | set(sn))
        assert mir.questions[i].labels[j] == pytest.approx(0.5 * (cv == sv) + 0.5 * iou)


def test_ek100_mir_limit_keeps_only_the_sentences_its_clips_need(tmp_path):
    r = eg.read_ek100_mir(MIR / "EPIC_100_retrieval_test.csv", MIR / "EPIC_100_retrieval_test_sentence.csv",
                          tmp_path, limit=100)
    clips = eg._csv(MIR / "EPIC_100_retrieval_test.csv")[:100]
    sents = eg._csv(MIR / "EPIC_100_retrieval_test_sentence.csv")
    need = [s for s in sents if s["narration"] in {c["narration"] for c in clips}
            or s["narration_id"] in {c["narration_id"] for c in clips}]
    assert len(r.questions) == 100 and r.questions[0].options == [eg._sentence(s["narration"]) for s in need]
    assert len(need) < 100 and all(any(v == 1.0 for v in q.labels) for q in r.questions)


# --- Charades (format proxy for Charades-Ego) -------------------------------------------------------
def test_charades_v1_test_as_a_charades_ego_format_proxy(tmp_path):
    folder = REAL / "charades_ego"
    r = eg.read_charades_ego(folder / "Charades_v1_test.csv", folder / "Charades_v1_classes.txt", tmp_path)
    qs = r.questions
    assert len(qs) == 1863 and len(qs[0].options) == 157 and qs[0].question == DOING_QUESTION
    assert qs[0].id == "YSKX3" and [qs[0].options[i] for i, v in enumerate(qs[0].labels) if v] == [
        qs[0].options[k] for k in (75, 76, 77, 79, 80)]  # c077 c079 c080 c076 c075, in class order
    assert sum(not any(q.labels) for q in qs) == 49  # videos without an action are read, not dropped
    assert not [n for n in r.notes if "class not in" in n]  # every label names a class of the list


# --- EgoPlan --------------------------------------------------------------------------------------
def test_egoplan_readme_sample_is_placed_at_its_videos_fps(tmp_path):
    sample = _snippet(REAL / "egoplan" / "EgoPlan_validation_example.README.txt")
    (tmp_path / "val.json").write_text(json.dumps([sample]))
    r = eg.read_egoplan(tmp_path / "val.json", tmp_path / "EPIC-KITCHENS", video_info=MIR / "EPIC_100_video_info.csv")
    (q,) = r.questions
    assert q.end == pytest.approx(12.68, abs=0.005) and q.start == pytest.approx(111 / (60000 / 1001))  # last 4 steps
    assert q.options[q.answer] == "put cereal box into cupboard" and "store cereal" in q.question
    assert q.video == str(tmp_path / "EPIC-KITCHENS" / "P01" / "videos" / "P01_13.MP4")
    assert not [n for n in r.notes if "fps" in n]  # P01_13 is in EPIC_100_video_info.csv


def test_egoplan_bench2_readme_record_reads(tmp_path):
    sample = _snippet(REAL / "egoplan" / "EgoPlan-Bench2_example.README.txt")
    (tmp_path / "b2.json").write_text(json.dumps([sample]))
    r = eg.read_egoplan(tmp_path / "b2.json", tmp_path, video_info=MIR / "EPIC_100_video_info.csv")
    (q,) = r.questions
    assert q.video == str(tmp_path / "ca6e9ec9-46ac-4a02-8034-7c31157dc52c.mp4")
    assert (q.start, q.end) == (0.0, pytest.approx(656 / 30)) and q.options[q.answer] == "attach stopwatch"
    assert q.question == eg.EGOPLAN_QUESTION.format(goal="bake pastry in the oven and set a stopwatch")
    assert any(n.startswith("1 of 1 samples' videos have no fps") and "(Ego4D 1)" in n for n in r.notes)


# --- QAEgo4D --------------------------------------------------------------------------------------
def test_qaego4d_closed_record_and_readme_example(tmp_path):
    record = _snippet(REAL / "qaego4d" / "GroundVQA_issue7_QaEgo4D_test_close_record.txt")
    (tmp_path / "close.json").write_text(json.dumps([record]))
    (q,) = eg.read_qaego4d(tmp_path / "close.json", tmp_path).questions
    assert q.kind == "choice" and sorted(q.options) == ["five", "nine", "seven", "three"]
    assert q.options[q.answer] == "seven" and q.video == str(tmp_path / "9ab5fd9f-77e4-4438-a546-a4b6ed889f1a.mp4")
    (tmp_path / "test.json").write_text(json.dumps([_snippet(REAL / "qaego4d" / "annotations_example.README.txt")]))
    (o,) = eg.read_qaego4d(tmp_path / "test.json", tmp_path).questions
    assert (o.kind, o.answer, o.id) == ("open", "on the table", "12345678-1234-1234-1234-123456789abc_3")


# --- Ego-Exo4D ------------------------------------------------------------------------------------
def test_egoexo4d_documentation_samples_read(tmp_path):
    docs = REAL / "egoexo4d"
    takes = _docs_json((docs / "takes_sample.docs.txt").read_text(encoding="utf-8")).strip()
    (tmp_path / "takes.json").write_text("[" + takes[1:-1] + "]")  # the docs print the list with braces
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "atomic_descriptions_sample.json").write_text(
        _docs_json((docs / "atomic_descriptions_sample.docs.txt").read_text(encoding="utf-8")))
    (take,) = read_takes(tmp_path).values()
    assert take.take_uid == "13f01c79-5bfd-42f5-90ce-ee350aa1c3ad" and take.task_name == "Remove a Wheel"
    assert take.ego_cam == "aria01" and take.exo_cams == ["cam01"] and take.best_exo == "cam04"
    assert take.videos["aria01"]["rgb"] == "frame_aligned_videos/aria01_214-1.mp4"
    assert take.duration_sec == pytest.approx(21.3667, abs=1e-4)
    ds = read_descriptions(tmp_path, "sample")
    kept = ds.by_take["3c489f86-8896-4c86-8a5a-929999799d36"]
    assert (ds.annotations, ds.kept, sum(ds.dropped.values())) == (2, 5, 0)
    assert [(d.subject, d.ego_visible, d.best_exo) for d in kept[-2:]] == [("O", True, "cam02"), ("C", False, "cam02")]
    assert kept[2].text == "C touches the screw of the hub with his right hand." and kept[2].timestamp == 18.48356


# --- the CLI on a config naming the real files ------------------------------------------------------
def test_cli_prints_per_benchmark_counts_for_the_real_files(tmp_path):
    from click.testing import CliRunner

    from exo2ego_edge.cli import cli
    from exo2ego_edge.errors import UserError

    config = {"egoschema": {"questions": str(REAL / "egoschema" / "questions.json"),
                            "answers": str(REAL / "egoschema" / "subset_answers.json"), "videos": "egoschema"},
              "charades_ego": {"annotations": str(REAL / "charades_ego" / "Charades_v1_test.csv"),
                               "classes": str(REAL / "charades_ego" / "Charades_v1_classes.txt"), "videos": "charades"},
              "ek100_mir": {"annotations": str(MIR / "EPIC_100_retrieval_test.csv"), "limit": 500,
                            "sentences": str(MIR / "EPIC_100_retrieval_test_sentence.csv"), "videos": "EPIC-KITCHENS"}}
    (tmp_path / "egobench.json").write_text(json.dumps(config))
    res = CliRunner().invoke(cli, ["eval", "--suite", "egobench", "--data", str(tmp_path / "egobench.json")])
    lines = res.output.splitlines()
    assert "egoschema: 20 read, 0 scorable, 0 of 20 videos found" in lines
    assert "charades_ego: 1863 read, 1863 scorable, 0 of 1863 videos found" in lines
    assert any(re.fullmatch(r"ek100_mir: 500 read, 500 scorable, 0 of \d+ videos found", line) for line in lines)
    assert isinstance(res.exception, UserError) and "missing" in str(res.exception)
