"""Prompt assembly from the manifest: ``prefix ids | visual tokens | question ids``, as embeddings.

Text is tokenized exactly as training did (``TextTokenizer.prompt_ids``: the rendered prefix and
question parts, encoded separately without special tokens); token embeddings are gathered from the
bundle's ``.npy`` table, memory-mapped so only the rows a prompt uses are ever read from disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exo2ego_edge.bundle import BundleError, Manifest
from exo2ego_edge.runtime.errors import PromptError


class PromptBuilder:
    def __init__(self, bundle: Path, manifest: Manifest, embed_dtype: np.dtype):
        from tokenizers import Tokenizer

        self.spec = manifest.prompt
        try:
            self.tokenizer = Tokenizer.from_file(str(bundle / manifest.tokenizer))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise BundleError(f"{bundle}: cannot load {manifest.tokenizer} ({e})") from None
        self.table = _load_array(bundle, manifest.embeddings.name)  # (V, D)
        d = manifest.decoder
        if self.table.ndim != 2 or self.table.shape[1] != d.hidden_size:
            raise BundleError(f"{bundle}: embedding table has shape {self.table.shape}, expected (V, {d.hidden_size})")
        self.scales = None  # (V,) row scales of an int8 table
        if manifest.embedding_scales is not None:
            self.scales = _load_array(bundle, manifest.embedding_scales.name)
            if self.scales.shape != self.table.shape[:1]:
                raise BundleError(f"{bundle}: embedding scales have shape {self.scales.shape}, "
                                  f"expected ({self.table.shape[0]},)")
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
        if self.scales is not None:
            return (rows * self.scales[ids, None]).astype(self.embed_dtype, copy=False)
        return rows if rows.dtype == self.embed_dtype else rows.astype(self.embed_dtype)


def _load_array(bundle: Path, name: str) -> np.ndarray:
    """A bundle's .npy, memory-mapped so only the rows used are read from disk (as a plain ndarray
    view: indexing a np.memmap costs more)."""
    try:
        return np.load(bundle / name, mmap_mode="r").view(np.ndarray)
    except ValueError as e:
        raise BundleError(f"{bundle}: cannot read {name} ({e})") from None
