"""The KV-cache bookkeeping every decoder backend shares (ONNX Runtime and TensorRT alike).

A prefix's cache is written once and only read afterwards, so any number of generations can
extend it. Each generation then alternates between two preallocated buffer sets (ping / pong),
sized from the bundle's ``max_seq``: step N reads one set and writes past + new into the other,
so no step allocates or copies a cache it does not have to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exo2ego_edge.runtime.errors import BackendError


@dataclass
class KVPrefix:
    """The KV cache of a shared prompt prefix: read-only once written, any number of readers."""

    length: int
    buffers: list[Any]  # backend buffers, one per past input, in graph order


class KVState:
    """One generation's cache: the prefix it extends and how far the ping/pong buffers go."""

    def __init__(self, prefix: KVPrefix):
        self.prefix = prefix
        self.length = prefix.length
        self.current: list[Any] | None = None  # None: the past is still the prefix itself


class PingPongDecoder:
    """Generation steps over ping/pong buffers; a backend provides ``_run`` and the buffers."""

    max_seq: int
    ping: list[Any]
    pong: list[Any]

    def start(self, prefix: KVPrefix) -> KVState:
        return KVState(prefix)

    def step(self, state: KVState, embeds: np.ndarray) -> np.ndarray:
        """Run ``embeds`` (S, D) on ``state``'s cache, advancing it; returns the last logits (V,)
        (a view of the row the next call overwrites)."""
        total = state.length + embeds.shape[0]
        self._check_room(total)
        past = state.prefix.buffers if state.current is None else state.current
        out = self.pong if state.current is self.ping else self.ping
        logits = self._run(embeds, state.length, past, out)
        state.current, state.length = out, total
        return logits

    def _check_room(self, total: int) -> None:
        if total > self.max_seq:
            # Callers check the prompt length up front; this guards the generation budget.
            raise BackendError(f"sequence of {total} tokens exceeds the bundle's max_seq {self.max_seq}")

    def _run(self, embeds: np.ndarray, past_len: int, past: list[Any], out: list[Any]) -> np.ndarray:
        raise NotImplementedError
