"""Training examples over the data layer's JSONL files and the decoded-frame caches.

An :class:`Example` points at cached frames (an ego clip, an exo clip, or both for a stage-2 pair)
and optionally carries a question/answer for the VTG loss. Prompts are tokenized once at setup.
Batches come from :class:`BatchStream`, a seeded per-epoch permutation sharded across ranks whose
position is part of the checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from exo2ego_edge.errors import UserError
from exo2ego_edge.jsonl import read_jsonl
from exo2ego_edge.data.clips import CLIP_KEYS

INSTRUCTION_KEYS = ("take_uid", "split", "ego_video", "start", "end", "question", "answer", "text_side")


@dataclass(frozen=True)
class Example:
    """One training sample. Frame fields are slots in the source's ego / exo frame caches."""

    source: str  # "clips" or "instructions"
    ego: int | None = None
    exo: int | None = None
    vtg_view: str | None = None  # which frames the LLM sees for the text: "ego", "exo" or None
    question: str | None = None
    answer: str | None = None


@dataclass
class FrameStore:
    """Cached frames per (source, view) and each source row's slot in them.

    A cache holds ``pool`` candidate frames per model frame (see :mod:`.video_cache`): :meth:`get`
    returns the centred one (the runtime's pixels); with an ``rng`` it augments for training.
    """

    frames: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    slots: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    pools: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, source: str, view: str, frames: np.ndarray, slots: np.ndarray, pool: int = 1) -> None:
        if frames.shape[1] % pool:
            raise UserError(f"{source}/{view}: {frames.shape[1]} cached frames per clip is not a multiple of {pool}")
        self.frames[(source, view)] = frames
        self.slots[(source, view)] = slots
        self.pools[(source, view)] = pool

    def slot(self, source: str, view: str, row: int) -> int:
        return int(self.slots[(source, view)][row])

    def get(self, source: str, view: str, slots: list[int], rng: np.random.Generator | None = None,
            shift: int = 0) -> torch.Tensor:
        """(B, T, S, S, 3) uint8. ``rng`` None: the centred frames. Else training augmentation:
        temporal jitter (each frame drawn from its group of ``pool`` candidates, so the order is
        kept) and a random shift of up to ``shift`` pixels (edge-padded crop, one per clip).
        Never flips: left / right carry meaning (turns, hands)."""
        arr, pool = self.frames[(source, view)], self.pools.get((source, view), 1)
        order = np.argsort(slots)  # memmap fancy indexing reads fastest in ascending order
        n, k = len(slots), arr.shape[1] // pool
        if rng is None or pool == 1:
            pick = np.broadcast_to(np.arange(k) * pool + pool // 2, (n, k))
        else:
            pick = np.arange(k) * pool + rng.integers(0, pool, size=(n, k))
        sorted_slots = np.asarray(slots)[order]
        out = np.empty((n, k, *arr.shape[2:]), dtype=np.uint8)
        if pool == 1:
            out[order] = arr[sorted_slots]
        else:
            for s, o in zip(sorted_slots, order):
                out[o] = arr[s, pick[o]]
        if rng is not None and shift > 0:
            out = _shift_crop(out, shift, rng)
        return torch.from_numpy(out)


def _shift_crop(frames: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translate each clip by a random (dy, dx) in [-shift, shift], replicating the border."""
    n, _, h, w, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
    offsets = rng.integers(0, 2 * shift + 1, size=(n, 2))
    return np.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


@dataclass
class Batch:
    """A collated micro-batch: frames per view and the tokenized prompts of the VTG rows."""

    size: int
    ego_frames: torch.Tensor | None  # (Be, T, H, W, 3) uint8, rows `ego_rows` of the batch
    exo_frames: torch.Tensor | None  # (Bx, T, H, W, 3) uint8, rows `exo_rows`
    ego_rows: list[int]
    exo_rows: list[int]
    vtg_rows: list[int]  # rows with text, in batch order
    vtg_views: list[str]
    prompts: list[tuple[list[int], list[int]]]  # for vtg_rows
    answers: list[list[int]]


class Collator:
    """Examples -> :class:`Batch`, tokenizing each (question, answer) once and memoising it."""

    def __init__(self, store: FrameStore, tokenizer, system_prompt: str, shift: int = 0):
        self.store, self.tok, self.system, self.shift = store, tokenizer, system_prompt, shift
        self._prompts: dict[str, tuple[list[int], list[int]]] = {}
        self._answers: dict[str, list[int]] = {}

    def __call__(self, examples: list[Example], rng: np.random.Generator | None = None) -> Batch:
        """``rng``: augment the frames (training; a seeded generator keeps it reproducible)."""
        ego_rows = [i for i, e in enumerate(examples) if e.ego is not None]
        exo_rows = [i for i, e in enumerate(examples) if e.exo is not None]
        vtg_rows = [i for i, e in enumerate(examples) if e.vtg_view is not None]
        return Batch(
            size=len(examples),
            ego_frames=self._frames(examples, ego_rows, "ego", rng),
            exo_frames=self._frames(examples, exo_rows, "exo", rng),
            ego_rows=ego_rows,
            exo_rows=exo_rows,
            vtg_rows=vtg_rows,
            vtg_views=[examples[i].vtg_view for i in vtg_rows],
            prompts=[self._prompt(examples[i].question) for i in vtg_rows],
            answers=[self.answer_ids(examples[i].answer) for i in vtg_rows],
        )

    def _frames(self, examples: list[Example], rows: list[int], view: str,
                rng: np.random.Generator | None) -> torch.Tensor | None:
        if not rows:
            return None
        by_source: dict[str, list[int]] = {}
        for i in rows:
            by_source.setdefault(examples[i].source, []).append(i)
        parts = [self.store.get(src, view, [getattr(examples[i], view) for i in idx], rng, self.shift)
                 for src, idx in by_source.items()]
        frames = torch.cat(parts)
        order = [i for idx in by_source.values() for i in idx]
        return frames[np.argsort(order)] if len(by_source) > 1 else frames

    def _prompt(self, question: str) -> tuple[list[int], list[int]]:
        if question not in self._prompts:
            self._prompts[question] = self.tok.prompt_ids(self.system, question)
        return self._prompts[question]

    def answer_ids(self, answer: str) -> list[int]:
        if answer not in self._answers:
            self._answers[answer] = self.tok.answer_ids(answer)
        return self._answers[answer]


class BatchStream:
    """Endless micro-batches: a seeded permutation per epoch, this rank's shard, fixed size.

    The state is (epoch, position in the epoch); restoring it replays the same batch order.
    Each epoch's order depends only on (seed, epoch), never on how many times we resumed.
    With fewer examples than one batch on every process (``data.repeat_small_stages``), an epoch
    chains as many permutations as a batch needs: batches repeat examples and keep their size.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < 1:
            raise UserError("no examples to draw batches from")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.repeats = -(-world * batch_size // n)  # 1 unless one batch per process needs more than n
        self.epoch, self.position = 0, 0
        self._order: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n * self.repeats // (self.world * self.batch_size)  # the ragged tail is dropped each epoch

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            rng = np.random.default_rng([self.seed, self.epoch])
            perm = np.concatenate([rng.permutation(self.n) for _ in range(self.repeats)])
            self._order = perm[self.rank :: self.world]
        return self._order

    def next_indices(self) -> list[int]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        start = self.position * self.batch_size
        self.position += 1
        return self._epoch_order()[start : start + self.batch_size].tolist()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise UserError(f"checkpoint was taken on {state['n']} examples, the data now has {self.n}")
        self.epoch, self.position, self._order = state["epoch"], state["position"], None


@dataclass
class Source:
    """One JSONL data file: its rows and the key its frame caches are stored under."""

    name: str
    kind: str  # "clips" | "instructions"
    path: Path
    rows: list[dict]

    @property
    def views(self) -> tuple[str, ...]:
        return ("ego", "exo") if self.kind == "clips" else ("ego",)


def load_sources(clips: list[str], instructions: list[str] | None, base: Path | None = None) -> list[Source]:
    """Read every clips / instruction file (instructions default to the clip builder's names)."""
    from exo2ego_edge.data.clips import default_instructions_path

    def resolve(p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() or base is None else base / path

    if not clips:
        raise UserError("data.clips is empty: give the Ego-ExoClip JSONL file(s) from `data build-clips`")
    clip_paths = [resolve(p) for p in clips]
    if instructions is None:
        instr_paths = [q for q in (default_instructions_path(p) for p in clip_paths) if q.is_file()]
    else:
        instr_paths = [resolve(p) for p in instructions]
    sources = [Source(f"clips{i}", "clips", p, read_jsonl(p, CLIP_KEYS)) for i, p in enumerate(clip_paths)]
    sources += [Source(f"instructions{i}", "instructions", p, read_jsonl(p, INSTRUCTION_KEYS))
                for i, p in enumerate(instr_paths)]
    return sources


def build_frame_store(sources: list[Source], num_frames: int, size: int, cache_dir: Path | None,
                      build: bool, pool: int = 1) -> FrameStore:
    """Decode (``build``) or open the frame cache of every source and view (``pool`` candidate
    frames per model frame: the temporal-jitter range)."""
    from exo2ego_edge.data.video_cache import load_or_build

    store = FrameStore()
    for src in sources:
        for view in src.views:
            frames, slots = load_or_build(src.path, src.rows, view, num_frames, size, cache_dir, build=build,
                                          pool=pool)
            store.add(src.name, view, frames, slots, pool)
    return store
