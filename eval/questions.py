"""The one question schema every benchmark is mapped to (EgoSim-Bench and the EgoBench adapters).

A :class:`Question` is a clip of one video plus a prompt, scored one of four ways (``kind``):

- ``choice``      pick one of ``options``; ``answer`` is the right index. Metric: accuracy.
                  ``answer`` None: the benchmark keeps it private (EgoSchema, EgoPlan-Test); such
                  a question is predicted for the benchmark's own server, never scored here.
- ``multilabel``  ``options`` is a shared class list, ``labels`` a 0/1 per class; every class is
                  scored on every clip and each class's column of scores ranks the clips.
                  Metric: mAP over classes (Charades-Ego style).
- ``retrieval``   ``options`` is the shared list of query texts, ``labels`` the graded relevance
                  (0..1) of each text to this clip. Each text's column ranks the clips: text-to-clip
                  mAP (relevance == 1 counts as relevant) and nDCG (graded), as in EK-100 MIR.
- ``clip_choice`` pick one of several *clips* (``candidates``) for one text (EgoMCQ): each clip
                  is scored by the log-likelihood of ``options[0]`` (the query text) given it.
                  Metric: accuracy.
- ``open``        free text: greedy answer, compared with the reference ``answer`` after
                  normalisation (lower case, no punctuation or articles).

Suites are folders of JSONL files, one per task, written atomically. Video paths are absolute
or relative to the JSONL file's folder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exo2ego_edge.atomic import atomic_file
from exo2ego_edge.errors import UserError
from exo2ego_edge.jsonl import read_jsonl

log = logging.getLogger(__name__)

KINDS = ("choice", "multilabel", "retrieval", "clip_choice", "open")
ClipKey = tuple[str, float | None, float | None]  # (video, start, end): one decode, one vision pass


@dataclass
class Question:
    id: str
    task: str
    kind: str
    video: str
    start: float | None  # seconds; None = from the beginning
    end: float | None  # seconds; None = to the end
    question: str
    options: list[str] = field(default_factory=list)
    answer: int | str | None = None  # choice: option index (None: not public); open: reference text
    labels: list[float] | None = None  # multilabel: 0/1 per option; retrieval: relevance per option
    # Options that are only the start of an answer ("I am picking up"): scored without the stop
    # token, because the model's real answer goes on ("... the red cup.").
    prefix_options: bool = False
    candidates: list[dict[str, Any]] | None = None  # clip_choice: [{"video", "start", "end"}, ...]
    source: str = "egosim"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise UserError(f"question {self.id!r}: {problems[0]}")

    def problems(self) -> list[str]:
        out = []
        if self.kind not in KINDS:
            out.append(f"kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if not self.question.strip():
            out.append("empty question")
        if self.kind == "choice":
            if len(self.options) < 2:
                out.append("a choice question needs at least two options")
            hidden = self.answer is None  # allowed: the benchmark keeps it private
            if not hidden and (not isinstance(self.answer, int) or not 0 <= self.answer < len(self.options)):
                out.append(f"answer {self.answer!r} is not an option index")
        if self.kind in ("multilabel", "retrieval"):
            if self.labels is None or len(self.labels) != len(self.options):
                out.append("labels must give one value per option")
        if self.kind == "clip_choice":
            n = len(self.candidates or [])
            if n < 2 or len(self.options) != 1:
                out.append("a clip_choice question needs >= 2 candidates and exactly one query text")
            if not isinstance(self.answer, int) or not 0 <= self.answer < n:
                out.append(f"answer {self.answer!r} is not a candidate index")
        if self.kind == "open" and not isinstance(self.answer, str):
            out.append("an open question needs a reference answer string")
        if self.start is not None and self.end is not None and self.end <= self.start:
            out.append(f"end {self.end} is not after start {self.start}")
        return out

    @property
    def scorable(self) -> bool:
        """False for a choice question whose answer the benchmark keeps private."""
        return self.kind != "choice" or self.answer is not None

    @property
    def clip_key(self) -> ClipKey:
        return (self.video, self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> Question:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"question {d.get('id')!r}: unknown keys {', '.join(unknown)}")
        d = dict(d)
        if base is not None and d.get("video") and not os.path.isabs(d["video"]):
            d["video"] = str(base / d["video"])
        if base is not None and d.get("candidates"):
            d["candidates"] = [{**c, "video": c["video"] if os.path.isabs(c["video"]) else str(base / c["video"])}
                               for c in d["candidates"]]
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"question {d.get('id')!r}: {e}") from None


def write_questions(path: str | Path, questions: list[Question]) -> Path:
    """One JSON object per line, written to a temp file and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        for q in questions:
            f.write(json.dumps(q.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such question file")
    out = [Question.from_dict(row, base=path.parent) for row in read_jsonl(path)]
    return out


def read_suite(folder: str | Path, tasks: list[str] | None = None) -> dict[str, list[Question]]:
    """Every ``<task>.jsonl`` in ``folder`` (or only ``tasks``), task name -> questions."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such suite folder")
    available = {p.stem: p for p in sorted(folder.glob("*.jsonl"))}
    if not available:
        raise UserError(f"{folder}: no <task>.jsonl files")
    wanted = tasks or list(available)
    missing = [t for t in wanted if t not in available]
    if missing:
        raise UserError(f"{folder}: no task {missing[0]!r} (has: {', '.join(available)})")
    return {t: read_questions(available[t]) for t in wanted}
