"""EgoBench adapters: the public annotation files of eight egocentric benchmarks -> :class:`Question`.

Each reader takes local paths (annotations + a video folder) and returns questions in the one
schema :mod:`.bench_questions` defines, so ``exo2ego-edge eval --suite egobench`` scores them with
the same code as EgoSim-Bench. Which fields each reader relies on, and which of those formats
could be confirmed against the published files, is listed in ``docs/egobench.md``.

``load_egobench(config)`` reads a JSON file naming the local files per benchmark, e.g.::

    {"egoschema": {"questions": "egoschema/questions.json", "answers": "egoschema/subset_answers.json",
                   "videos": "egoschema/videos"},
     "egomcq": {"annotations": "egomcq.json", "videos": "ego4d/v1/full_scale", "limit": 500}}

Relative paths are relative to the JSON file; ``limit`` keeps the first N questions (retrieval:
N clips and the sentences they need). A folder of already converted ``<task>.jsonl`` works too.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exo2ego_edge.data.clips import DEFAULT_WEARER
from exo2ego_edge.data.instructions import rewrite_wearer
from exo2ego_edge.errors import UserError
from exo2ego_edge.eval.questions import Question, read_suite
from exo2ego_edge.prompt import CAPTION_QUESTION, DOING_QUESTION

log = logging.getLogger(__name__)

CATEGORIES = {
    "egoschema": "EgoSchema", "qaego4d": "QAEgo4D", "egotaskqa": "EgoTaskQA", "charades_ego": "Charades-Ego",
    "ek100_mir": "EK-100 MIR", "egoplan": "EgoPlan", "vln_qa": "VLN-QA", "egomcq_inter": "EgoMCQ",
    "egomcq_intra": "EgoMCQ",
}


def category_of(task: str) -> str:
    return CATEGORIES.get(task, task)


# --- small readers --------------------------------------------------------------------------------
def _json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None


def _need(row: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)} (is this the right file?)")


def _video(folder: Path, stem: str, exts: tuple[str, ...] = (".mp4", ".MP4", ".webm", ".mkv")) -> str:
    """``folder/stem.<ext>`` for the first extension that exists (else .mp4: reported on decode)."""
    for ext in exts:
        if (folder / f"{stem}{ext}").is_file():
            return str(folder / f"{stem}{ext}")
    return str(folder / f"{stem}{exts[0]}")


def _timestamp(text: str) -> float:
    """"00:01:02.50" or "62.5" -> seconds."""
    parts = [float(p) for p in str(text).split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def narration_to_caption(text: str) -> str:
    """Ego4D narration "#C C picks a bag #unsure" -> "The camera wearer picks a bag."."""
    text = re.sub(r"#\w+", " ", text).strip()
    text = re.sub(r"^C\b", "C", " ".join(text.split()))
    text = rewrite_wearer(text, DEFAULT_WEARER)
    return text if text.endswith(".") else text + "."


# --- the eight benchmarks -------------------------------------------------------------------------
def read_egoschema(questions: Path, answers: Path | None, videos: Path, limit: int | None = None) -> list[Question]:
    """EgoSchema: ``questions.json`` [{q_uid, question, "option 0".."option 4"}] + ``subset_answers.json``
    {q_uid: index}; videos ``<q_uid>.mp4`` (3 min, frames sampled over the whole video)."""
    rows = _json(questions)
    truth = _json(answers) if answers else {}
    out = []
    for row in rows:
        _need(row, ("q_uid", "question", "option 0"), f"{questions}")
        if row["q_uid"] not in truth:
            continue  # only the public subset has answers
        options = [row[f"option {i}"] for i in range(5) if f"option {i}" in row]
        out.append(Question(id=row["q_uid"], task="egoschema", kind="choice", video=_video(videos, row["q_uid"]),
                            start=None, end=None, question=row["question"], options=options,
                            answer=int(truth[row["q_uid"]]), source="egoschema"))
    return out[:limit]


def read_qaego4d(annotations: Path, videos: Path, limit: int | None = None) -> list[Question]:
    """QAEgo4D: [{video_id, sample_id, question, answer[, wrong_answers]}] over whole Ego4D clips.

    With ``wrong_answers`` (QAEgo4D-Closed) a 4-way choice, else an open question."""
    out = []
    for i, row in enumerate(_json(annotations)):
        _need(row, ("video_id", "question", "answer"), f"{annotations} item {i}")
        base = dict(id=str(row.get("sample_id", i)), task="qaego4d", video=_video(videos, row["video_id"]),
                    start=None, end=None, question=row["question"], source="qaego4d")
        wrong = row.get("wrong_answers")
        if wrong:
            out.append(Question(kind="choice", options=[row["answer"], *wrong], answer=0, **base))
        else:
            out.append(Question(kind="open", answer=row["answer"], **base))
    return out[:limit]


def read_egotaskqa(annotations: Path, videos: Path, limit: int | None = None) -> list[Question]:
    """EgoTaskQA: [{interval, question, answer, type/category, reasoning_type}] with open answers;
    ``interval`` names the pre-cut clip ``<interval>.mp4``."""
    out = []
    for i, row in enumerate(_json(annotations)):
        _need(row, ("interval", "question", "answer"), f"{annotations} item {i}")
        out.append(Question(id=f"{row['interval']}-{i}", task="egotaskqa", kind="open",
                            video=_video(videos, str(row["interval"]).replace("/", "_")), start=None, end=None,
                            question=row["question"], answer=str(row["answer"]), source="egotaskqa",
                            meta={k: row[k] for k in ("type", "category", "reasoning_type") if k in row}))
    return out[:limit]


def read_charades_ego(annotations: Path, classes: Path, videos: Path, limit: int | None = None) -> list[Question]:
    """Charades-Ego: ``CharadesEgo_v1_test_only1st.csv`` (id, actions "c092 11.9 21.2;...") and
    ``Charades_v1_classes.txt`` ("c000 Holding some clothes"): one multi-label question per video."""
    names: dict[str, str] = {}
    for line in Path(classes).read_text(encoding="utf-8").splitlines():
        if line.strip():
            code, _, text = line.strip().partition(" ")
            names[code] = text
    codes = sorted(names)
    options = [names[c] for c in codes]
    out = []
    for row in _csv(annotations):
        _need(row, ("id", "actions"), str(annotations))
        present = {a.split()[0] for a in row["actions"].split(";") if a.strip()}
        out.append(Question(id=row["id"], task="charades_ego", kind="multilabel", video=_video(videos, row["id"]),
                            start=None, end=None, question=DOING_QUESTION, options=options,
                            labels=[float(c in present) for c in codes], prefix_options=True, source="charades_ego"))
    return out[:limit]


def read_ek100_mir(annotations: Path, sentences: Path, videos: Path, relevancy: Path | None = None,
                   limit: int | None = None) -> list[Question]:
    """EK-100 MIR: ``EPIC_100_retrieval_test.csv`` (clips) + ``..._sentence.csv`` (unique narrations).

    Relevance: the published ``caption_relevancy_*.pkl`` matrix (clips x sentences) when given,
    else recomputed as EK-100 defines it: mean of the verb-class IoU and the noun-class IoU."""
    clips = _csv(annotations)
    sents = _csv(sentences)
    for row in clips[:1]:
        _need(row, ("narration_id", "video_id", "start_timestamp", "stop_timestamp", "verb_class", "all_noun_classes"), str(annotations))
    matrix = None
    if relevancy is not None:
        import pickle

        with open(relevancy, "rb") as f:
            matrix = pickle.load(f)  # the published file: a numpy array, trusted local input
    if limit is not None:
        clips = clips[:limit]
    by_id = {c["narration_id"]: c for c in _csv(annotations)}
    keep = [j for j, s in enumerate(sents) if matrix is not None or s["narration_id"] in by_id]
    texts = [narration_to_caption("C " + sents[j]["narration"]) for j in keep]

    def classes(c: dict) -> tuple[set, set]:
        nouns = {int(x) for x in re.findall(r"\d+", c["all_noun_classes"])}
        return {int(c["verb_class"])}, nouns

    def iou(a: set, b: set) -> float:
        return len(a & b) / len(a | b) if a | b else 0.0

    out = []
    for i, c in enumerate(clips):
        if matrix is not None:
            labels = [float(matrix[i][j]) for j in keep]
        else:
            v, n = classes(c)
            labels = []
            for j in keep:
                sv, sn = classes(by_id[sents[j]["narration_id"]])
                labels.append(0.5 * iou(v, sv) + 0.5 * iou(n, sn))
        participant = c.get("participant_id") or c["video_id"].split("_")[0]
        out.append(Question(id=c["narration_id"], task="ek100_mir", kind="retrieval",
                            video=_video(videos / participant, c["video_id"]),
                            start=_timestamp(c["start_timestamp"]), end=_timestamp(c["stop_timestamp"]),
                            question=CAPTION_QUESTION, options=texts, labels=labels, source="ek100_mir"))
    return out


def read_egoplan(annotations: Path, videos: Path, fps: float = 30.0, limit: int | None = None) -> list[Question]:
    """EgoPlan-Bench: [{sample_id, video_id, task_goal, question, choice_a..choice_d,
    golden_choice_idx "A".."D", task_start_frame?, current_observation_frame}]; the clip is the task
    progress so far (task start to the current observation frame)."""
    out = []
    for i, row in enumerate(_json(annotations)):
        _need(row, ("sample_id", "video_id", "question", "choice_a", "golden_choice_idx"), f"{annotations} item {i}")
        letters = [k for k in ("a", "b", "c", "d") if f"choice_{k}" in row]
        end = row.get("current_observation_frame")
        start = row.get("task_start_frame", 0)
        question = row["question"]
        if row.get("task_goal") and row["task_goal"] not in question:
            question = f"{question} My goal: {row['task_goal']}."
        out.append(Question(
            id=str(row["sample_id"]), task="egoplan", kind="choice", video=_video(videos, row["video_id"]),
            start=float(start) / fps if end is not None else None, end=float(end) / fps if end is not None else None,
            question=question, options=[row[f"choice_{k}"] for k in letters],
            answer="ABCD".index(str(row["golden_choice_idx"]).strip().upper()), source="egoplan",
            meta={"video_source": row.get("video_source")}))
    return out[:limit]


def read_vln_qa(annotations: Path, videos: Path, limit: int | None = None) -> list[Question]:
    """VLN-QA (format inferred, see docs): [{id, video, question, options?, answer, start?, end?}];
    ``answer`` an option index / letter with options, else free text."""
    out = []
    for i, row in enumerate(_json(annotations)):
        _need(row, ("video", "question", "answer"), f"{annotations} item {i}")
        options = row.get("options")
        base = dict(id=str(row.get("id", i)), task="vln_qa", video=_video(videos, Path(row["video"]).stem),
                    start=row.get("start"), end=row.get("end"), question=row["question"], source="vln_qa")
        if options:
            ans = row["answer"]
            idx = "ABCDEFGH".index(ans.upper()) if isinstance(ans, str) and len(ans) == 1 and ans.isalpha() else (
                int(ans) if not isinstance(ans, str) else options.index(ans))
            out.append(Question(kind="choice", options=list(options), answer=idx, **base))
        else:
            out.append(Question(kind="open", answer=str(row["answer"]), **base))
    return out[:limit]


def read_egomcq(annotations: Path, videos: Path, limit: int | None = None) -> list[Question]:
    """EgoMCQ (EgoVLP): {qid: {query: {video_uid, clip_start, clip_end, clip_text}, choices: {"0".."4":
    {video_uid, clip_start, clip_end, ...}}, answer, types (1 inter-video, 2 intra-video)}}: pick the
    clip that matches the text, each clip scored by the text's log-likelihood given it."""
    out = []
    for qid, row in _json(annotations).items():
        _need(row, ("query", "choices", "answer", "types"), f"{annotations} item {qid}")
        choices = [row["choices"][k] for k in sorted(row["choices"], key=int)]
        candidates = [{"video": _video(videos, c["video_uid"]), "start": float(c["clip_start"]),
                       "end": float(c["clip_end"])} for c in choices]
        task = "egomcq_inter" if int(row["types"]) == 1 else "egomcq_intra"
        first = candidates[0]
        out.append(Question(id=str(qid), task=task, kind="clip_choice", video=first["video"], start=first["start"],
                            end=first["end"], question=CAPTION_QUESTION,
                            options=[narration_to_caption(row["query"]["clip_text"])], answer=int(row["answer"]),
                            candidates=candidates, source="egomcq"))
    return out[:limit]


READERS: dict[str, Callable[..., list[Question]]] = {
    "egoschema": read_egoschema, "qaego4d": read_qaego4d, "egotaskqa": read_egotaskqa,
    "charades_ego": read_charades_ego, "ek100_mir": read_ek100_mir, "egoplan": read_egoplan,
    "vln_qa": read_vln_qa, "egomcq": read_egomcq,
}
PATH_KEYS = ("questions", "answers", "annotations", "classes", "sentences", "relevancy", "videos")


def load_egobench(data: str | Path, tasks: list[str] | None = None) -> dict[str, list[Question]]:
    """Task -> questions from a config JSON (see the module docstring) or a converted suite folder."""
    data = Path(data)
    if data.is_dir():
        return read_suite(data, tasks)
    config = _json(data)
    if not isinstance(config, dict):
        raise UserError(f"{data}: expected a JSON object mapping benchmark names to their files")
    unknown = sorted(set(config) - set(READERS))
    if unknown:
        raise UserError(f"{data}: unknown benchmark {unknown[0]!r} (known: {', '.join(READERS)})")
    out: dict[str, list[Question]] = {}
    for bench, spec in config.items():
        kwargs = {k: (data.parent / v if k in PATH_KEYS and v is not None else v) for k, v in spec.items()}
        try:
            questions = READERS[bench](**kwargs)
        except TypeError as e:
            raise UserError(f"{data}: {bench}: {e}") from None
        for q in questions:
            out.setdefault(q.task, []).append(q)
    if tasks:
        missing = [t for t in tasks if t not in out]
        if missing:
            raise UserError(f"{data}: no task {missing[0]!r} (has: {', '.join(out)})")
        out = {t: out[t] for t in tasks}
    return out
