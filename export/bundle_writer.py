"""Assemble a bundle's manifest: specs from the config and tokenizer, checksums, provenance.

The folder itself is written by the pipeline inside :func:`exo2ego_edge.atomic.atomic_dir`; this
module only describes what is in it, in the dataclasses of :mod:`exo2ego_edge.bundle`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import time
from pathlib import Path
from typing import Any

from exo2ego_edge import __version__
from exo2ego_edge.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    DecoderSpec,
    EngineSpec,
    GraphSpec,
    Manifest,
    Preprocessing,
    PromptSpec,
    TensorSpec,
    sha256_file,
)
from exo2ego_edge.config import ModelConfig

CHECKPOINT_FILES = ("config.json", "model.safetensors", "checkpoint.json", "tokenizer.json")
LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "optimum", "optimum-onnx", "tokenizers", "numpy")


def checkpoint_hash(folder: str | Path) -> str:
    """One sha256 over the checkpoint's files (name + content hash), so any change shows."""
    h = hashlib.sha256()
    for name in CHECKPOINT_FILES:
        path = Path(folder) / name
        if path.is_file():
            h.update(f"{name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def provenance(checkpoint: Path, opset: int, exporter: str, options: dict[str, Any],
               ort_optimization: str | None = None) -> dict[str, Any]:
    """``ort_optimization``: the ONNX Runtime level the graphs were saved at (None: as exported)."""
    info = checkpoint / "checkpoint.json"
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": checkpoint_hash(checkpoint),
        # a benchmark-only student (export/random_bundle.py): it fails parity by design
        "random_weights": info.is_file() and bool(json.loads(info.read_text()).get("random_weights")),
        "exporter": f"exo2ego-edge {__version__}",
        "onnx_exporter": f"torch.onnx ({exporter})",
        "opset": opset,
        "ort_graph_optimization": ort_optimization,
        "libraries": library_versions(),
        "options": options,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# The oldest ONNX Runtime each kind of graph loads on, tested by loading exported bundles in
# Python 3.10 venvs: float graphs and Q/DQ on 1.18.1 (the oldest tried), 8-bit MatMulNBits (our
# CPU INT8 / INT4 bundles) from 1.22.1 on (1.21.1 refuses it: "Only 4b quantization is supported").
ORT_FLOOR = "1.18"
ORT_FLOOR_MATMULNBITS_8BIT = "1.22"


def ort_requirement(folder: Path, graphs: dict[str, GraphSpec], optimized: bool) -> dict[str, str]:
    """The manifest's ``requires`` for ONNX Runtime: the exporter's exact version for graphs saved
    optimized, else the floor of the ops the graphs use."""
    import onnx
    import onnxruntime as ort

    if optimized:
        return {"onnxruntime": f"=={ort.__version__}"}
    for spec in graphs.values():
        model = onnx.load(str(folder / spec.file), load_external_data=False)
        for node in model.graph.node:
            bits = {a.name: a.i for a in node.attribute}.get("bits")
            if node.op_type == "MatMulNBits" and bits == 8:
                return {"onnxruntime": f">={ORT_FLOOR_MATMULNBITS_8BIT}"}
    return {"onnxruntime": f">={ORT_FLOOR}"}


def prompt_spec(cfg: ModelConfig, tokenizer) -> PromptSpec:
    template = tokenizer.template
    return PromptSpec(
        template=template.name, system=cfg.system_prompt, prefix=template.prefix.format(system=cfg.system_prompt),
        question=template.question, stop_ids=[tokenizer.stop_id], pad_id=tokenizer.pad_id,
    )


def decoder_spec(cfg: ModelConfig, max_seq: int, max_frames: int, kv_cache: str = "concat") -> DecoderSpec:
    lc = cfg.llm
    return DecoderSpec(
        num_layers=lc.num_layers, num_kv_heads=lc.num_kv_heads, head_dim=lc.head_dim,
        hidden_size=lc.hidden_size, vocab_size=lc.vocab_size, max_seq=max_seq, max_frames=max_frames,
        tokens_per_frame=cfg.tokens_per_frame, kv_cache=kv_cache,
    )


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the manifest itself (relative POSIX paths)."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def make_manifest(
    folder: Path,
    cfg: ModelConfig,
    tokenizer,
    graphs: dict[str, GraphSpec],
    embeddings: TensorSpec,
    tokenizer_file: str,
    max_seq: int,
    max_frames: int,
    kv_cache: str,
    provenance_: dict[str, Any],
    engines: list[EngineSpec] | None = None,
    parity: dict[str, Any] | None = None,
    embedding_scales: TensorSpec | None = None,
    requires: dict[str, str] | None = None,
    golden: str | None = None,
    costs: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of the files now in ``folder`` (checksums taken here)."""
    return Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        model=cfg,
        preprocessing=Preprocessing(
            num_frames=cfg.num_frames, image_size=cfg.vision.image_size,
            mean=list(cfg.image_mean), std=list(cfg.image_std),
        ),
        prompt=prompt_spec(cfg, tokenizer),
        decoder=decoder_spec(cfg, max_seq, max_frames, kv_cache),
        graphs=graphs,
        embeddings=embeddings,
        tokenizer=tokenizer_file,
        files=checksums(folder),
        provenance=provenance_,
        parity=parity or {},
        engines=engines or [],
        embedding_scales=embedding_scales,
        requires=requires or {},
        golden=golden,
        costs=costs or {},
    )
