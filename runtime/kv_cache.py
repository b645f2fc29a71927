"""The KV-cache bookkeeping every decoder backend shares (ONNX Runtime and TensorRT alike).

A prefix's cache is written once and only read afterwards, so any number of generations can
extend it. How a generation then grows its cache depends on the graph (``DecoderSpec.kv_cache``):

- "concat" (:class:`PingPongDecoder`): the graph writes past + new into its present, so each
  generation alternates between two preallocated buffer sets (ping / pong) sized from the
  bundle's ``max_seq``: step N reads one set and writes the whole cache into the other.
- "in-place" (:class:`InPlaceDecoder`): one cache, read by the graph where it lies; the graph
  returns only the new rows, which the backend stores after the filled ones. A prefix keeps a
  compact copy of its rows; it is copied into the cache only when the cache no longer holds it
  (see ``resident``), so asking several questions about one clip copies nothing.
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
    """One generation's cache: the prefix it extends, how far it has grown, and (ping/pong only)
    which buffer set holds it."""

    def __init__(self, prefix: KVPrefix):
        self.prefix = prefix
        self.length = prefix.length
        self.current: list[Any] | None = None  # None: the past is still the prefix itself


class CachedDecoder:
    """What both cache layouts share: generations start on a prefix, and ``max_seq`` bounds them."""

    max_seq: int

    def start(self, prefix: KVPrefix) -> KVState:
        return KVState(prefix)

    def _check_room(self, total: int) -> None:
        if total > self.max_seq:
            # Callers check the prompt length up front; this guards the generation budget.
            raise BackendError(f"sequence of {total} tokens exceeds the bundle's max_seq {self.max_seq}")

    def _run(self, embeds: np.ndarray, past_len: int, past: list[Any], out: list[Any]) -> np.ndarray:
        raise NotImplementedError


class PingPongDecoder(CachedDecoder):
    """Generation steps over ping/pong buffers; a backend provides ``_run`` and the buffers."""

    ping: list[Any]
    pong: list[Any]

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


class InPlaceDecoder(CachedDecoder):
    """Generation steps over one preallocated cache; a backend provides ``_run``, ``_load`` (copy
    a prefix's rows into the cache) and ``cache``.

    ``resident``: prefixes whose rows 0 .. length - 1 the cache holds. Writing after a prefix keeps
    the residents no longer than it and drops the rest; one generation at a time owns the rows after
    its prefix (``active``), and any other call that writes there ends it.
    """

    cache: list[Any]

    def __init__(self) -> None:
        self.resident: list[KVPrefix] = []
        self.active: KVState | None = None

    def step(self, state: KVState, embeds: np.ndarray) -> np.ndarray:
        """As :meth:`PingPongDecoder.step`: run ``embeds`` (S, D) on ``state``'s cache, advancing it."""
        total = state.length + embeds.shape[0]
        self._check_room(total)
        if self.active is not state:
            if state.length != state.prefix.length:
                raise BackendError("this generation's cache was overwritten by another call on the decoder: "
                                   "run one generation at a time per decoder")
            self._claim(state.prefix)
            self.active = state
        logits = self._run(embeds, state.length, self.cache, self.cache)
        state.length = total
        return logits

    def _claim(self, prefix: KVPrefix) -> None:
        """Make the cache's first rows hold ``prefix`` before a call writes the rows after it."""
        self.active = None
        kept = [p for p in self.resident if p.length <= prefix.length]
        if prefix.length == 0 or any(p is prefix for p in kept):  # an empty prefix has nothing to load
            self.resident = kept
        else:
            self._load(prefix)
            self.resident = [prefix]

    def _load(self, prefix: KVPrefix) -> None:
        raise NotImplementedError
