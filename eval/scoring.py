"""Benchmark scoring, identical for a PyTorch checkpoint and for an exported bundle.

A :class:`Scorer` does three things, and a metric needs nothing else:

- ``encode(frames)``: a clip's visual tokens, with whatever cache makes later questions cheap;
- ``option_scores(clip, question, options)``: for each option, the summed log-probability of
  its tokens given ``prompt prefix | visual tokens | question`` (teacher-forced), and how many
  tokens that was. Options are closed by the stop token (so "the cup" is not a free prefix of
  "the cup in the bowl") unless the question says its options are answer prefixes;
- ``answer(clip, question)``: greedy text, for open questions.

Two implementations: :class:`TorchScorer` (the Exo2Ego model: one batched forward over every
option) and :class:`BundleScorer` (the runtime on ONNX Runtime: the runtime's own prompt-prefix
and clip KV caches, the question prefilled once on top, then each option teacher-forced over that
cached prefix with the runtime's ``decoder.logits``).

**Length normalisation.** A multiple-choice prediction is the option with the highest *mean*
log-probability per token (``normalize="mean"``, the default): summed log-probabilities favour
short options, and EgoSim-Bench's options differ in length ("Nothing." vs "The red ball and the
blue block."). ``normalize="sum"`` is the unnormalised alternative. Column-wise rankings
(multi-label classes, retrieval texts) compare one text across clips, where normalisation cannot
change the order.

Metrics: accuracy (choice), mAP over classes (multilabel), text-to-clip mAP and nDCG
(retrieval), normalised exact match (open). Every score comes with its chance level: 1/options
for choice, the expected metric of random scores for mAP / nDCG (seeded Monte Carlo), the
majority answer for open questions.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from exo2ego_edge.errors import UserError
from exo2ego_edge.eval.questions import ClipKey, Question
from exo2ego_edge.prompt import CAPTION_QUESTION

log = logging.getLogger(__name__)

NORMALIZATIONS = ("mean", "sum")


@dataclass(frozen=True)
class OptionScore:
    logprob: float  # sum over the option's tokens
    tokens: int

    def value(self, normalize: str) -> float:
        return self.logprob / max(self.tokens, 1) if normalize == "mean" else self.logprob


class Scorer(Protocol):
    name: str
    num_frames: int
    image_size: int
    caption_question: str  # the model's own (ModelConfig.caption_question)

    def encode(self, frames: np.ndarray) -> Any: ...

    def option_scores(self, clip: Any, question: str, options: list[str],
                      prefix_options: bool = False) -> list[OptionScore]: ...

    def answer(self, clip: Any, question: str, max_new_tokens: int = 24) -> str: ...


def _option_ids(encode: Callable[[str], list[int]], options: list[str], stop_id: int,
                prefix_options: bool) -> list[list[int]]:
    ids = [encode(o) + ([] if prefix_options else [stop_id]) for o in options]
    empty = [o for o, i in zip(options, ids) if not i]
    if empty:
        raise UserError(f"option {empty[0]!r} has no tokens")
    return ids


# --- PyTorch -----------------------------------------------------------------------------------
class TorchScorer:
    """Exo2Ego + its tokenizer; every option of a question in one teacher-forced forward."""

    def __init__(self, model, tokenizer, name: str = "torch", device: str = "cpu", chunk: int = 64):
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.tok = tokenizer
        self.name, self.device, self.chunk = name, device, chunk
        self.num_frames = model.cfg.num_frames
        self.image_size = model.cfg.vision.image_size
        self.system = model.cfg.system_prompt
        self.caption_question = model.cfg.caption_question

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "cpu") -> TorchScorer:
        from exo2ego_edge.model import Exo2Ego
        from exo2ego_edge.prompt import TextTokenizer, get_template

        folder = Path(folder)
        model = Exo2Ego.from_pretrained(folder, student=True)  # a full stage checkpoint loads as student
        tok = TextTokenizer.from_file(folder / "tokenizer.json", get_template(model.cfg.chat_template))
        return cls(model, tok, name=f"torch:{folder}", device=device)

    def encode(self, frames: np.ndarray):
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(np.ascontiguousarray(frames))[None].to(self.device))  # (1, N, D)

    def option_scores(self, clip, question: str, options: list[str], prefix_options: bool = False) -> list[OptionScore]:
        torch = self.torch
        prompt = self.tok.prompt_ids(self.system, question)
        ids = _option_ids(self.tok.encode, options, self.tok.stop_id, prefix_options)
        out: list[OptionScore] = []
        with torch.no_grad():
            for i in range(0, len(ids), self.chunk):
                part = ids[i : i + self.chunk]
                visual = clip.expand(len(part), -1, -1)
                batch = self.model.assemble(visual, [prompt] * len(part), part)
                logits = self.model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                                        position_ids=batch.position_ids, use_cache=False).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V) predicts token t+1
                labels = batch.labels[:, 1:]
                mask = labels != -100
                picked = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask
                for s, n in zip(picked.sum(-1).tolist(), mask.sum(-1).tolist()):
                    out.append(OptionScore(float(s), int(n)))
        return out

    def answer(self, clip, question: str, max_new_tokens: int = 24) -> str:
        prompt = self.tok.prompt_ids(self.system, question)
        ids = self.model.generate(clip, [prompt], self.tok.stop_id, max_new_tokens=max_new_tokens)[0]
        return self.tok.decode(ids)


# --- bundle (runtime, ONNX Runtime) --------------------------------------------------------------
@dataclass
class BundleClip:
    tokens: np.ndarray  # (T, P, D) visual tokens from the vision graph
    prefix: Any  # runtime KVPrefix after prompt prefix + visual tokens
    questions: dict[str, tuple[Any, np.ndarray]] = field(default_factory=dict)  # text -> (KVPrefix, logits)


class BundleScorer:
    """Option log-likelihoods from a bundle through the runtime (ONNX Runtime or TensorRT engines).

    Built on the runtime's public pieces, so every cache is the runtime's own:
    ``Runtime.text_prefix()`` (prompt prefix KV, once per bundle), ``decoder.extend`` for the clip
    (visual tokens, once per clip) and for the question (once per clip and question), then a
    teacher-forced pass over each option on top of the cached question prefix that leaves every
    cache untouched: ``decoder.logits(question_prefix, option_embeds, 0)`` where the backend has
    it (ONNX Runtime), else one decode step per token (TensorRT engines keep the last row only).
    """

    def __init__(self, runtime, name: str = "bundle"):
        self.rt, self.name = runtime, name
        self.dec = runtime.decoder
        self.num_frames, self.image_size = runtime.num_frames, runtime.image_size
        self.caption_question = runtime.manifest.model.caption_question
        self.stop_id = runtime.prompt.stop_ids[0]
        self.precision = runtime.manifest.graphs["decoder"].precision

    @classmethod
    def from_bundle(cls, bundle: str | Path, device: str = "cpu", threads: int | None = None,
                    backend: str = "ort") -> BundleScorer:
        from exo2ego_edge.runtime import Runtime

        rt = Runtime.load(bundle, backend=backend, device=device, threads=threads)
        return cls(rt, name=f"bundle:{bundle}")

    def encode(self, frames: np.ndarray) -> BundleClip:
        tokens = self.rt.encode_frames(np.ascontiguousarray(frames))  # (T, P, D)
        visual = tokens.reshape(-1, tokens.shape[-1]).astype(self.rt.prompt.embed_dtype, copy=False)
        prefix, _ = self.dec.extend(self.rt.text_prefix(), visual)
        return BundleClip(tokens, prefix)

    def _question(self, clip: BundleClip, question: str):
        if question not in clip.questions:
            ids = self.rt.prompt.question_ids(question)
            prefix, last = self.dec.extend(clip.prefix, self.rt.prompt.embed(ids))
            clip.questions[question] = (prefix, _log_softmax(np.array(last, dtype=np.float32)))  # copy: reused buffer
        return clip.questions[question]

    def option_scores(self, clip: BundleClip, question: str, options: list[str],
                      prefix_options: bool = False) -> list[OptionScore]:
        qprefix, first = self._question(clip, question)  # first: log-probs of every option's first token
        out = []
        for ids in _option_ids(self.rt.prompt.encode, options, self.stop_id, prefix_options):
            score = float(first[ids[0]])
            if len(ids) > 1:  # an option's last token is predicted, never fed
                logp = _log_softmax(self._forced_logits(qprefix, ids[:-1]).astype(np.float32))
                score += float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
            out.append(OptionScore(score, len(ids)))
        return out

    def _forced_logits(self, qprefix, fed: list[int]) -> np.ndarray:
        """(len(fed), V) logits after each fed token, on top of the question prefix."""
        if hasattr(self.dec, "logits"):
            return self.dec.logits(qprefix, self.rt.prompt.embed(fed), 0)
        state = self.dec.start(qprefix)
        return np.stack([self.dec.step(state, self.rt.prompt.embed([t])).copy() for t in fed])  # copy: reused row

    def answer(self, clip: BundleClip, question: str, max_new_tokens: int = 24) -> str:
        from exo2ego_edge.runtime import Session

        return Session.from_visual_tokens(self.rt, clip.tokens).ask(question, max_new_tokens).text


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def make_scorer(checkpoint: str | Path | None = None, bundle: str | Path | None = None,
                device: str = "cpu", threads: int | None = None, backend: str = "ort") -> Scorer:
    if (checkpoint is None) == (bundle is None):
        raise UserError("give exactly one of --checkpoint and --bundle")
    if checkpoint is not None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu)")
        if threads:
            torch.set_num_threads(threads)  # on shared cores 1 thread beat 2 by ~10x here (thrashing)
        return TorchScorer.from_checkpoint(checkpoint, device=device)
    return BundleScorer.from_bundle(bundle, device=device, threads=threads, backend=backend)


# --- frames -------------------------------------------------------------------------------------
FrameCache = dict[tuple[ClipKey, int, int], np.ndarray]


def clip_frames(q: Question, num_frames: int, size: int, cache: FrameCache | None = None) -> np.ndarray:
    """The question's clip as uint8 (T, S, S, 3), decoded once per (clip, T, S) through ``cache``."""
    from exo2ego_edge.runtime.video import decode_clip

    key = (q.clip_key, num_frames, size)
    if cache is not None and key in cache:
        return cache[key]
    frames = decode_clip(q.video, q.start, q.end, num_frames, size)
    if cache is not None:
        cache[key] = frames
    return frames


# --- metrics ------------------------------------------------------------------------------------
def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of ranking by ``scores`` (desc; ties by index) against binary ``relevant``."""
    order = np.argsort(-scores, kind="stable")
    rel = relevant[order].astype(bool)
    if not rel.any():
        return float("nan")
    hits = np.cumsum(rel)
    precision = hits / np.arange(1, len(rel) + 1)
    return float(precision[rel].mean())


def ndcg(scores: np.ndarray, relevance: np.ndarray) -> float:
    """nDCG with gains ``relevance`` and discount 1/log2(rank + 1), as in EK-100 MIR."""
    order = np.argsort(-scores, kind="stable")
    discount = 1.0 / np.log2(np.arange(2, len(scores) + 2))
    ideal = float((np.sort(relevance)[::-1] * discount).sum())
    return float((relevance[order] * discount).sum() / ideal) if ideal > 0 else float("nan")


def column_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over columns with a positive (label == 1) of the AP of ranking rows by that column."""
    aps = [average_precision(scores[:, c], labels[:, c] >= 1.0) for c in range(labels.shape[1])]
    aps = [a for a in aps if not math.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def column_ndcg(scores: np.ndarray, labels: np.ndarray) -> float:
    vals = [ndcg(scores[:, c], labels[:, c]) for c in range(labels.shape[1])]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def random_expectation(metric: Callable[[np.ndarray, np.ndarray], float], labels: np.ndarray,
                       trials: int = 64, seed: int = 0) -> float:
    """The metric's expected value under random scores: its chance level (seeded Monte Carlo)."""
    rng = np.random.default_rng(seed)
    return float(np.mean([metric(rng.random(labels.shape), labels) for _ in range(trials)]))


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    text = _ARTICLES.sub(" ", re.sub(r"[^\w\s]", " ", text.lower()))
    return " ".join(text.split())


# --- running a task -----------------------------------------------------------------------------
@dataclass
class TaskResult:
    task: str
    category: str
    kind: str
    n: int
    metric: str  # the headline metric's name
    score: float  # headline metric, percent
    chance: float  # the headline metric's chance level, percent
    metrics: dict[str, float] = field(default_factory=dict)  # every metric, percent
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SuiteResult:
    scorer: str
    normalize: str
    tasks: list[TaskResult]
    seconds: float

    @property
    def categories(self) -> dict[str, tuple[float, float]]:
        """Category -> (score, chance): tasks of one category (EgoMCQ inter/intra) averaged."""
        groups: dict[str, list[TaskResult]] = defaultdict(list)
        for t in self.tasks:
            groups[t.category].append(t)
        return {c: (float(np.mean([t.score for t in ts])), float(np.mean([t.chance for t in ts])))
                for c, ts in groups.items()}

    @property
    def average(self) -> float:
        cats = self.categories
        return float(np.mean([s for s, _ in cats.values()])) if cats else float("nan")

    @property
    def chance_average(self) -> float:
        cats = self.categories
        return float(np.mean([c for _, c in cats.values()])) if cats else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "normalize": self.normalize, "seconds": round(self.seconds, 2),
                "average": self.average, "chance_average": self.chance_average,
                "categories": {c: {"score": s, "chance": ch} for c, (s, ch) in self.categories.items()},
                "tasks": [t.to_dict() for t in self.tasks]}

    def table(self) -> str:
        lines = ["| task | category | n | metric | score | chance |", "|---|---|---|---|---|---|"]
        for t in self.tasks:
            extra = ", ".join(f"{k} {v:.1f}" for k, v in t.metrics.items() if k != t.metric)
            lines.append(f"| {t.task} | {t.category} | {t.n} | {t.metric}{f' ({extra})' if extra else ''} "
                         f"| {t.score:.1f} | {t.chance:.1f} |")
        lines.append(f"| **average** (over {len(self.categories)} categories) | | | | "
                     f"**{self.average:.1f}** | {self.chance_average:.1f} |")
        return "\n".join(lines)


def score_task(scorer: Scorer, task: str, questions: list[Question], category: str | None = None,
               normalize: str = "mean", frames: FrameCache | None = None, progress: bool = False) -> TaskResult:
    """Score one task's questions; clips shared by several questions are encoded once.

    ``progress``: a bar on stderr when it is a terminal (click's: a device install has no tqdm).
    """
    import click

    if normalize not in NORMALIZATIONS:
        raise UserError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    if not questions:
        raise UserError(f"task {task}: no questions")
    private = sum(not q.scorable for q in questions)
    if private:
        raise UserError(f"task {task}: {private} of {len(questions)} questions have no public answer; score "
                        "only those that do (the benchmark's own server scores the rest)")
    kinds = {q.kind for q in questions}
    if len(kinds) != 1:
        raise UserError(f"task {task}: mixes question kinds {sorted(kinds)}")
    kind = kinds.pop()
    began = time.perf_counter()
    by_clip: dict[ClipKey, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        by_clip[q.clip_key].append(i)
    results: list[Any] = [None] * len(questions)
    shown = progress and sys.stderr.isatty()
    with click.progressbar(list(by_clip.values()), label=task, file=sys.stderr, hidden=not shown) as clips:
        for indices in clips:
            _score_clip(scorer, questions, indices, kind, normalize, frames, results)
    metrics, headline = _metrics(kind, questions, results)
    return TaskResult(task=task, category=category or task, kind=kind, n=len(questions), metric=headline,
                      score=metrics[headline], chance=metrics[f"chance_{headline}"],
                      metrics={k: v for k, v in metrics.items() if not k.startswith("chance_")},
                      seconds=time.perf_counter() - began)


def _score_clip(scorer: Scorer, questions: list[Question], indices: list[int], kind: str, normalize: str,
                frames: FrameCache | None, results: list[Any]) -> None:
    """Encode the clip the questions at ``indices`` share once, and fill in their results."""
    clip = scorer.encode(clip_frames(questions[indices[0]], scorer.num_frames, scorer.image_size, frames))
    for i in indices:
        q = questions[i]
        if kind == "clip_choice":
            results[i] = _clip_choice(scorer, q, clip, normalize, frames)
        elif kind == "open":
            results[i] = scorer.answer(clip, asked_question(scorer, q))
        else:
            opts = scorer.option_scores(clip, asked_question(scorer, q), q.options, q.prefix_options)
            results[i] = np.array([o.value(normalize) for o in opts])


def asked_question(scorer: Scorer, q: Question) -> str:
    """Suites ask for captions with CAPTION_QUESTION; a model is asked the caption question it was
    trained with (ModelConfig.caption_question), so changing that config changes what it is asked."""
    return scorer.caption_question if q.question == CAPTION_QUESTION else q.question


def _clip_choice(scorer: Scorer, q: Question, own_clip, normalize: str, frames: FrameCache | None) -> np.ndarray:
    """EgoMCQ: the query text's log-likelihood given each candidate clip."""
    out = []
    for c in q.candidates or []:
        key = (c["video"], c.get("start"), c.get("end"))
        if key == q.clip_key:
            clip = own_clip
        else:
            probe = Question(id=q.id, task=q.task, kind="open", video=c["video"], start=c.get("start"),
                             end=c.get("end"), question=q.question, answer="")
            clip = scorer.encode(clip_frames(probe, scorer.num_frames, scorer.image_size, frames))
        out.append(scorer.option_scores(clip, asked_question(scorer, q), q.options[:1], q.prefix_options)[0].value(normalize))
    return np.array(out)


def constant_answer_accuracy(questions: list[Question]) -> float:
    """Percent correct of the best *fixed* answer to a choice task: always pick one option text
    where it is offered, guess elsewhere. Well above chance, a model with no view of the video can
    score well on the task: its answers are unbalanced (one text right too often)."""
    texts = {o for q in questions for o in q.options}

    def score(text: str) -> float:
        return float(np.mean([(q.options[q.answer] == text) if text in q.options else 1 / len(q.options)
                              for q in questions]))

    return 100.0 * max(map(score, texts)) if questions else 0.0


def _metrics(kind: str, questions: list[Question], results: list[Any]) -> tuple[dict[str, float], str]:
    pct = 100.0
    if kind in ("choice", "clip_choice"):
        width = (lambda q: len(q.candidates)) if kind == "clip_choice" else (lambda q: len(q.options))
        correct = [int(np.argmax(r)) == q.answer for q, r in zip(questions, results)]
        return {"accuracy": pct * float(np.mean(correct)),
                "chance_accuracy": pct * float(np.mean([1 / width(q) for q in questions]))}, "accuracy"
    if kind == "open":
        refs = [normalise_answer(str(q.answer)) for q in questions]
        hits = [normalise_answer(a) == r for a, r in zip(results, refs)]
        majority = max(refs.count(r) for r in set(refs)) / len(refs)
        return {"exact_match": pct * float(np.mean(hits)), "chance_exact_match": pct * majority}, "exact_match"
    widths = {len(q.options) for q in questions}
    if len(widths) != 1:
        raise UserError(f"{questions[0].task}: {kind} questions must share one option list")
    scores = np.stack(results)  # (clips, classes | texts)
    labels = np.array([q.labels for q in questions], dtype=float)
    out = {"mAP": pct * column_map(scores, labels), "chance_mAP": pct * random_expectation(column_map, labels)}
    if kind == "retrieval":
        out["nDCG"] = pct * column_ndcg(scores, labels)
        out["chance_nDCG"] = pct * random_expectation(column_ndcg, labels)
    else:  # multi-label classification also reports top-1 accuracy on single-label clips
        top1 = [labels[i, int(np.argmax(scores[i]))] >= 1.0 for i in range(len(questions))]
        out["top1"] = pct * float(np.mean(top1))
        out["chance_top1"] = pct * float(np.mean(labels.sum(1) / labels.shape[1]))
    return out, "mAP"


def score_suite(scorer: Scorer, suite: dict[str, list[Question]], normalize: str = "mean",
                frames: FrameCache | None = None, category: Callable[[str], str] | None = None,
                progress: bool = False) -> SuiteResult:
    """Every task of ``suite``; ``frames`` is shared so several scorers decode each clip once."""
    from exo2ego_edge.eval.egosim_bench import category_of

    category = category or category_of
    frames = {} if frames is None else frames
    began = time.perf_counter()
    tasks = []
    for task, questions in suite.items():
        result = score_task(scorer, task, questions, category(task), normalize, frames, progress)
        log.info("%s: %s %.1f (chance %.1f) on %d in %.1f s", task, result.metric, result.score,
                 result.chance, result.n, result.seconds)
        tasks.append(result)
    return SuiteResult(scorer.name, normalize, tasks, time.perf_counter() - began)
