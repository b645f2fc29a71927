"""EgoBench adapters: the public annotation files of eight egocentric benchmarks -> :class:`Question`.

Each reader takes local paths (annotations + video folders) and returns a :class:`Reading`: every
question it read, in the one schema :mod:`.questions` defines (so ``exo2ego-edge eval --suite
egobench`` scores them with the same code as EgoSim-Bench), how many videos they name and how many
of those exist, checked up front, and one note per thing the reader could not do (an answer that is
not public, a frame rate it does not know), each said once with its count. No row is dropped
silently. Which real files each reader was run on is listed in ``docs/egobench.md``.

``load_egobench(config)`` reads a JSON file naming the local files per benchmark, e.g.::

    {"egoschema": {"questions": "egoschema/questions.json", "answers": "egoschema/subset_answers.json",
                   "videos": "egoschema/videos"},
     "egomcq": {"annotations": "egomcq.json", "videos": "ego4d/v1/full_scale", "limit": 500}}

Relative paths are relative to the JSON file; ``limit`` keeps the first N rows (retrieval: N clips
and the sentences they need). A folder of already converted ``<task>.jsonl`` works too.
"""

from __future__ import annotations

import csv
import inspect
import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.data.clips import DEFAULT_WEARER
from exo2ego_edge.data.egoexo4d import load_json
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
# EgoPlan-Bench's question (v1 records carry it; EgoPlan-Bench2's evaluation builds it from the goal).
EGOPLAN_QUESTION = ("Considering the progress shown in the video and my current observation in the last frame, "
                    "what action should I take next in order to {goal}?")
EGOPLAN_STEPS = 4  # the official loader shows the last 4 finished steps (N_ACTIONS) before the current frame
EPIC_EXTS = (".MP4", ".mp4")  # EPIC-KITCHENS ships <P>/videos/<video_id>.MP4
LEMMA_FPS = 24.0  # LEMMA's frame rate in EgoTaskQA's generation code (generate_intervals(fps=24))


def category_of(task: str) -> str:
    return CATEGORIES.get(task, task)


@dataclass
class Reading:
    """One benchmark as read: every question, the videos they name, and what could not be done."""

    benchmark: str
    questions: list[Question]
    folders: tuple[Path, ...] = ()  # where the videos are looked for
    videos: int = 0  # distinct videos the questions name
    found: int = 0  # ... of which exist
    notes: list[str] = field(default_factory=list)

    @property
    def scorable(self) -> list[Question]:
        return [q for q in self.questions if q.scorable]

    @property
    def tasks(self) -> set[str]:
        return {q.task for q in self.questions}

    def note(self, text: str) -> None:
        """Say it once (a warning) and keep it for the caller."""
        log.warning("%s: %s", self.benchmark, text)
        self.notes.append(text)

    def summary(self) -> str:
        return (f"{self.benchmark}: {len(self.questions)} read, {len(self.scorable)} scorable, "
                f"{self.found} of {self.videos} videos found")


def _reading(benchmark: str, questions: list[Question], *folders: Path) -> Reading:
    """Wrap a reader's questions, counting up front which of the videos they name exist."""
    r = Reading(benchmark, questions, tuple(Path(f) for f in folders))
    names = sorted({q.video for q in questions} | {c["video"] for q in questions for c in q.candidates or []})
    missing = [v for v in names if not Path(v).is_file()]
    r.videos, r.found = len(names), len(names) - len(missing)
    if missing:
        absent = [str(f) for f in r.folders if not f.is_dir()]
        why = f"video folder {', '.join(absent)} does not exist" if absent else f"e.g. {missing[0]}"
        r.note(f"{len(missing)} of {len(names)} videos not found ({why}); those questions cannot be scored")
    return r


# --- small readers --------------------------------------------------------------------------------
def _rows(path: Path, limit: int | None) -> list[dict]:
    """A JSON list of records, the first ``limit`` of them."""
    rows = load_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{path}: expected a JSON list of records")
    return rows[:limit]


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
    """``folder/stem<ext>`` for the first extension that exists (else the first: counted as missing)."""
    for ext in exts:
        if (folder / f"{stem}{ext}").is_file():
            return str(folder / f"{stem}{ext}")
    return str(folder / f"{stem}{exts[0]}")


def _timestamp(text: str) -> float:
    """"00:01:02.50" or "62.5" -> seconds."""
    seconds = 0.0
    for p in str(text).split(":"):
        seconds = seconds * 60 + float(p)
    return seconds


def _sentence(text: str) -> str:
    """"take plate" -> "Take plate.": an imperative narration stays imperative."""
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def narration_to_caption(text: str) -> str:
    """Ego4D narration "#C C picks a bag #unsure" -> "The camera wearer picks a bag."."""
    text = " ".join(re.sub(r"#\w+", " ", text).split())
    return _sentence(rewrite_wearer(text, DEFAULT_WEARER))


# --- the eight benchmarks -------------------------------------------------------------------------
def read_egoschema(questions: Path, videos: Path, answers: Path | None = None, limit: int | None = None) -> Reading:
    """EgoSchema: ``questions.json`` [{q_uid, question, "option 0".."option 4"}], every question read;
    ``subset_answers.json`` {q_uid: index} answers the public 500, the rest are scored only by
    EgoSchema's own server (:func:`predict_choices` makes the file it takes). Videos ``<q_uid>.mp4``
    (3 min, frames sampled over the whole video)."""
    truth = load_json(answers) if answers is not None else {}
    out = []
    for i, row in enumerate(_rows(questions, limit)):
        _need(row, ("q_uid", "question", "option 0"), f"{questions} item {i}")
        uid = str(row["q_uid"])
        answer = truth.get(uid)
        options = [row[f"option {k}"] for k in range(5) if f"option {k}" in row]
        out.append(Question(id=uid, task="egoschema", kind="choice", video=_video(videos, uid), start=None, end=None,
                            question=row["question"], options=options,
                            answer=None if answer is None else int(answer), source="egoschema"))
    r = _reading("egoschema", out, videos)
    hidden = len(out) - len(r.scorable)
    if hidden:
        why = (f"no answer in {Path(answers).name}, whose {len(truth)} answers match {len(out) - hidden} of them"
               if answers is not None else "no answers file given")
        r.note(f"{hidden} of {len(out)} questions not scored here ({why}); EgoSchema's server scores every "
               "question from a predictions file {q_uid: option} (`eval --predictions FILE` writes it)")
    return r


def read_qaego4d(annotations: Path, videos: Path, seed: int = 0, limit: int | None = None) -> Reading:
    """QAEgo4D: [{video_id, sample_id, question, answer[, wrong_answers]}] over whole Ego4D NLQ clips
    ``<video_id>.mp4``. A QAEgo4D-Closed file (``wrong_answers`` on every row) gives 4-way choices,
    shuffled per question with ``seed`` (as reference loaders do, so the answer is not always option 0);
    otherwise open questions."""
    rows = _rows(annotations, limit)
    closed = bool(rows) and "wrong_answers" in rows[0]
    out = []
    for i, row in enumerate(rows):
        where = f"{annotations} item {i}"
        _need(row, ("video_id", "question", "answer"), where)
        if ("wrong_answers" in row) != closed:
            raise UserError(f"{where}: mixes closed (wrong_answers) and open rows; give them as two files")
        qid = str(row.get("sample_id", i))
        base = dict(id=qid, task="qaego4d", video=_video(videos, row["video_id"]), start=None, end=None,
                    question=row["question"], source="qaego4d")
        if closed:
            choices = [row["answer"], *row["wrong_answers"]]
            order = list(range(len(choices)))
            random.Random(f"{seed}:{qid}").shuffle(order)  # per question: the same order whatever `limit` keeps
            out.append(Question(kind="choice", options=[choices[k] for k in order], answer=order.index(0), **base))
        else:
            out.append(Question(kind="open", answer=str(row["answer"]), **base))
    return _reading("qaego4d", out, videos)


def _interval(text: str, where: str) -> tuple[str, str, int, int]:
    parts = str(text).split("|")
    try:
        video, view, start, end = parts
        return video, view, int(start), int(end)
    except ValueError:
        raise UserError(f"{where}: interval {text!r} is not '<video>|<fpvN>|<start>|<end>'") from None


def read_egotaskqa(annotations: Path, videos: Path, fps: float = LEMMA_FPS, limit: int | None = None) -> Reading:
    """EgoTaskQA (the official split's ``{train,val,test}_qas.json``): [{interval, question, answer,
    type [...], category [...], reasoning_type "a$b$..."}], open answers.

    ``interval`` is ``"<video>|<fpvN>|<start>|<end>"``: frames [start, end) of LEMMA's frame folder
    ``<video>/fpv<N>/img_%05d.jpg`` (file number = index + 1). The decoder reads video files, so each
    folder is encoded once to ``<videos>/<video>/fpv<N>.mp4`` at ``fps`` (docs/egobench.md): frame i
    is then at i / fps seconds. The view field is "P1"/"P2" in the generation code, "fpvN" in the
    docs; both end in the view number, which is all the official loader reads."""
    out = []
    for i, row in enumerate(_rows(annotations, limit)):
        where = f"{annotations} item {i}"
        _need(row, ("interval", "question", "answer"), where)
        video, view, start, end = _interval(row["interval"], where)
        out.append(Question(id=f"{row['interval']}#{i}", task="egotaskqa", kind="open",
                            video=_video(Path(videos) / video, f"fpv{view[-1]}"), start=start / fps, end=end / fps,
                            question=row["question"], answer=str(row["answer"]), source="egotaskqa",
                            meta={k: row[k] for k in ("type", "category", "reasoning_type") if k in row}))
    return _reading("egotaskqa", out, videos)


def read_charades_ego(annotations: Path, classes: Path, videos: Path, limit: int | None = None) -> Reading:
    """Charades-Ego: ``CharadesEgo_v1_test_only1st.csv`` (id, actions "c092 11.9 21.2;...") and
    ``Charades_v1_classes.txt`` ("c000 Holding some clothes"): one multi-label question per video
    ``<id>.mp4``; a video without actions is read with no label set."""
    names: dict[str, str] = {}
    for line in Path(classes).read_text(encoding="utf-8").splitlines():
        if line.strip():
            code, _, text = line.strip().partition(" ")
            names[code] = text
    codes = sorted(names)
    options = [names[c] for c in codes]
    out, unknown = [], Counter()
    for row in _csv(annotations)[:limit]:
        _need(row, ("id", "actions"), str(annotations))
        present = {a.split()[0] for a in row["actions"].split(";") if a.strip()}
        unknown.update(present - set(names))
        out.append(Question(id=row["id"], task="charades_ego", kind="multilabel", video=_video(videos, row["id"]),
                            start=None, end=None, question=DOING_QUESTION, options=options,
                            labels=[float(c in present) for c in codes], prefix_options=True, source="charades_ego"))
    r = _reading("charades_ego", out, videos)
    if unknown:
        r.note(f"{sum(unknown.values())} action labels name a class not in {Path(classes).name} "
               f"({', '.join(sorted(unknown)[:3])}...): ignored")
    return r


def _classes(row: dict[str, str]) -> tuple[int, list[int]]:
    return int(row["verb_class"]), [int(x) for x in re.findall(r"\d+", row["all_noun_classes"])]


def mir_relevance(clips: list[dict[str, str]], sentence_clips: list[dict[str, str]]) -> np.ndarray:
    """EK-100 MIR relevance, clips x sentences: the mean of the verb-class IoU and the noun-class IoU
    (JPoSE's ``create_relevancy_files``), a sentence having the classes of its ``narration_id``'s clip.
    float64, vectorized: well under 10 s for the 9,668 x 3,842 test set."""
    c, s = [_classes(r) for r in clips], [_classes(r) for r in sentence_clips]
    width = 1 + max((n for _, nouns in c + s for n in nouns), default=0)

    def hot(rows: list[tuple[int, list[int]]]) -> np.ndarray:
        m = np.zeros((len(rows), width), np.float32)
        for i, (_, nouns) in enumerate(rows):
            m[i, nouns] = 1.0
        return m

    c_hot, s_hot = hot(c), hot(s)
    c_verb, s_verb = (np.array([v for v, _ in rows], dtype=np.int64) for rows in (c, s))
    s_size = s_hot.sum(1)
    out = np.empty((len(c), len(s)))
    for lo in range(0, len(c), 1024):  # row blocks bound the temporaries
        rows = slice(lo, lo + 1024)
        inter = c_hot[rows] @ s_hot.T  # products of 0/1: exact integer counts
        union = c_hot[rows].sum(1)[:, None] + s_size[None, :] - inter
        block = out[rows]
        np.divide(inter, np.maximum(union, 1.0), out=block)
        block += c_verb[rows, None] == s_verb[None, :]
        block *= 0.5
    return out


def _label_rows(matrix: np.ndarray) -> list[list[float]]:
    """Matrix rows as lists sharing one float object per distinct value (the test set has 18): its
    37M labels then cost their pointers (~300 MB), not a float object each."""
    canon: dict[float, float] = {}
    out = []
    for row in matrix:
        values = row.tolist()
        out.append(list(map(canon.setdefault, values, values)))
    return out


def read_ek100_mir(annotations: Path, sentences: Path, videos: Path, relevancy: Path | None = None,
                   limit: int | None = None) -> Reading:
    """EK-100 MIR: ``EPIC_100_retrieval_test.csv`` (clips) + ``..._sentence.csv`` (narration_id, narration:
    the query texts, each with its ``narration_id``'s classes). Videos ``<videos>/<P>/videos/<video_id>.MP4``.

    Relevance: the published ``caption_relevancy_*.pkl`` matrix (clips x sentences) when given, else
    :func:`mir_relevance`. With ``limit`` only the first N clips and the sentences they need (their
    narrations and the sentences defined by them) are kept. Captions are the narrations as written
    ("Take plate."): EK-100 narrates in the imperative."""
    clips, sents = _csv(annotations), _csv(sentences)
    keys = ("narration_id", "video_id", "start_timestamp", "stop_timestamp", "narration", "verb_class",
            "all_noun_classes")
    for rows, need, path in ((clips, keys, annotations), (sents, ("narration_id", "narration"), sentences)):
        _need(rows[0] if rows else {}, need, str(path))
    matrix = None
    if relevancy is not None:
        import pickle

        with open(relevancy, "rb") as f:
            matrix = np.asarray(pickle.load(f), dtype=float)  # the published file: trusted local input
        if matrix.shape != (len(clips), len(sents)):
            raise UserError(f"{relevancy}: shape {matrix.shape}, expected clips x sentences "
                            f"({len(clips)}, {len(sents)})")
    by_id = {c["narration_id"]: c for c in clips}
    kept = clips[:limit]
    if limit is None:
        cols = list(range(len(sents)))
    else:
        said, ids = {c["narration"] for c in kept}, {c["narration_id"] for c in kept}
        cols = [j for j, s in enumerate(sents) if s["narration"] in said or s["narration_id"] in ids]
    if matrix is not None:
        labels, unknown = _label_rows(matrix[:len(kept)][:, cols]), []
    else:  # a sentence is placed by its narration_id's classes
        unknown = [j for j in cols if sents[j]["narration_id"] not in by_id]
        cols = [j for j in cols if sents[j]["narration_id"] in by_id]
        labels = _label_rows(mir_relevance(kept, [by_id[sents[j]["narration_id"]] for j in cols]))
    texts = [_sentence(sents[j]["narration"]) for j in cols]
    paths = {v: _video(Path(videos) / v.split("_")[0] / "videos", v, EPIC_EXTS) for v in {c["video_id"] for c in kept}}
    out = [Question(id=c["narration_id"], task="ek100_mir", kind="retrieval", video=paths[c["video_id"]],
                    start=_timestamp(c["start_timestamp"]), end=_timestamp(c["stop_timestamp"]),
                    question=CAPTION_QUESTION, options=texts, labels=row, source="ek100_mir")
           for c, row in zip(kept, labels)]
    r = _reading("ek100_mir", out, videos)
    if unknown:
        r.note(f"{len(unknown)} sentences name a narration_id not in {Path(annotations).name} (e.g. "
               f"{sents[unknown[0]]['narration_id']}): their classes are unknown, left out of the queries")
    return r


def read_egoplan(annotations: Path, videos: Path, ego4d_videos: Path | None = None, video_info: Path | None = None,
                 fps: float = 30.0, limit: int | None = None) -> Reading:
    """EgoPlan-Bench (``EgoPlan_validation.json``) and EgoPlan-Bench2 records: task goal, choice_a..d,
    golden_choice_idx "A".."D" (absent in EgoPlan-Test: not scored), frame numbers.

    - EgoPlan-Bench: ``video_source`` EpicKitchens -> ``<videos>/<P>/videos/<video_id>.MP4`` (the
      EPIC-KITCHENS download beside the ``rgb_frames`` the official loader reads), Ego4D ->
      ``<ego4d_videos>/<video_id>.mp4``. The clip is what the official loader shows: from the start
      of the last 4 ``task_progress_metadata`` steps finished by ``current_observation_frame`` to it.
    - EgoPlan-Bench2 (no ``video_id``): Ego4D ``<sample_id before "_">.mp4``, from
      ``task_start_frame`` to ``current_observation_frame`` (its eval.py); the question is built
      from the goal.

    Frame numbers become seconds at the video's fps from ``EPIC_100_video_info.csv``; videos it does
    not list use ``fps`` (Ego4D's canonical videos are 30 fps)."""
    rates = {r["video_id"]: float(r["fps"]) for r in _csv(video_info)} if video_info is not None else {}
    ego4d = Path(ego4d_videos if ego4d_videos is not None else videos)
    out, guessed, no_steps = [], Counter(), 0
    for i, row in enumerate(_rows(annotations, limit)):
        where = f"{annotations} item {i}"
        _need(row, ("sample_id", "task_goal", "choice_a", "current_observation_frame"), where)
        end_frame = row["current_observation_frame"]
        if "video_id" in row:  # EgoPlan-Bench
            _need(row, ("video_source",), where)
            source, vid = row["video_source"], row["video_id"]
            if source == "EpicKitchens":
                video = _video(Path(videos) / vid.split("_")[0] / "videos", vid, EPIC_EXTS)
            elif source == "Ego4D":
                video = _video(ego4d, vid)
            else:
                raise UserError(f"{where}: video_source {source!r} is not EpicKitchens or Ego4D")
            steps = [s for s in row.get("task_progress_metadata") or [] if s["stop_frame"] <= end_frame]
            start_frame = steps[-EGOPLAN_STEPS:][0]["start_frame"] if steps else None
        else:  # EgoPlan-Bench2
            _need(row, ("task_start_frame",), where)
            source, vid = "Ego4D", str(row["sample_id"]).split("_")[0]
            video, start_frame = _video(ego4d, vid), row["task_start_frame"]
        rate = rates.get(vid)
        if rate is None:
            guessed[source] += 1
            rate = fps
        end = end_frame / rate
        if start_frame is None:
            no_steps += 1
        goal = str(row["task_goal"]).strip().rstrip(".")
        question = row.get("question") or EGOPLAN_QUESTION.format(goal=goal)
        if goal.lower() not in question.lower():
            question = f"{question} My goal: {goal}."
        letters = [k for k in "abcd" if f"choice_{k}" in row]
        golden = row.get("golden_choice_idx")
        out.append(Question(
            id=str(row["sample_id"]), task="egoplan", kind="choice", video=video,
            start=max(0.0, end - 1.0) if start_frame is None else start_frame / rate, end=end,
            question=question, options=[row[f"choice_{k}"] for k in letters],
            answer=None if golden is None else "ABCD".index(str(golden).strip().upper()), source="egoplan",
            meta={"video_source": source, "fps": rate}))
    r = _reading("egoplan", out, videos, *([ego4d] if ego4d != Path(videos) else []))
    if guessed:
        table = Path(video_info).name if video_info is not None else "video_info (not given)"
        r.note(f"{sum(guessed.values())} of {len(out)} samples' videos have no fps in {table} "
               f"({', '.join(f'{s} {n}' for s, n in sorted(guessed.items()))}): frame numbers read at fps={fps:g}")
    if no_steps:
        r.note(f"{no_steps} samples have no step finished by the current frame: "
               "their clip is the last second before it")
    if hidden := len(out) - len(r.scorable):
        r.note(f"{hidden} of {len(out)} samples have no golden_choice_idx "
               "(EgoPlan-Test's answers are private): not scored")
    return r


def read_vln_qa(annotations: Path, videos: Path, limit: int | None = None) -> Reading:
    """VLN-QA (format inferred, see docs): [{id, video, question, options?, answer, start?, end?}];
    ``answer`` an option index / letter with options, else free text."""
    out = []
    for i, row in enumerate(_rows(annotations, limit)):
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
    return _reading("vln_qa", out, videos)


def read_egomcq(annotations: Path, videos: Path, limit: int | None = None) -> Reading:
    """EgoMCQ (EgoVLP): {qid: {query: {video_uid, clip_start, clip_end, clip_text}, choices: {"0".."4":
    {video_uid, clip_start, clip_end, ...}}, answer, types (1 inter-video, 2 intra-video)}}: pick the
    clip that matches the text, each clip scored by the text's log-likelihood given it."""
    out = []
    for qid, row in list(load_json(annotations).items())[:limit]:
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
    return _reading("egomcq", out, videos)


READERS: dict[str, Callable[..., Reading]] = {
    "egoschema": read_egoschema, "qaego4d": read_qaego4d, "egotaskqa": read_egotaskqa,
    "charades_ego": read_charades_ego, "ek100_mir": read_ek100_mir, "egoplan": read_egoplan,
    "vln_qa": read_vln_qa, "egomcq": read_egomcq,
}
PATH_KEYS = ("questions", "answers", "annotations", "classes", "sentences", "relevancy", "videos", "ego4d_videos",
             "video_info")


def read_egobench(data: str | Path) -> list[Reading]:
    """One :class:`Reading` per benchmark of a config JSON (see the module docstring), or per task
    of a converted suite folder."""
    data = Path(data)
    if data.is_dir():
        return [_reading(task, qs) for task, qs in read_suite(data).items()]
    config = load_json(data)
    if not isinstance(config, dict):
        raise UserError(f"{data}: expected a JSON object mapping benchmark names to their files")
    unknown = sorted(set(config) - set(READERS))
    if unknown:
        raise UserError(f"{data}: unknown benchmark {unknown[0]!r} (known: {', '.join(READERS)})")
    out = []
    for bench, spec in config.items():
        if not isinstance(spec, dict):
            raise UserError(f"{data}: {bench}: expected an object naming its files")
        kwargs = {k: (data.parent / v if k in PATH_KEYS and v is not None else v) for k, v in spec.items()}
        try:
            inspect.signature(READERS[bench]).bind(**kwargs)
        except TypeError as e:
            raise UserError(f"{data}: {bench}: {e}") from None
        out.append(READERS[bench](**kwargs))
    return out


def suite_of(readings: list[Reading], tasks: list[str] | None = None) -> dict[str, list[Question]]:
    """Task -> its scorable questions (tasks with none are left out: the readings' counts say so)."""
    known = set().union(*(r.tasks for r in readings))
    missing = [t for t in tasks or [] if t not in known]
    if missing:
        raise UserError(f"no task {missing[0]!r} (has: {', '.join(sorted(known))})")
    out: dict[str, list[Question]] = {}
    for r in readings:
        for q in r.scorable:
            if not tasks or q.task in tasks:
                out.setdefault(q.task, []).append(q)
    return out


def load_egobench(data: str | Path, tasks: list[str] | None = None) -> dict[str, list[Question]]:
    """Task -> scorable questions from a config JSON (see the module docstring) or a converted suite folder."""
    return suite_of(read_egobench(data), tasks)


def predict_choices(scorer: Any, questions: list[Question], normalize: str = "mean",
                    frames: dict | None = None, progress: bool = False) -> dict[str, int]:
    """Question id -> the option the scorer picks, as scoring picks it; answers need not be public
    (EgoSchema's server takes this mapping). ``frames``: the scoring frame cache, shared."""
    import sys

    import click

    from exo2ego_edge.eval.scoring import asked_question, clip_frames

    by_clip: dict[Any, list[Question]] = defaultdict(list)
    for q in questions:
        by_clip[q.clip_key].append(q)
    out: dict[str, int] = {}
    shown = progress and sys.stderr.isatty()
    with click.progressbar(list(by_clip.values()), label="predictions", file=sys.stderr, hidden=not shown) as bar:
        for qs in bar:
            clip = scorer.encode(clip_frames(qs[0], scorer.num_frames, scorer.image_size, frames))
            for q in qs:
                scores = scorer.option_scores(clip, asked_question(scorer, q), q.options, q.prefix_options)
                out[q.id] = int(np.argmax([s.value(normalize) for s in scores]))
    return out
