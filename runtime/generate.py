"""Token selection and the generation loop, in numpy: greedy or sampled, with stops and a budget.

The loop knows nothing about backends: it is handed the logits of the prompt's last position and
a ``step(token_id) -> logits`` callable that runs one decoder step. Sampling follows the usual
order (Hugging Face's logits processors): repetition penalty -> temperature -> top-k -> top-p,
then a draw from a ``numpy.random.Generator`` seeded once, so a seed fixes the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from exo2ego_edge.errors import UserError


@dataclass(frozen=True)
class Sampling:
    """How to pick each token. ``temperature == 0`` is greedy (argmax), the default.

    ``repetition_penalty`` (> 1 discourages repeats, CTRL-style: positive logits are divided by it,
    negative ones multiplied) applies to the tokens generated so far in this answer: the prompt is
    mostly visual embeddings with no token ids, so, like ``generate(inputs_embeds=...)`` in
    Hugging Face, only answer tokens count.
    """

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition penalty must be > 0, got {self.repetition_penalty}")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling()


class TokenPicker:
    """Chooses the next token from a logits row, holding the seeded random generator."""

    def __init__(self, sampling: Sampling = GREEDY):
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)

    def __call__(self, logits: np.ndarray, generated: list[int]) -> int:
        s = self.sampling
        if s.repetition_penalty != 1.0 and generated:
            logits = np.array(logits, dtype=np.float32)  # copy: the backend's buffer is reused
            seen = np.unique(np.asarray(generated, dtype=np.int64))
            vals = logits[seen]
            logits[seen] = np.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
        if s.greedy:
            return int(np.argmax(logits))
        z = np.asarray(logits, dtype=np.float64) / s.temperature
        candidates = np.arange(z.shape[-1])
        if s.top_k and s.top_k < z.shape[-1]:
            candidates = np.argpartition(-z, s.top_k - 1)[: s.top_k]
        z_c = z[candidates]
        order = np.argsort(-z_c, kind="stable")  # descending; stable keeps ties deterministic
        candidates, z_c = candidates[order], z_c[order]
        probs = np.exp(z_c - z_c[0])
        probs /= probs.sum()
        if s.top_p < 1.0:
            # Keep the smallest head whose mass reaches top_p (always at least one token).
            keep = int(np.searchsorted(np.cumsum(probs), s.top_p) + 1)
            candidates, probs = candidates[:keep], probs[:keep] / probs[:keep].sum()
        return int(candidates[self.rng.choice(len(candidates), p=probs)])


def generate(
    first_logits: np.ndarray,
    step: Callable[[int], np.ndarray],
    picker: TokenPicker,
    stop_ids: Iterable[int],
    max_new_tokens: int,
) -> Iterator[int]:
    """Yield answer token ids; the stop token ends the answer and is not yielded.

    ``step`` is only called for a token that is not the last one, so a budget of N tokens costs the
    prompt pass plus N - 1 decoder steps.
    """
    stops = set(stop_ids)
    generated: list[int] = []
    logits = first_logits
    for i in range(max_new_tokens):
        token = picker(logits, generated)
        if token in stops:
            return
        generated.append(token)
        yield token
        if i + 1 < max_new_tokens:
            logits = step(token)


class TextStream:
    """Turns token ids into text pieces as they arrive, holding back incomplete UTF-8.

    Byte-level BPE can split one character over several tokens; decoding a prefix then yields
    U+FFFD. Re-decoding the whole answer each time and emitting the new suffix once it no longer
    ends in U+FFFD keeps the pieces' concatenation equal to decoding all ids at once.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self._decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text) :], text
        return piece

    def flush(self) -> str:
        text = self._decode(self.ids)
        piece = text[len(self.text) :] if text.startswith(self.text) else ""
        self.text = text
        return piece
