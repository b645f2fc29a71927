"""A random-weight bundle of any preset, built through the real export path (``bench --preset``).

Latency does not depend on weight values, so a benchmark needs no trained model: a student
checkpoint with random weights (``Exo2Ego(cfg, student=True).save_pretrained``) plus a tokenizer
goes through :func:`exo2ego_edge.export.export_bundle` exactly as a trained one would, and the
bundle that comes out has the real graphs, quantization and manifest.

The tokenizer must cover the LLM's vocabulary (the runtime checks ids against it), and a preset
like edge-0.5b has 151,936 ids. No pretrained tokenizer may be downloaded, so one is made: a small
byte-level BPE is trained on a few egocentric sentences (:func:`exo2ego_edge.prompt.train_bpe`, so
prompts tokenize to a realistic number of ids), then its vocabulary is padded with never-produced
``<|reserved_N|>`` entries to exactly ``vocab_size`` ids. Token counts of a real Qwen2 tokenizer
differ, which is why the benchmark fixes the prompt length in tokens, not in text.

Built bundles are cached by (preset, precision, layers, seed, a digest of the export code): an
edge-0.5b export takes minutes on a laptop CPU, a cache hit takes a checksum pass, and any change
to the exporter, the model or the bundle format makes a new key instead of a stale hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from exo2ego_edge import __version__
from exo2ego_edge.bundle import MANIFEST, BundleError, load_manifest
from exo2ego_edge.config import ModelConfig
from exo2ego_edge.errors import UserError
from exo2ego_edge.prompt import TextTokenizer, get_template, train_bpe

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int4")

# A few sentences in the domain's register: enough for byte-level BPE merges of common words.
_CORPUS = [
    "the camera wearer picks up the red cup from the kitchen counter.",
    "I put the knife down next to the cutting board and wash my hands.",
    "What am I holding in my left hand right now?",
    "the camera wearer opens the fridge and takes out a bottle of milk.",
    "Where did I leave the keys before I went outside?",
    "I am stirring the pot on the stove with a wooden spoon.",
    "the camera wearer walks to the door and turns the handle.",
    "Which tool should I use next to tighten this screw?",
]


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "exo2ego-edge" / "bench-bundles"


def preset_config(preset: str, llm_layers: int | None = None, vision_layers: int | None = None) -> ModelConfig:
    """The preset's config, optionally with fewer layers at the same widths (a reduced variant)."""
    cfg = ModelConfig.from_name(preset)
    if llm_layers is not None:
        cfg.llm = dataclasses.replace(cfg.llm, num_layers=llm_layers)
    if vision_layers is not None:
        cfg.vision = dataclasses.replace(cfg.vision, num_layers=vision_layers)
    return cfg


def padded_tokenizer(cfg: ModelConfig, merges_vocab: int = 1024) -> TextTokenizer:
    """A byte-level BPE trained on :data:`_CORPUS`, padded to exactly ``cfg.llm.vocab_size`` ids."""
    from tokenizers import Tokenizer

    template = get_template(cfg.chat_template)
    trained = train_bpe(_CORPUS * 8, min(merges_vocab, cfg.llm.vocab_size), template, cfg.system_prompt)
    raw = json.loads(trained._tok.to_str())
    vocab: dict[str, int] = raw["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in raw.get("added_tokens", [])}
    if len(used) > cfg.llm.vocab_size:
        raise UserError(f"{cfg.name}: vocab_size {cfg.llm.vocab_size} is smaller than the base tokenizer")
    # Fill every unused id: the ids stay contiguous and the tokenizer reports vocab_size exactly.
    free = (i for i in range(cfg.llm.vocab_size) if i not in used)
    for n, token_id in enumerate(free):
        vocab[f"<|reserved_{n}|>"] = token_id
    tok = Tokenizer.from_str(json.dumps(raw))
    if tok.get_vocab_size() != cfg.llm.vocab_size:
        raise UserError(f"padded tokenizer has {tok.get_vocab_size()} ids, expected {cfg.llm.vocab_size}")
    return TextTokenizer(tok, template)


def random_student_checkpoint(cfg: ModelConfig, folder: str | Path, seed: int = 0) -> Path:
    """Save a random-weight student checkpoint (+ tokenizer.json) of ``cfg`` into ``folder``."""
    import torch

    from exo2ego_edge.model import Exo2Ego

    folder = Path(folder)
    torch.manual_seed(seed)
    model = Exo2Ego(cfg, student=True).eval()
    model.save_pretrained(folder, random_weights=True, seed=seed, preset=cfg.name)
    padded_tokenizer(cfg).save(folder / "tokenizer.json")
    return folder


def export_code() -> bytes:
    """The source a bundle's bytes depend on: the export package, the model and the bundle format
    (a cache of exported bundles keys on it, so any change to them makes a new key)."""
    from exo2ego_edge import bundle, model

    files = sorted(Path(__file__).resolve().parent.glob("*.py")) + [Path(bundle.__file__), Path(model.__file__)]
    return b"".join(f.read_bytes() for f in files)


def _cache_key(cfg: ModelConfig, precision: str, seed: int, options: dict) -> str:
    spec = json.dumps({"config": cfg.to_dict(), "options": options}, sort_keys=True, default=str)
    digest = hashlib.sha256(spec.encode() + export_code()).hexdigest()[:10]
    return f"{cfg.name}-L{cfg.llm.num_layers}-{precision}-s{seed}-v{__version__}-{digest}"


def build_random_bundle(
    preset: str,
    precision: str = "fp32",
    *,
    seed: int = 0,
    llm_layers: int | None = None,
    vision_layers: int | None = None,
    max_frames: int | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    **export_options,
) -> Path:
    """A bundle of ``preset`` at ``precision`` with random weights (cached; see the module doc)."""
    from exo2ego_edge.export import export_bundle

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    cfg = preset_config(preset, llm_layers, vision_layers)
    # Random weights give degenerate greedy answers, so export's parity gate would refuse the
    # bundle: force keeps it (the manifest records parity.passed false). A short parity run keeps
    # the build fast; latency does not depend on it.
    options = {"force": True, "parity_samples": 1, "max_new_tokens": 4, "seed": seed,
               "max_frames": max(max_frames or 0, cfg.num_frames), **export_options}
    out = Path(cache_dir or default_cache_dir()) / _cache_key(cfg, precision, seed, options)
    if out.is_dir() and not rebuild:
        try:
            load_manifest(out, verify=True)
            log.info("using cached random-weight bundle %s", out)
            return out
        except BundleError as e:
            log.warning("cached bundle %s is unusable (%s); rebuilding", out, e)
    if out.is_dir() and not (out / MANIFEST).is_file():
        shutil.rmtree(out)  # our own damaged cache entry: export's --overwrite replaces only bundles
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="random-ckpt-", dir=out.parent) as tmp:
        checkpoint = random_student_checkpoint(cfg, Path(tmp) / "checkpoint", seed)
        log.info("exporting random-weight %s at %s to %s", cfg.name, precision, out)
        export_bundle(checkpoint, out, precision=precision, overwrite=True, **options)
    return out


def remove_cached(preset: str, cache_dir: str | Path | None = None) -> None:
    """Drop every cached bundle of ``preset`` (used when the export code changed under a version)."""
    for path in Path(cache_dir or default_cache_dir()).glob(f"{preset}-*"):
        shutil.rmtree(path, ignore_errors=True)
