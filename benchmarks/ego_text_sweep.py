"""Where does exo -> ego transfer pay off? Exo2Ego vs ego-only across the ego-text budget.

The experiment is pre-registered: DESIGN below was committed before any of its runs, and the
report writes it out unchanged above the results. Every run is reported; none is dropped.

    .venv/bin/python benchmarks/ego_text_sweep.py --workers 2     # ~1 h on 2 cores; resumable
    .venv/bin/python benchmarks/ego_text_sweep.py --report-only   # aggregate the cached runs

Each finished run is cached in WORK/<seed>/<data>/results/<variant>_seed<seed>.json (training and
scoring through ``central_experiment.train_and_score``); a rerun skips it, and --workers N
processes share the queue through claim files. Writes benchmarks/results/ego_text_sweep.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import central_experiment as ce  # noqa: E402
from made_by import commit  # noqa: E402

log = logging.getLogger("ego_text_sweep")

DESIGN = """\
## Design (pre-registered 2026-12-02, before any run)

**Question.** The paper's premise is scarce ego text next to abundant exo text. Does the
demonstrator -> learner recipe (b) beat ego-only training (a) when ego text is scarce, and where
do the two curves meet as ego text grows?

**Worlds and seeds.** Five fresh simulated worlds, data seeds 101-105 (130 takes, 30% val, 64 px),
none used before for tuning anything. Each seed's training seed is its data seed. Every arm of a
seed trains on the same world, so arms are compared paired by seed.

**Text budgets.** The train takes of a world are shuffled once per seed. The first 60% carry exo
text (fixed at every budget); of the rest, the first 2%, 5%, 15% or 40% of all train takes carry
ego text (nested: a larger budget adds takes); the remainder carry none. Videos do not change
with the budget, only which text the trainer may read (the rows' `text_side`).

**Arms** (central_experiment's variants; equal optimizer steps x batch: 440 x 16):
(a) ego-only: init on ego text only (280 steps) + stage 3 (160); (b) Exo2Ego: init 160, stage 1 20,
stage 2 100, stage 3 160. Both start both encoders from the shipped pretrained tower
(`egosim-tiny-tower`), with the configs' recipe for it. No hyper-parameter was changed for this
experiment. Ablations at the 2% budget: (c) (b) without KL, (d) (b) without cycle consistency.

**Benchmark validation** (per seed): a *rich* reference, arm (a) with ego text on every train
take, and a *blind* baseline, the same with every frame replaced by mid-grey in training and
scoring. A task is *validated* when rich beats blind by more than 2 pooled seed standard
deviations and by at least 5 points; the others are reported but left out of the average.
Beside them: chance, and the best fixed answer (`eval/scoring.constant_answer_accuracy`).

**Ego-unseen concepts** (per seed, 15% budget): the verb "push" and the object kind "ball" are
removed from ego text: every ego-text row that names them loses its text (exo text keeps it).
Arms (a) and (b); on held-out ego clips, greedy answers to "What am I doing?": verb accuracy on
clips of pushing vs of the other verbs, object-noun accuracy on clips of balls vs other kinds.

**Primary endpoint.** Per seed and arm, the validated-task average (EgoSim-Bench categories
weighted as in its headline average) at the 2% and 5% budgets, averaged over the two budgets.

**Decision rule.** Transfer pays off at low ego-text budgets if (b) - (a) on the primary endpoint
is more than 2 pooled standard deviations (sqrt of the mean of the two arms' seed variances).
Otherwise the verdict is "not shown", with the budget where the curves cross (the sign of the
paired difference changes; interpolated in log budget) and the measurements that say why.
"""

SEEDS = (101, 102, 103, 104, 105)
BUDGETS = (0.02, 0.05, 0.15, 0.40)
EXO_TEXT = 0.60
UNSEEN = {"verb": "push", "object": "ball"}
UNSEEN_BUDGET = 0.15
TOWER = "egosim-tiny-tower"
IMAGE = 64
GREY = 128


@dataclass(frozen=True)
class Run:
    """One training run: an arm (central_experiment variant key) on one seed's text dealing."""

    seed: int
    data: str  # "ego2", "ego40", "rich", "blind", "unseen15", ...
    variant: str
    after: str | None = None  # the data whose frame caches this run's (grey) caches copy

    @property
    def name(self) -> str:
        return f"{self.seed}/{self.data}/{self.variant}"


def plan() -> list[Run]:
    """Every run, in the order that gives the primary endpoint first."""
    runs = []
    for seed in SEEDS:
        runs += [Run(seed, dealing(b), v) for b in BUDGETS[:2] for v in "ab"]
    for seed in SEEDS:
        runs += [Run(seed, "rich", "a"), Run(seed, "blind", "a", after="rich")]
    for seed in SEEDS:
        runs += [Run(seed, dealing(b), v) for b in BUDGETS[2:] for v in "ab"]
    for seed in SEEDS:
        runs += [Run(seed, f"unseen{round(UNSEEN_BUDGET * 100)}", v) for v in "ab"]
        runs += [Run(seed, dealing(BUDGETS[0]), v) for v in "cd"]
    return runs


def dealing(budget: float) -> str:
    return f"ego{round(budget * 100)}"


# --- data ---------------------------------------------------------------------------------------
def world_of(work: Path, seed: int) -> Path:
    from exo2ego_edge.data.simulator import synthesize_world

    world = work / f"world{seed}"
    if not (world / "simulator" / "take_records.jsonl").is_file():
        synthesize_world(world, takes=130, seed=seed, size=IMAGE, val_frac=0.3, jobs=1, progress=False)
    return world


def text_sides(train_takes: list[str], seed: int, data: str) -> dict[str, str]:
    """take uid -> text side for a dealing: 60% exo, then the budget's share ego, the rest none."""
    order = [train_takes[i] for i in np.random.default_rng([seed, 0xE60]).permutation(len(train_takes))]
    if data in ("rich", "blind"):
        return dict.fromkeys(order, "ego")
    budget = UNSEEN_BUDGET if data.startswith("unseen") else int(data[3:]) / 100
    n_exo, n_ego = round(EXO_TEXT * len(order)), round(budget * len(order))
    return {t: "exo" if i < n_exo else "ego" if i < n_exo + n_ego else "none" for i, t in enumerate(order)}


def names_unseen(text: str) -> bool:
    from exo2ego_edge.train.evaluation import object_matches, verb_matches

    return verb_matches(text, UNSEEN["verb"]) or object_matches(text, UNSEEN["object"])


def prepare(work: Path, seed: int, data: str) -> tuple[list[str], Path]:
    """The dealing's clip files (the world's clips with re-dealt text sides) and the seed's suite."""
    from exo2ego_edge.atomic import atomic_file
    from exo2ego_edge.data.clips import default_instructions_path, split_clip_files
    from exo2ego_edge.eval.egosim_bench import write_suite
    from exo2ego_edge.jsonl import read_jsonl

    world = world_of(work, seed)
    base = work / str(seed) / "clips"
    train, val = map(Path, split_clip_files(world, base))
    suite = work / str(seed) / "egosim_bench"
    if not (suite / "suite.json").is_file():
        write_suite(world, suite, seed=seed)
    out = work / str(seed) / data / "train.jsonl"
    if not out.is_file():
        rows = read_jsonl(train)
        sides = text_sides(sorted({r["take_uid"] for r in rows}), seed, data)
        for src, dst in ((train, out), (default_instructions_path(train), default_instructions_path(out))):
            with atomic_file(dst) as f:
                for r in read_jsonl(src):
                    side = sides[r["take_uid"]]
                    if data.startswith("unseen") and side == "ego" and names_unseen(r["text"]):
                        side = "none"
                    f.write(json.dumps({**r, "text_side": side}, ensure_ascii=False) + "\n")
    return [str(out)], suite


def grey_caches(source: Path, dest: Path) -> None:
    """The blind baseline's frame caches: ``source``'s, every pixel mid-grey."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in source.glob("*.npy"):
        frames = np.load(f, mmap_mode="r")
        tmp = dest / f".{f.name}.tmp"
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=frames.shape)[:] = GREY
        os.replace(tmp, dest / f.name)


class GreyFrames(dict):
    """An EgoSim-Bench frame cache that answers every clip with mid-grey frames."""

    def __contains__(self, key) -> bool:
        return True

    def __getitem__(self, key) -> np.ndarray:
        _, frames, size = key
        return np.full((frames, size, size, 3), GREY, dtype=np.uint8)


# --- runs ---------------------------------------------------------------------------------------
def execute(run: Run, work: Path, frames: dict) -> dict:
    """Train and score one run (cached); the blind run reads its seed's rich data through grey
    frame caches, and the unseen-concept runs add their concept table."""
    from exo2ego_edge.eval.questions import read_suite

    folder = work / str(run.seed) / run.data
    clips, suite_dir = prepare(work, run.seed, run.after or run.data)
    if run.data == "blind":
        if not (folder / "frame_cache").is_dir():  # same data files -> same cache names, grey pixels
            grey_caches(work / str(run.seed) / run.after / "frame_cache", folder / "frame_cache")
        frames = GreyFrames()
    # At 2% some worlds have fewer ego instruction rows than a batch: batches repeat them, so
    # every arm keeps its steps x batch.
    record = ce.train_and_score(ce.variants(ce.Schedule())[run.variant], run.seed, clips, read_suite(suite_dir),
                                frames, folder, 1, IMAGE, TOWER, extra=("data.repeat_small_stages=true",))
    if run.data.startswith("unseen") and "concepts" not in record:
        record["concepts"] = concept_accuracy(Path(record["student"]), work / str(run.seed) / "clips")
        result_path(work, run).write_text(json.dumps(record, indent=2))
    return record


def greedy_answers(scorer, rows: list[dict], view: str, question: str) -> list[str]:
    """The scorer's model answering ``question`` greedily about each row's clip from ``view``."""
    import torch

    from exo2ego_edge.runtime.video import decode_clip
    from exo2ego_edge.train.evaluation import answer_questions

    frames = np.stack([decode_clip(r[f"{view}_video"], r["start"], r["end"], scorer.num_frames, scorer.image_size)
                       for r in rows])
    return answer_questions(scorer.model, scorer.tok, torch.from_numpy(frames), [question] * len(rows))


def held_out_clips(clips: Path) -> list[dict]:
    """One row per held-out clip moment: its best exo camera's (``val.jsonl`` has one per camera)."""
    from exo2ego_edge.jsonl import read_jsonl

    return [r for r in read_jsonl(clips / "val.jsonl") if r["is_best_exo"]]


def concept_accuracy(student: Path, clips: Path) -> dict:
    """Greedy "What am I doing?" on held-out ego clips: verb and noun accuracy, unseen vs seen."""
    from exo2ego_edge.eval.scoring import TorchScorer
    from exo2ego_edge.jsonl import read_jsonl
    from exo2ego_edge.prompt import DOING_QUESTION
    from exo2ego_edge.train.evaluation import answer_parts, select_doing_rows

    scorer = TorchScorer.from_checkpoint(student)
    rows = select_doing_rows(read_jsonl(clips / "val.instructions.jsonl"), "val", limit=10**6)
    answers = greedy_answers(scorer, rows, "ego", DOING_QUESTION)
    parts = [answer_parts(a, r) for a, r in zip(answers, rows)]
    out: dict = {}
    for part, concept in (("verb", UNSEEN["verb"]), ("object", UNSEEN["object"])):
        for group, unseen in (("unseen", True), ("seen", False)):
            oks = [p[part] for p, r in zip(parts, rows) if (r[part] == concept) == unseen]
            out[f"{part}_{group}"] = {"accuracy": 100.0 * float(np.mean(oks)) if oks else None, "n": len(oks)}
    out["examples"] = [{"reference": r["answer"], "answer": a} for r, a in zip(rows, answers)
                       if names_unseen(r["answer"])][:6]
    return out


def caption_naming(student: Path, clips: Path) -> dict:
    """How often the student's caption of a held-out clip names the unseen verb / object when the
    clip's description does, from the ego view and from the best exo view: the exo text taught
    the words, and this says whether the model says them about exo video but not about ego video."""
    from exo2ego_edge.eval.scoring import TorchScorer
    from exo2ego_edge.train.evaluation import object_matches, verb_matches

    scorer = TorchScorer.from_checkpoint(student)
    rows = [r for r in held_out_clips(clips) if names_unseen(r["text"])]
    out = {}
    for view in ("ego", "exo"):
        answers = greedy_answers(scorer, rows, view, scorer.caption_question)
        for concept, matches in (("verb", verb_matches), ("object", object_matches)):
            pairs = [(a, r) for a, r in zip(answers, rows) if matches(r["text"], UNSEEN[concept])]
            out[f"{view}_{concept}"] = {"named": 100.0 * float(np.mean([matches(a, UNSEEN[concept]) for a, _ in pairs])),
                                        "n": len(pairs)}
    return out


def exo_captions(student: Path, clips: Path) -> dict:
    """The student as a demonstrator: its captions of held-out clips from the best exo view,
    scored for the verb, and how many different captions it gives."""
    from exo2ego_edge.eval.egosim_bench import SIM_VERBS, normalise_verb
    from exo2ego_edge.eval.scoring import TorchScorer
    from exo2ego_edge.train.evaluation import verb_matches

    scorer = TorchScorer.from_checkpoint(student)
    rows = held_out_clips(clips)
    answers = greedy_answers(scorer, rows, "exo", scorer.caption_question)
    verbs = [next(v for v in map(normalise_verb, SIM_VERBS) if verb_matches(r["text"], v)) for r in rows]
    return {"verb_accuracy": 100.0 * float(np.mean([verb_matches(a, v) for a, v in zip(answers, verbs)])),
            "distinct_captions": len(set(answers)), "n": len(rows)}


def result_path(work: Path, run: Run) -> Path:
    return ce.result_file(work / str(run.seed) / run.data, run.variant, run.seed)


def claim_path(work: Path, run: Run) -> Path:
    return work / "claims" / (run.name.replace("/", "_") + ".claim")


def claim(work: Path, run: Run) -> bool:
    """Atomically take ``run`` for this worker (False: another worker has it)."""
    path = claim_path(work, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def worker(work: Path) -> None:
    """Take unclaimed runs in plan order until none is left; a blind run waits for its rich run."""
    import torch

    torch.set_num_threads(1)
    frames: dict[int, dict] = {}  # seed -> EgoSim-Bench frame cache
    while todo := [r for r in plan() if not claim_path(work, r).exists()]:
        ready = [r for r in todo if r.after is None or result_path(work, Run(r.seed, r.after, r.variant)).is_file()]
        run = next((r for r in ready if claim(work, r)), None)
        if run is None:
            time.sleep(5)
            continue
        t0 = time.perf_counter()
        execute(run, work, frames.setdefault(run.seed, {}))
        log.info("%s done in %.0f s", run.name, time.perf_counter() - t0)


def launch(work: Path, workers: int) -> None:
    """Make every world and dealing first (one process), then run the queue in ``workers`` processes."""
    for f in (work / "claims").glob("*.claim") if (work / "claims").is_dir() else []:
        f.unlink()  # claims of runs that finished are recreated below; the rest were interrupted
    for run in plan():
        if result_path(work, run).is_file():
            claim(work, run)
    for seed in SEEDS:
        for data in sorted({r.data for r in plan() if r.seed == seed and r.after is None}):
            prepare(work, seed, data)
    cmd = [sys.executable, __file__, "--work", str(work), "--worker"]
    procs = [subprocess.Popen(cmd) for _ in range(workers)]
    if any(p.wait() for p in procs):
        sys.exit("a worker failed; rerun to resume (finished runs are kept)")


# --- why: the student after each stage ----------------------------------------------------------
DIAGNOSED = "ego5"  # the budget whose students are scored after every stage
STAGES = {"a": ("init", "stage3"), "b": ("init", "stage1", "stage2", "stage3")}


def diagnose(work: Path) -> dict[str, dict]:
    """EgoSim-Bench of (a)'s and (b)'s student after every stage at the 5% budget, per seed (cached
    in WORK/diagnosis.json): where along the recipe (b) falls behind. After stage 3 it is the
    run's own student (LoRA merged)."""
    from exo2ego_edge.eval.questions import read_suite
    from exo2ego_edge.eval.scoring import TorchScorer, score_suite

    cache = work / "diagnosis.json"
    out = json.loads(cache.read_text()) if cache.is_file() else {}
    for run in (r for r in plan() if r.data.startswith("unseen")):
        record = json.loads(result_path(work, run).read_text())
        if "naming" not in record:
            record["naming"] = caption_naming(Path(record["student"]), work / str(run.seed) / "clips")
            result_path(work, run).write_text(json.dumps(record, indent=2))
    for seed in SEEDS:
        suite, frames = read_suite(work / str(seed) / "egosim_bench"), {}
        for variant, stages in STAGES.items():
            run = work / str(seed) / DIAGNOSED / "runs" / f"{variant}_seed{seed}"
            for stage in stages:
                key = f"{seed}/{variant}/{stage}"
                folder = run / "student" if stage == "stage3" else run / stage / "final"
                if key not in out:
                    out[key] = score_suite(TorchScorer.from_checkpoint(folder), suite, frames=frames).to_dict()
                if "exo_captions" not in out[key]:
                    out[key]["exo_captions"] = exo_captions(folder, work / str(seed) / "clips")
                cache.write_text(json.dumps(out))
    return out


# --- report -------------------------------------------------------------------------------------
def sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def pooled(*groups: list[float]) -> float:
    return float(np.sqrt(np.mean([sd(g) ** 2 for g in groups])))


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {sd(values):.1f}" if values else "–"


def task_average(record: dict, tasks: set[str]) -> float:
    """EgoSim-Bench's headline average restricted to ``tasks``: categories weigh one each."""
    by_category: dict[str, list[float]] = {}
    for t in record["tasks"]:
        if t["task"] in tasks:
            by_category.setdefault(t["category"], []).append(t["score"])
    return float(np.mean([np.mean(v) for v in by_category.values()]))


def validate(records: dict[Run, dict], suites: dict[int, dict]) -> list[dict]:
    """Per task: chance, best fixed answer, blind and rich over seeds, and the validation verdict."""
    from exo2ego_edge.eval.scoring import constant_answer_accuracy

    def scores(data: str, task: str) -> list[float]:
        return [next(t["score"] for t in r["tasks"] if t["task"] == task)
                for run, r in records.items() if run.data == data]

    rows = []
    for task in (t["task"] for t in next(iter(records.values()))["tasks"]):
        blind, rich = scores("blind", task), scores("rich", task)
        chance = np.mean([t["chance"] for r in records.values() for t in r["tasks"] if t["task"] == task])
        fixed = [constant_answer_accuracy(s[task]) for s in suites.values() if s[task][0].kind == "choice"]
        gap = float(np.mean(rich) - np.mean(blind)) if rich and blind else float("nan")
        noise = pooled(blind, rich)
        ok = gap > 2 * noise and gap >= 5
        why = ("rich beats blind by %.1f (> 2 x %.1f and >= 5)" % (gap, noise) if ok else
               "rich - blind %.1f is not above both 2 x %.1f and 5 points" % (gap, noise))
        rows.append({"task": task, "chance": float(chance), "fixed": float(np.mean(fixed)) if fixed else None,
                     "blind": blind, "rich": rich, "gap": gap, "noise": noise, "validated": bool(ok), "why": why})
    return rows


def crossing(budgets: list[float], diffs: list[float]) -> str:
    """Where the paired difference changes sign, interpolated in log budget."""
    for (b0, d0), (b1, d1) in zip(zip(budgets, diffs), zip(budgets[1:], diffs[1:])):
        if d0 == 0 or np.sign(d0) != np.sign(d1):
            x = np.exp(np.log(b0) + (np.log(b1) - np.log(b0)) * d0 / (d0 - d1)) if d0 != d1 else b0
            return f"the curves cross near {100 * x:.0f}% ego text (between {100 * b0:.0f}% and {100 * b1:.0f}%)"
    side = "ahead" if diffs[0] > 0 else "behind"
    return f"the curves do not cross in 2-40%: Exo2Ego is {side} at every budget"


def plot(path: Path, budgets: list[float], arms: dict[str, list[list[float]]], refs: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = [100 * b for b in budgets]
    for (label, per_budget), colour in zip(arms.items(), ("tab:blue", "tab:orange")):
        m = np.array([np.mean(v) for v in per_budget])
        s = np.array([sd(v) for v in per_budget])
        ax.plot(x, m, "o-", color=colour, label=label)
        ax.fill_between(x, m - s, m + s, color=colour, alpha=0.2)
    for (label, values), style in zip(refs.items(), ("--", ":")):
        ax.axhline(np.mean(values), color="grey", linestyle=style, label=f"{label} ({np.mean(values):.1f})")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{v:g}%" for v in x])
    ax.minorticks_off()
    ax.set_xlabel("train takes with ego text (exo text fixed at 60%)")
    ax.set_ylabel("EgoSim-Bench, validated tasks (%)")
    ax.set_title("Exo2Ego vs ego-only over the ego-text budget (mean ± std, 5 worlds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(work: Path, results: Path, wall: float, notes: Path | None = None) -> None:
    from exo2ego_edge.eval.questions import read_suite
    from exo2ego_edge.runtime.sysinfo import cpu_model

    records = {run: json.loads(result_path(work, run).read_text()) for run in plan() if result_path(work, run).is_file()}
    missing = [run.name for run in plan() if run not in records]
    suites = {seed: read_suite(work / str(seed) / "egosim_bench") for seed in SEEDS}
    rows = validate(records, suites)
    kept = {r["task"] for r in rows if r["validated"]}

    def endpoint(data: str, variant: str) -> dict[int, float]:
        return {run.seed: task_average(r, kept) for run, r in records.items() if run.data == data and run.variant == variant}

    sweep = {v: [endpoint(dealing(b), v) for b in BUDGETS] for v in "ab"}
    paired = [[sweep["b"][i][s] - sweep["a"][i][s] for s in SEEDS if s in sweep["a"][i] and s in sweep["b"][i]]
              for i in range(len(BUDGETS))]
    primary = {v: [np.mean([sweep[v][0][s], sweep[v][1][s]]) for s in SEEDS
                   if s in sweep[v][0] and s in sweep[v][1]] for v in "ab"}
    diff = float(np.mean(primary["b"]) - np.mean(primary["a"]))
    sigma = pooled(primary["a"], primary["b"])
    won = diff > 2 * sigma
    lines = ["# Exo2Ego vs ego-only across the ego-text budget", "",
             "Made by `benchmarks/ego_text_sweep.py`; the design below is the pre-registered text, unchanged.", "",
             DESIGN,
             f"## Results (generated {time.strftime('%Y-%m-%d %H:%M')}, commit {commit()}, {cpu_model()}, "
             f"{os.cpu_count()} cores, {platform.machine()})", "",
             f"{len(records)} of {len(plan())} planned runs" + (f"; missing: {', '.join(missing)}" if missing else "; none dropped")
             + f". Train + eval time summed over runs: {sum(r['train_seconds'] + r['eval_seconds'] for r in records.values()) / 60:.0f} min"
             + f" (this invocation {wall / 60:.0f} min).", "",
             "### 1. Benchmark validation (percent; mean ± std over the 5 worlds)", "",
             "| task | chance | best fixed answer | blind | rich | rich − blind | in the average |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        fixed = "–" if r["fixed"] is None else f"{r['fixed']:.1f}"
        lines.append(f"| {r['task']} | {r['chance']:.1f} | {fixed} | {mean_sd(r['blind'])} | {mean_sd(r['rich'])} | "
                     f"{r['gap']:+.1f} | {'yes' if r['validated'] else 'no'}: {r['why']} |")
    lines += ["", f"Validated tasks: {', '.join(sorted(kept)) or 'none'}.", "",
              "### 2. The sweep (validated-task average, percent; paired difference over seeds)", "",
              "| ego-text budget | (a) ego-only | (b) Exo2Ego | (b) − (a), paired | n | all tasks: (a) | all tasks: (b) |",
              "|---|---|---|---|---|---|---|"]
    everything = {v: [[r["average"] for run, r in records.items() if run.data == dealing(b) and run.variant == v]
                      for b in BUDGETS] for v in "ab"}
    for i, b in enumerate(BUDGETS):
        lines.append(f"| {100 * b:g}% | {mean_sd(list(sweep['a'][i].values()))} | {mean_sd(list(sweep['b'][i].values()))} "
                     f"| {mean_sd(paired[i])} | {len(paired[i])} | {mean_sd(everything['a'][i])} | {mean_sd(everything['b'][i])} |")
    lines += ["", "![accuracy vs ego-text budget](ego_text_sweep.png)", "",
              "### 3. Primary endpoint and verdict", "",
              f"Primary endpoint (mean of the 2% and 5% budgets): (a) {mean_sd(primary['a'])}, (b) {mean_sd(primary['b'])}. "
              f"(b) − (a) = {diff:+.1f} points; pooled std {sigma:.1f} -> {diff / sigma:+.1f} std.", "",
              f"**Verdict: {'transfer pays off at low ego-text budgets' if won else 'not shown'}** "
              f"({'more' if won else 'not more'} than 2 pooled standard deviations); "
              f"{crossing(list(BUDGETS), [float(np.mean(p)) for p in paired])}.", ""]
    ablations = {v: endpoint(dealing(BUDGETS[0]), v) for v in "bcd"}
    labels = {v: ce.variants(ce.Schedule())[v].label for v in "abcd"}
    lines += ["### 4. Ablations at the 2% budget (validated-task average)", "",
              "| variant | score | − (b), paired |", "|---|---|---|"]
    for v, by_seed in ablations.items():
        d = [by_seed[s] - ablations["b"][s] for s in by_seed if s in ablations["b"]]
        lines.append(f"| ({v}) {labels[v]} | {mean_sd(list(by_seed.values()))} | {'–' if v == 'b' else mean_sd(d)} |")
    unseen = f"unseen{round(UNSEEN_BUDGET * 100)}"
    lines += ["", f"### 5. Ego-unseen concepts ({100 * UNSEEN_BUDGET:g}% budget; \"{UNSEEN['verb']}\" and "
              f"\"{UNSEEN['object']}\" never in ego text)", "",
              "Greedy answers to \"What am I doing?\" on held-out ego clips; percent right.", "",
              "| arm | verb, unseen (push) | verb, seen | object noun, unseen (ball) | object noun, seen |",
              "|---|---|---|---|---|"]
    for v in "ab":
        cs = [r["concepts"] for run, r in records.items() if run.data == unseen and run.variant == v and "concepts" in r]
        cells = [mean_sd([c[k]["accuracy"] for c in cs if c[k]["accuracy"] is not None])
                 + (f" (n≈{round(np.mean([c[k]['n'] for c in cs]))})" if cs else "")
                 for k in ("verb_unseen", "verb_seen", "object_unseen", "object_seen")]
        lines.append(f"| ({v}) {labels[v]} | " + " | ".join(cells) + " |")
    named = {v: [r["naming"] for run, r in records.items() if run.data == unseen and run.variant == v and "naming" in r]
             for v in "ab"}
    if all(named.values()):
        lines += ["", "Captions (the caption question) of held-out clips whose description names the unseen word: "
                  "how often the caption names it, from the ego view and from the best exo view of the same moment.", "",
                  "| arm | \"push\", ego view | \"push\", exo view | \"ball\", ego view | \"ball\", exo view |",
                  "|---|---|---|---|---|"]
        for v in "ab":
            lines.append(f"| ({v}) {labels[v]} | " + " | ".join(
                mean_sd([x[k]["named"] for x in named[v]]) for k in ("ego_verb", "exo_verb", "ego_object", "exo_object")) + " |")
    diagnosis = work / "diagnosis.json"
    if diagnosis.is_file():
        scored = json.loads(diagnosis.read_text())
        lines += ["", f"### 6. Why: the student after each stage ({DIAGNOSED[3:]}% budget, mean ± std over the 5 worlds)", "",
                  "Exo-view captions: the student captioning held-out clips from the best exo camera, as the demonstrator "
                  "does (verb named right; different captions among the ~150 clips).", "",
                  "| arm | after stage | validated average | all-task average | exo-view captions: verb right | "
                  "distinct captions |", "|---|---|---|---|---|---|"]
        for variant, stages in STAGES.items():
            for stage in stages:
                rs = [scored[f"{seed}/{variant}/{stage}"] for seed in SEEDS if f"{seed}/{variant}/{stage}" in scored]
                caps = [r["exo_captions"] for r in rs if "exo_captions" in r]
                lines.append(f"| ({variant}) {labels[variant]} | {stage} | {mean_sd([task_average(r, kept) for r in rs])} | "
                             f"{mean_sd([r['average'] for r in rs])} | {mean_sd([c['verb_accuracy'] for c in caps])} | "
                             f"{mean_sd([c['distinct_captions'] for c in caps])} |")
    lines += ["", "### 7. Every run", "", "| seed | data | variant | validated average | all-task average | train s |",
              "|---|---|---|---|---|---|"]
    for run, r in records.items():
        lines.append(f"| {run.seed} | {run.data} | ({run.variant}) | {task_average(r, kept) if kept else float('nan'):.1f} | "
                     f"{r['average']:.1f} | {r['train_seconds']:.0f} |")
    if notes and notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    results.mkdir(parents=True, exist_ok=True)
    (results / "ego_text_sweep.md").write_text("\n".join(lines) + "\n")
    (results / "ego_text_sweep.json").write_text(json.dumps({
        "validation": rows, "validated_tasks": sorted(kept), "primary": primary, "difference": diff, "pooled_std": sigma,
        "verdict_met": bool(won), "runs": [{"seed": run.seed, "data": run.data, "variant": run.variant, **r}
                                           for run, r in records.items()]}, indent=1, default=float) + "\n")
    if kept and all(sweep[v][i] for v in "ab" for i in range(len(BUDGETS))):
        plot(results / "ego_text_sweep.png", list(BUDGETS),
             {labels[v]: [list(sweep[v][i].values()) for i in range(len(BUDGETS))] for v in "ab"},
             {"rich (ego text on every take)": list(endpoint("rich", "a").values()),
              "blind (grey frames)": list(endpoint("blind", "a").values())})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/ego-text-sweep"), help="worlds, runs and caches")
    p.add_argument("--results", type=Path, default=ce.RESULTS, help="where the report goes")
    p.add_argument("--workers", type=int, default=2, help="training processes (one torch thread each)")
    p.add_argument("--report-only", action="store_true", help="aggregate the finished runs, train nothing")
    p.add_argument("--notes", type=Path, default=Path(__file__).with_name("ego_text_sweep_notes.md"),
                   help="markdown appended to the report: the reading of the results")
    p.add_argument("--diagnose", action="store_true",
                   help="also score (a)'s and (b)'s students after every stage at the 5%% budget (section 7)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("exo2ego_edge.data.video_cache", "exo2ego_edge.train", "exo2ego_edge.data.clips"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    began = time.perf_counter()
    if args.worker:
        worker(args.work)
        return
    if not args.report_only:
        launch(args.work, args.workers)
    if args.diagnose:
        diagnose(args.work)
    report(args.work, args.results, time.perf_counter() - began, args.notes)
    log.info("wrote %s", args.results / "ego_text_sweep.md")


if __name__ == "__main__":
    main()
