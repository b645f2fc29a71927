"""Prompt assembly from the manifest: ``prefix ids | visual tokens | question ids``, as embeddings.

Text is tokenized exactly as training did (``TextTokenizer.prompt_ids``: the rendered prefix and
question parts, encoded separately without special tokens); token embeddings are gathered from the
bundle's ``.npy`` table, memory-mapped so only the rows a prompt uses are ever read from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exo2ego_edge.bundle import EMBEDDING_INT4_BLOCK, BundleError, Manifest
from exo2ego_edge.runtime.errors import PromptError


class PromptBuilder:
    def __init__(self, bundle: Path, manifest: Manifest, embed_dtype: np.dtype):
        from tokenizers import Tokenizer

        self.spec = manifest.prompt
        try:
            self.tokenizer = Tokenizer.from_file(str(bundle / manifest.tokenizer))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise BundleError(f"{bundle}: cannot load {manifest.tokenizer} ({e})") from None
        self.table = _load_array(bundle, manifest.embeddings.name)  # (V, D), int4: (V, D / 2) bytes
        self.int4 = manifest.embeddings.dtype == "int4"
        d = manifest.decoder
        width = d.hidden_size // 2 if self.int4 else d.hidden_size
        if self.table.ndim != 2 or self.table.shape[1] != width:
            raise BundleError(f"{bundle}: embedding table has shape {self.table.shape}, expected (V, {width})")
        self.scales = None  # int8 table: (V,) row scales; int4: (V, D / EMBEDDING_INT4_BLOCK) block scales
        if manifest.embedding_scales is not None:
            self.scales = _load_array(bundle, manifest.embedding_scales.name)
            want = self.table.shape[:1] + ((d.hidden_size // EMBEDDING_INT4_BLOCK,) if self.int4 else ())
            if self.scales.shape != want:
                raise BundleError(f"{bundle}: embedding scales have shape {self.scales.shape}, expected {want}")
        self.embed_dtype = np.dtype(embed_dtype)
        self.stop_ids = list(self.spec.stop_ids)
        self.prefix_ids = self.encode(self.spec.prefix)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def question_ids(self, question: str) -> list[int]:
        if not question or not question.strip():
            raise PromptError("the question is empty")
        return self.encode(self.spec.question.format(question=question))

    def embed(self, ids: list[int]) -> np.ndarray:
        """(len(ids), D) embeddings in the decoder's input dtype: one gather, one copy."""
        ids = np.asarray(ids, dtype=np.int64)
        rows = self.table[ids]
        if self.int4:
            return _int4_values(rows, self.scales[ids]).astype(self.embed_dtype, copy=False)
        if self.scales is not None:
            return (rows * self.scales[ids, None]).astype(self.embed_dtype, copy=False)
        return rows if rows.dtype == self.embed_dtype else rows.astype(self.embed_dtype)


def _int4_values(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(N, D) float32 from (N, D / 2) nibble-packed int4 rows and their (N, D / block) scales."""
    low = (packed & 0x0F).astype(np.int8)
    high = (packed >> 4).astype(np.int8)
    q = np.stack([low, high], axis=-1).reshape(len(packed), -1)
    q = np.where(q > 7, q - 16, q).astype(np.float32)  # two's complement nibbles
    return (q.reshape(len(packed), scales.shape[1], -1) * scales[..., None].astype(np.float32)).reshape(q.shape)


def _load_array(bundle: Path, name: str) -> np.ndarray:
    """A bundle's .npy, memory-mapped so only the rows used are read from disk (as a plain ndarray
    view: indexing a np.memmap costs more)."""
    try:
        return np.load(bundle / name, mmap_mode="r").view(np.ndarray)
    except ValueError as e:
        raise BundleError(f"{bundle}: cannot read {name} ({e})") from None
