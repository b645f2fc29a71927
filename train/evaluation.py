"""Score greedy answers to "What am I doing?" on held-out ego clips: right verb, right object.

A verb counts in any inflection ("pick up": picks up / picking up / picked up / pick up, the
particle anywhere after the verb), an object in singular or plural. The object is scored twice:
its noun alone ("block"), and as the reference's phrase, the noun with the word that qualifies
it ("blue block"): the noun says whether the model knows what kind of thing it is, the phrase
whether it picked out the right one of several on the table. Chance is the majority-label
baseline of the scored clips (always answer the most frequent verb / object / pair), the stronger
of the usual two; the expected accuracy of guessing from the label distribution (sum of p^2) is
reported beside it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from exo2ego_edge.data.instructions import ing_form
from exo2ego_edge.prompt import DOING_QUESTION

log = logging.getLogger(__name__)

_IRREGULAR_PAST = {"put": "put", "take": "took", "hold": "held", "get": "got", "go": "went",
                   "make": "made", "cut": "cut", "set": "set", "throw": "threw", "lift": "lifted"}


def third_person(base: str) -> str:
    if base.endswith(("s", "sh", "ch", "x", "z", "o")):
        return base + "es"
    if len(base) > 1 and base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ies"
    return base + "s"


def past_tense(base: str) -> str:
    if base in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[base]
    if base.endswith("e"):
        return base + "d"
    if len(base) > 1 and base.endswith("y") and base[-2] not in "aeiou":
        return base[:-1] + "ied"
    ing = ing_form(base)  # reuse its consonant doubling: stop -> stopping -> stopped
    return ing[:-3] + "ed"


def verb_matches(answer: str, verb: str) -> bool:
    """Does ``answer`` use ``verb`` (base form, maybe with a particle) in any inflection?"""
    head, _, particle = verb.lower().partition(" ")
    forms = {head, third_person(head), ing_form(head), past_tense(head)}
    text = answer.lower()
    m = re.search(r"\b(?:%s)\b" % "|".join(map(re.escape, sorted(forms))), text)
    if not m:
        return False
    return not particle or re.search(rf"\b{re.escape(particle)}\b", text[m.end():]) is not None


def object_matches(answer: str, obj: str) -> bool:
    """Does ``answer`` name ``obj`` (a noun, or a phrase ending in one) in singular or plural?"""
    return re.search(rf"\b{re.escape(obj.lower())}(?:s|es)?\b", answer.lower()) is not None


_DETERMINERS = {"the", "a", "an", "my", "this", "that", "some", "another"}


def object_phrase(reference: str, obj: str) -> str:
    """The reference's object noun with the word before it ("blue block"), or the bare noun
    when a determiner precedes it ("the knife" -> "knife")."""
    m = re.search(rf"\b(\w+)\s+{re.escape(obj.lower())}(?:s|es)?\b", reference.lower())
    return f"{m.group(1)} {obj.lower()}" if m and m.group(1) not in _DETERMINERS else obj.lower()


def answer_parts(answer: str, row: dict) -> dict[str, bool]:
    """Which parts of an instruction row's reference ``answer`` gets right: the verb, the object
    noun, and the word that qualifies it (the colour in the simulator: see :func:`object_phrase`)."""
    noun = object_matches(answer, row["object"])
    qualifier = object_phrase(row["answer"], row["object"])
    return {"verb": verb_matches(answer, row["verb"]), "object": noun,
            "colour": noun and object_phrase(answer, row["object"]) == qualifier}


@dataclass
class EvalResult:
    n: int
    verb_acc: float
    object_acc: float
    both_acc: float
    chance_verb: float
    chance_object: float
    chance_both: float
    random_verb: float  # expected accuracy of guessing from the label distribution
    random_object: float
    random_both: float
    phrase_acc: float  # the object with its qualifier ("blue block"), see object_phrase
    chance_phrase: float
    random_phrase: float
    object_balanced_acc: float  # mean per-kind object accuracy; chance: 1 / kinds
    chance_object_balanced: float
    examples: list[dict] = field(default_factory=list)  # a few (question, answer, labels)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"verb {self.verb_acc:.1%} (chance {self.chance_verb:.1%}), object {self.object_acc:.1%} "
                f"(chance {self.chance_object:.1%}), both {self.both_acc:.1%} (chance {self.chance_both:.1%}), "
                f"object phrase {self.phrase_acc:.1%} (chance {self.chance_phrase:.1%}) on {self.n} held-out ego clips")


def select_doing_rows(rows: list[dict], split: str, limit: int, seed: int = 0) -> list[dict]:
    """One "What am I doing?" row with a verb and an object per distinct held-out ego clip."""
    seen, picked = set(), []
    for r in rows:
        key = (r["ego_video"], r["start"], r["end"])
        if (r.get("split") == split and r.get("question") == DOING_QUESTION and r.get("verb")
                and r.get("object") and key not in seen):
            seen.add(key)
            picked.append(r)
    if len(picked) > limit:
        keep = np.random.default_rng(seed).permutation(len(picked))[:limit]
        picked = [picked[i] for i in sorted(keep)]
    return picked


def chance_levels(labels: list) -> tuple[float, float]:
    """(majority-label accuracy, expected accuracy of guessing from the distribution)."""
    if not labels:
        return 0.0, 0.0
    counts = np.array(list(Counter(labels).values()), dtype=float) / len(labels)
    return float(counts.max()), float((counts**2).sum())


def balanced_accuracy(labels: list, correct: list[bool]) -> float:
    """Mean per-label accuracy: always giving one answer scores 1 / (number of labels), however
    frequent that label is (the object noun: "block" alone is half the clips)."""
    by_label: dict = {}
    for label, ok in zip(labels, correct):
        by_label.setdefault(label, []).append(ok)
    return float(np.mean([np.mean(oks) for oks in by_label.values()])) if by_label else 0.0


@torch.no_grad()
def answer_questions(model, tokenizer, frames: torch.Tensor, questions: list[str], batch_size: int = 16,
                     max_new_tokens: int = 24) -> list[str]:
    """Greedy answers about uint8 ego clips ``frames`` (N, T, H, W, 3), one question each."""
    device = next(model.parameters()).device
    system = model.cfg.system_prompt
    answers: list[str] = []
    for i in range(0, len(questions), batch_size):
        visual = model(frames[i : i + batch_size].to(device))  # (B, T*P, D)
        prompts = [tokenizer.prompt_ids(system, q) for q in questions[i : i + batch_size]]
        out = model.generate(visual, prompts, tokenizer.stop_id, max_new_tokens=max_new_tokens)
        answers += [tokenizer.decode(t) for t in out]
    return answers


def evaluate_doing(model, tokenizer, frames: torch.Tensor, rows: list[dict], batch_size: int = 16) -> EvalResult:
    """Ask "What am I doing?" about each clip and score verb, object and both."""
    was_training = model.training
    model.eval()
    answers = answer_questions(model, tokenizer, frames, [DOING_QUESTION] * len(rows), batch_size)
    model.train(was_training)
    parts = [answer_parts(a, r) for a, r in zip(answers, rows)]
    verb_ok, obj_ok = [p["verb"] for p in parts], [p["object"] for p in parts]
    both = [v and o for v, o in zip(verb_ok, obj_ok)]
    phrases = [object_phrase(r["answer"], r["object"]) for r in rows]
    # The answer's first mention of the noun must carry the reference's qualifier: "the red block
    # on the blue block" does not name the blue block as the one being moved.
    phrase_ok = [p["colour"] for p in parts]
    cv, rv = chance_levels([r["verb"] for r in rows])
    co, ro = chance_levels([r["object"] for r in rows])
    cb, rb = chance_levels([(r["verb"], r["object"]) for r in rows])
    cp, rp = chance_levels(phrases)
    n = max(len(rows), 1)
    return EvalResult(
        n=len(rows), verb_acc=sum(verb_ok) / n, object_acc=sum(obj_ok) / n, both_acc=sum(both) / n,
        chance_verb=cv, chance_object=co, chance_both=cb, random_verb=rv, random_object=ro, random_both=rb,
        phrase_acc=sum(phrase_ok) / n, chance_phrase=cp, random_phrase=rp,
        object_balanced_acc=balanced_accuracy([r["object"] for r in rows], obj_ok),
        chance_object_balanced=1 / max(len({r["object"] for r in rows}), 1),
        examples=[{"answer": a, "verb": r["verb"], "object": r["object"], "reference": r["answer"]}
                  for a, r in list(zip(answers, rows))[:8]],
    )
