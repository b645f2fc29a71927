"""EgoSim-Bench: eight egocentric tasks generated from the simulator's structured take records.

Only **val** takes are used: the trainer reads the train split alone, so no benchmark clip was
ever seen in training. Every answer is computed from the take record (``simulator/
take_records.jsonl``, schema in :mod:`.simulator`), never from rendered pixels or from the
atomic-description text, so the benchmark is exact by construction. Generation is deterministic
in ``seed``: each task draws from its own ``numpy`` generator seeded by (seed, task index).

| task                  | mirrors        | kind       | clip                          | chance      |
|-----------------------|----------------|------------|-------------------------------|-------------|
| action_recognition    | Charades-Ego   | multilabel | 1 s around an action          | class prior |
| clip_text_inter       | EgoMCQ inter   | choice (5) | 1 s around an action          | 20%         |
| clip_text_intra       | EgoMCQ intra   | choice (5) | 1 s around an action          | 20%         |
| episodic_memory       | QAEgo4D        | choice (4) | from the put to the take end  | 25%         |
| overall_goal          | EgoSchema      | choice (5) | the whole take                | 20%         |
| task_state            | EgoTaskQA      | choice (4) | the put-in action             | 25%         |
| next_step             | EgoPlan        | choice (4) | the current action            | 25%         |
| navigation            | VLN-QA         | choice (2) | 1 s around the head turn      | 50%         |
| text_to_clip          | EK-100 MIR     | retrieval  | 1 s around an action          | random rank |

(EgoMCQ's two settings are two tasks; the suite's headline average weights each of the paper's
eight categories once, so the two EgoMCQ scores are averaged first: see :func:`category_of`.)

Wording: clip text uses the clip builder's caption question and wearer rewrite, first-person
answers the instruction templates' forms, so a model is asked in the phrasing it was trained on.
Take records spell verbs ``pick_up``; instruction rows ``pick up``: :func:`normalise_verb` is the
one place that maps both to the same class.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.atomic import atomic_file
from exo2ego_edge.data.clips import DEFAULT_WEARER, clip_window
from exo2ego_edge.data.instructions import ing_form, rewrite_wearer
from exo2ego_edge.errors import UserError
from exo2ego_edge.eval.questions import Question, write_questions
from exo2ego_edge.prompt import CAPTION_QUESTION, DOING_QUESTION, TURN_QUESTION

log = logging.getLogger(__name__)

EGO_FILE = "aria01_214-1.mp4"  # the simulator's ego video name (simulator.EGO_FILE)
CLIP_LEN = 1.0  # the clip builder's default window: benchmark clips look like training clips
# The simulator's verb vocabulary, in take-record spelling.
SIM_VERBS = ("pick_up", "put", "push", "open", "close", "turn")


@dataclass
class SuiteSizes:
    """Upper bounds on questions per task; the defaults keep a tiny model's full run < 2 min."""

    action_recognition: int = 64
    clip_text_inter: int = 48
    clip_text_intra: int = 40
    episodic_memory: int = 40
    overall_goal: int = 40
    task_state: int = 40
    next_step: int = 40
    navigation: int = 40
    text_to_clip: int = 32  # gallery clips; every distinct text of them is a query


TASKS = tuple(SuiteSizes.__dataclass_fields__)
CATEGORIES = {
    "action_recognition": "Charades-Ego", "clip_text_inter": "EgoMCQ", "clip_text_intra": "EgoMCQ",
    "episodic_memory": "QAEgo4D", "overall_goal": "EgoSchema", "task_state": "EgoTaskQA",
    "next_step": "EgoPlan", "navigation": "VLN-QA", "text_to_clip": "EK-100 MIR",
}


def category_of(task: str) -> str:
    return CATEGORIES.get(task, task)


# --- wording ------------------------------------------------------------------------------------
def normalise_verb(verb: str) -> str:
    """``pick_up`` / ``pick up`` / ``Pick-Up`` -> ``pick up``: one spelling for every source."""
    return " ".join(verb.replace("_", " ").replace("-", " ").lower().split())


def verb_ing(verb: str) -> str:
    head, _, particle = normalise_verb(verb).partition(" ")
    return ing_form(head) + (f" {particle}" if particle else "")


def sentence(text: str) -> str:
    """Capitalise and close with a full stop: the instruction answers' shape."""
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "."


def _join(names: list[str]) -> str:
    names = [f"the {n}" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class TakeRecord:
    """A take record with the look-ups the generators need."""

    def __init__(self, record: dict[str, Any], root: Path):
        self.raw = record
        self.uid: str = record["take_uid"]
        self.name: str = record["take_name"]
        self.duration: float = float(record["duration_sec"])
        self.goal: str = record["goal"]
        self.actions: list[dict[str, Any]] = record["actions"]
        self.objects = {o["id"]: o for o in record["objects"]}
        self.video = str((root / "takes" / self.name / "frame_aligned_videos" / EGO_FILE).resolve())

    def name_of(self, oid: str | None) -> str:
        return "table" if oid == "table" else self.objects[oid]["name"]

    def action_phrase(self, a: dict[str, Any]) -> str:
        """Base-form phrase from the record's fields (not its text): "put the red ball in the bowl"."""
        verb = normalise_verb(a["verb"])
        if verb == "turn":
            return f"turn {a['direction']}"
        phrase = f"{verb} the {self.name_of(a['object'])}"
        if verb == "put":
            phrase += f" {a['relation']} the {self.name_of(a['target'])}"
        return phrase

    def caption(self, a: dict[str, Any]) -> str:
        """The clip text exactly as the clip builder gives it to the model."""
        return rewrite_wearer(a["text"], DEFAULT_WEARER)

    def window(self, a: dict[str, Any]) -> tuple[float, float]:
        return clip_window(float(a["timestamp"]), CLIP_LEN, self.duration)

    def contents(self, names: list[str]) -> str:
        return sentence(_join([self.name_of(o) for o in names])) if names else "Nothing."


def load_val_takes(world: str | Path, split: str = "val") -> list[TakeRecord]:
    root = Path(world)
    path = root / "simulator" / "take_records.jsonl"
    if not path.is_file():
        raise UserError(f"{root}: no simulator/take_records.jsonl (make the world with `data synth`)")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    takes = [TakeRecord(r, root) for r in records if r["split"] == split]
    if not takes:
        raise UserError(f"{path}: no takes in split '{split}'")
    return takes


# --- helpers --------------------------------------------------------------------------------------
def _choice(task: str, qid: str, take: TakeRecord, start, end, question: str, correct: str,
            distractors: list[str], rng: np.random.Generator, meta: dict) -> Question:
    """Shuffle the correct option among distractors; the answer index is where it lands."""
    options = [correct, *distractors]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    return Question(id=qid, task=task, kind="choice", video=take.video, start=start, end=end,
                    question=question, options=options, answer=int(np.flatnonzero(order == 0)[0]),
                    meta={"take": take.name, **meta})


def _distinct(candidates: list[str], exclude: set[str], k: int, rng: np.random.Generator) -> list[str] | None:
    """``k`` different texts of ``candidates`` outside ``exclude``, each drawn in proportion to how
    often it occurs there: a text that is often the right answer is as often a wrong option, so
    no fixed answer beats chance (drawn uniformly, the commonest goal was right in 43% of the
    overall-goal questions that offered it, against a chance of 20%)."""
    counts = Counter(c for c in candidates if c not in exclude)
    pool = sorted(counts)
    if len(pool) < k:
        return None
    weights = np.array([counts[c] for c in pool], dtype=float)
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False, p=weights / weights.sum())]


def _with_default(correct: str, default: str, candidates: list[str], k: int, rng) -> list[str] | None:
    """``k`` distractors that always include ``default`` (the answer a model can learn to give
    without looking, such as "Nothing."), unless it is the correct answer."""
    always = [] if correct == default else [default]
    rest = _distinct(candidates, {correct, default}, k - len(always), rng)
    return None if rest is None else always + rest


def _rarely(questions: list[Question], default: str, n: int, rng) -> list[Question]:
    """At most ``n`` questions, of which ``default`` answers at most the chance share (1 / options)."""
    hit = [q for q in questions if q.options[q.answer] == default]
    rest = [q for q in questions if q.options[q.answer] != default]
    width = len(questions[0].options) if questions else 1
    n_hit = min(len(hit), len(rest) // (width - 1), n // width)
    return _cap(rest, n - n_hit, rng) + _cap(hit, n_hit, rng)


def _cap(items: list, limit: int, rng: np.random.Generator) -> list:
    if len(items) <= limit:
        return items
    keep = sorted(rng.choice(len(items), size=limit, replace=False).tolist())
    return [items[i] for i in keep]


# --- the eight categories -------------------------------------------------------------------------
def gen_action_recognition(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    classes = [normalise_verb(v) for v in SIM_VERBS]
    options = [f"I am {verb_ing(v)}" for v in classes]
    items = [(t, a) for t in takes for a in t.actions]
    out = []
    for t, a in _cap(items, n, rng):
        start, end = t.window(a)
        verb = normalise_verb(a["verb"])
        out.append(Question(
            id=f"ar-{t.name}-{a['index']}", task="action_recognition", kind="multilabel",
            video=t.video, start=start, end=end, question=DOING_QUESTION, options=options,
            labels=[float(c == verb) for c in classes], prefix_options=True,
            meta={"take": t.name, "action": a["index"], "verb": verb}))
    return out


def gen_clip_text(takes: list[TakeRecord], n: int, rng, intra: bool) -> list[Question]:
    task = "clip_text_intra" if intra else "clip_text_inter"
    out = []
    items = [(t, a) for t in takes for a in t.actions]
    for t, a in _cap(items, n * 3, rng):  # oversample: intra needs takes with 4 other texts
        correct = t.caption(a)
        pool = ([t.caption(b) for b in t.actions] if intra
                else [o.caption(b) for o in takes if o.uid != t.uid for b in o.actions])
        distractors = _distinct(pool, {correct}, 4, rng)
        if distractors is None:
            continue
        start, end = t.window(a)
        out.append(_choice(task, f"{task[10:]}-{t.name}-{a['index']}", t, start, end, CAPTION_QUESTION,
                           correct, distractors, rng, {"action": a["index"]}))
        if len(out) == n:
            break
    return out


def last_put(take: TakeRecord, oid: str) -> dict[str, Any] | None:
    puts = [a for a in take.actions if a["verb"] == "put" and a["object"] == oid]
    return puts[-1] if puts else None


def place_phrase(take: TakeRecord, relation: str, target: str) -> str:
    return sentence(f"{relation} the {take.name_of(target)}")


def candidate_places(take: TakeRecord, oid: str) -> list[str]:
    """Places an object could end up in this take: containers, supports, the table."""
    out = [place_phrase(take, "on", "table")]
    for o in take.objects.values():
        if o["id"] == oid:
            continue
        if o["kind"] in ("bowl", "box"):
            out.append(place_phrase(take, "in", o["id"]))
        if o["kind"] in ("box", "block"):
            out.append(place_phrase(take, "on", o["id"]))
    return out


def gen_episodic_memory(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    """Where an object was last put. "On the table." is offered every time and is the answer of at
    most a quarter of the questions (it was the answer of many more: objects often end on the table)."""
    out = []
    for t in takes:
        table = place_phrase(t, "on", "table")
        for oid in t.objects:
            put = last_put(t, oid)
            if put is None:
                continue
            correct = place_phrase(t, put["relation"], put["target"])
            distractors = _with_default(correct, table, candidate_places(t, oid), 3, rng)
            if distractors is None:
                continue
            # From the put to the end: the object stays where it was last put (it is C's last put).
            start = round(max(0.0, float(put["start"]) - 0.25), 3)
            out.append(_choice("episodic_memory", f"em-{t.name}-{oid}", t, start, t.duration,
                               f"Where did I put the {t.name_of(oid)}?", correct, distractors, rng,
                               {"object": oid, "action": put["index"]}))
    return _rarely(out, sentence("on the table"), n, rng)


def gen_overall_goal(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    out = []
    for t in takes:
        distractors = _distinct([sentence(o.goal) for o in takes], {sentence(t.goal)}, 4, rng)
        if distractors is None:
            continue
        out.append(_choice("overall_goal", f"og-{t.name}", t, 0.0, t.duration,
                           "What was the overall goal of my activity?", sentence(t.goal), distractors, rng,
                           {"activity": t.raw["activity"]}))
    return _cap(out, n, rng)


def gen_task_state(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    """What a container held before / after a put-in. "Nothing." is an option of every question and
    the answer of at most a quarter of them: before, an empty box was the answer of half the
    questions, so a model that always said "Nothing." scored 42.5% against a chance of 25%."""
    out = []
    for t in takes:
        carriable = [o for o in t.objects if t.objects[o]["kind"] in ("cup", "ball", "block")]
        for a in t.actions:
            if a["verb"] != "put" or a["relation"] != "in":
                continue
            box = a["target"]
            before, after = a["contents_before"][box], a["contents_after"][box]
            for when, truth in (("before", before), ("after", after)):
                # Plausible wrong states: the other moment, one item more or fewer.
                states = [before, after]
                states += [sorted({*truth, o}) for o in carriable if o not in truth and o != box]
                states += [[x for x in truth if x != o] for o in truth]
                correct = t.contents(truth)
                distractors = _with_default(correct, t.contents([]), [t.contents(s) for s in states], 3, rng)
                if distractors is None:
                    continue
                q = f"What was in the {t.name_of(box)} {when} I put the {t.name_of(a['object'])} in it?"
                out.append(_choice("task_state", f"ts-{t.name}-{a['index']}-{when}", t, float(a["start"]),
                                   float(a["end"]), q, correct, distractors, rng,
                                   {"action": a["index"], "when": when, "container": box}))
    return _rarely(out, "Nothing.", n, rng)


def next_action(take: TakeRecord, k: int) -> dict[str, Any] | None:
    """The next action after ``k`` that is a step of the task (head turns are not)."""
    return next((b for b in take.actions[k + 1:] if b["verb"] != "turn"), None)


def gen_next_step(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    out = []
    other = [sentence(o.action_phrase(b)) for o in takes for b in o.actions if b["verb"] != "turn"]
    for t in takes:
        for k, a in enumerate(t.actions):
            nxt = next_action(t, k) if a["verb"] != "turn" else None
            if nxt is None:
                continue
            correct = sentence(t.action_phrase(nxt))
            same = [sentence(t.action_phrase(b)) for b in t.actions if b["verb"] != "turn"]
            # EgoPlan's candidates are steps of the same task; other takes only fill up.
            distractors = _distinct(same, {correct}, 3, rng) or _distinct(same + other, {correct}, 3, rng)
            if distractors is None:
                continue
            q = f"What should I do next to {t.goal}?"
            out.append(_choice("next_step", f"ns-{t.name}-{k}", t, float(a["start"]), float(a["end"]), q,
                               correct, distractors, rng, {"action": k, "next": nxt["index"]}))
    return _cap(out, n, rng)


def gen_navigation(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    """Which way the head turned, in the instruction template's words ("Which way am I turning?" /
    "Left.") on the 1 s window training clips have. Left and right answers come in equal numbers,
    so always saying one direction scores chance. (Asked as "Which way did I turn?" over the whole
    turn, wording no model was taught, every model of the central experiment scored exactly 50%.)"""
    by_direction: dict[str, list[Question]] = {"left": [], "right": []}
    for t in takes:
        for turn in t.raw.get("head_turns", []):
            correct = sentence(turn["direction"])
            other = "Right." if correct == "Left." else "Left."
            start, end = t.window(t.actions[turn["action_index"]])
            by_direction[turn["direction"]].append(_choice(
                "navigation", f"nav-{t.name}-{turn['action_index']}", t, start, end, TURN_QUESTION, correct,
                [other], rng, {"action": turn["action_index"]}))
    each = min(n // 2, *map(len, by_direction.values()))
    return [q for qs in by_direction.values() for q in _cap(qs, each, rng)]


def relevance(a: tuple[str, str | None], b: tuple[str, str | None]) -> float:
    """EK-100 MIR's semantic relevance for one verb and one noun each: mean of the two IoUs."""
    return 0.5 * float(a[0] == b[0]) + 0.5 * float(a[1] == b[1])


def gen_text_to_clip(takes: list[TakeRecord], n: int, rng) -> list[Question]:
    items = _cap([(t, a) for t in takes for a in t.actions], n, rng)
    classes: dict[str, tuple[str, str | None]] = {}  # text -> (verb, noun)
    for t, a in items:
        noun = t.name_of(a["object"]) if a["object"] else a.get("direction")
        classes.setdefault(t.caption(a), (normalise_verb(a["verb"]), noun))
    texts = list(classes)
    out = []
    for t, a in items:
        start, end = t.window(a)
        mine = (normalise_verb(a["verb"]), t.name_of(a["object"]) if a["object"] else a.get("direction"))
        out.append(Question(
            id=f"mir-{t.name}-{a['index']}", task="text_to_clip", kind="retrieval", video=t.video,
            start=start, end=end, question=CAPTION_QUESTION, options=texts,
            labels=[relevance(mine, classes[x]) for x in texts], meta={"take": t.name, "action": a["index"]}))
    return out


GENERATORS: dict[str, Callable[..., list[Question]]] = {
    "action_recognition": gen_action_recognition,
    "clip_text_inter": lambda takes, n, rng: gen_clip_text(takes, n, rng, intra=False),
    "clip_text_intra": lambda takes, n, rng: gen_clip_text(takes, n, rng, intra=True),
    "episodic_memory": gen_episodic_memory,
    "overall_goal": gen_overall_goal,
    "task_state": gen_task_state,
    "next_step": gen_next_step,
    "navigation": gen_navigation,
    "text_to_clip": gen_text_to_clip,
}


def generate_suite(world: str | Path, seed: int = 0, sizes: SuiteSizes | None = None,
                   tasks: list[str] | None = None) -> dict[str, list[Question]]:
    """Every task's questions from the world's val takes; deterministic in ``seed``."""
    sizes = sizes or SuiteSizes()
    takes = load_val_takes(world)
    unknown = [t for t in tasks or [] if t not in GENERATORS]
    if unknown:
        raise UserError(f"unknown EgoSim-Bench task {unknown[0]!r} (tasks: {', '.join(TASKS)})")
    out = {}
    for i, task in enumerate(TASKS):
        if tasks and task not in tasks:
            continue
        rng = np.random.default_rng([seed, i])
        out[task] = GENERATORS[task](takes, getattr(sizes, task), rng)
        if not out[task]:
            log.warning("EgoSim-Bench %s: no questions from %d val takes", task, len(takes))
    return out


def write_suite(world: str | Path, out: str | Path, seed: int = 0, sizes: SuiteSizes | None = None,
                tasks: list[str] | None = None) -> dict[str, int]:
    """Generate and write ``out/<task>.jsonl`` + ``out/suite.json``; returns questions per task."""
    out = Path(out)
    suite = generate_suite(world, seed, sizes, tasks)
    for task, questions in suite.items():
        write_questions(out / f"{task}.jsonl", questions)
    counts = {t: len(q) for t, q in suite.items()}
    with atomic_file(out / "suite.json") as f:
        json.dump({"suite": "egosim", "world": str(Path(world).resolve()), "seed": seed,
                   "sizes": vars(sizes or SuiteSizes()), "questions": counts}, f, indent=2)
    log.info("EgoSim-Bench: %s -> %s", counts, out)
    return counts
