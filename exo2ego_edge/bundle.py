"""The bundle: the contract between export and the runtime.

A bundle is a folder: ``manifest.json`` + ``vision.onnx`` + ``decoder.onnx`` + the token
embedding table + ``tokenizer.json`` [+ ``engines/``]. The manifest is parsed strictly (unknown
keys are refused, like ONNX Runtime GenAI's genai_config.json) and every file's sha256 is checked
before anything runs, so a bundle that does not match is refused with a one-line reason.

Graph interface (names are part of the contract):

- vision: ``frames`` uint8 (N, H, W, 3) RGB at the model's size -> ``visual_tokens`` float
  (N, P, D). Frames are the batch axis: every op is per frame, so a live source encodes each new
  frame once and caches its P tokens.
- decoder: ``inputs_embeds`` (B, S, D), ``attention_mask`` int64 (B, past + S), ``position_ids``
  int64 (B, S), ``logits_to_keep`` int64 scalar, ``past_key_values.{i}.key|value``
  (B, kv_heads, past, head_dim) -> ``logits`` (B, K, V) and ``present.{i}.key|value``
  (B, kv_heads, past + S, head_dim).

  KV cache layouts (``DecoderSpec.kv_cache``): "concat" is the graph above (GPU targets; what
  TensorRT runs): each call writes past + new into a fresh present. "in-place" (CPU targets, from
  format 5 on): ``past_key_values.*`` are the runtime's cache buffers as they are,
  (B, kv_heads, C, head_dim) with room after the filled rows, which ``attention_mask`` (width
  C + S) marks 0; ``present.*`` are only the S new rows (B, kv_heads, S, head_dim), which the
  runtime stores after the filled ones, so a call copies no cache.

  ``logits_to_keep`` = k (Hugging Face's name and meaning): the logits cover the last
  K = min(k, S) new positions, or all S for k = 0. Generation passes 1 (a prefill's vocabulary
  projection is then one row, not S), option log-likelihood the option's length, a teacher-forced
  check S. Bundles exported before this input existed do not list it in ``graphs.decoder.inputs``
  and always return all S positions; the runtime reads the manifest to tell the two apart.
  TensorRT engines are built with k fixed to 1 and have no such input: the runtime needs one row.

- decoder_step (optional, from format 6 on): a second decoder with the same interface and cache
  layout that the runtime runs for one-token calls (decode steps) while ``decoder`` runs the
  longer ones (prefill). The CPU target's ``--cpu-decoder hybrid`` writes one: its prefill on the
  CPU's integer GEMM, its steps on MatMulNBits' GEMV, the faster kernel at one row on CPUs
  without AMX. Both read and write the same cache.

No torch here: the runtime imports this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exo2ego_edge.atomic import atomic_file
from exo2ego_edge.config import ModelConfig
from exo2ego_edge.errors import UserError

FORMAT = "exo2ego-edge-bundle"
# 1: first format. 2: adds the optional `embedding_scales` (an int8 token-embedding table).
# 3: adds `requires` (the ONNX Runtime the graphs load on), the optional `golden` inputs, `costs`.
# 4: adds `GraphSpec.matmuls` and the int4 token-embedding table (see `embedding_scales`).
# 5: adds `DecoderSpec.kv_cache` (the in-place KV cache).
# 6: adds the optional `decoder_step` graph (one-token calls).
FORMAT_VERSION = 6
MANIFEST = "manifest.json"
LOGITS_TO_KEEP = "logits_to_keep"  # the decoder input choosing how many positions get logits
# Dynamic axis names, read by the runtime and by TensorRT profiles.
FRAMES, BATCH, SEQ, PAST, TOTAL = "frames", "batch", "sequence", "past_sequence", "total_sequence"
KV_CACHES = ("concat", "in-place")
EMBEDDING_INT4_BLOCK = 32  # values per scale in an int4 token-embedding table
KEPT = "kept_sequence"  # positions the logits cover: min(logits_to_keep, sequence), all for 0
STEP_DECODER = "decoder_step"  # the optional graph for one-token decoder calls


def decode_graph(graphs: dict[str, GraphSpec]) -> GraphSpec:
    """The graph one-token decoder calls run on: the step graph where the bundle has one."""
    return graphs.get(STEP_DECODER, graphs["decoder"])


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


class BundleError(UserError):
    """A bundle that cannot be used: missing, tampered, malformed or of another format version."""


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "uint8", "float32", "float16", "int64"
    shape: list[int | str]  # ints are fixed, strings name a dynamic axis


@dataclass
class GraphSpec:
    file: str
    precision: str  # "fp32" | "fp16" | "int8" | "int4"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int = 17
    # The graph TensorRT builds its engine from, when not ``file``: the decoder with
    # ``logits_to_keep`` fixed to 1, written by the exporter for GPU targets (no onnx on the device).
    trt_file: str | None = None
    # How the weight MatMuls compute: "float", "weight-only" (MatMulNBits: integer weights, float
    # activations), "integer-dynamic" / "integer-static" (INT8 activations too), "qdq" (GPU Q/DQ).
    # None in bundles from before it was recorded.
    matmuls: str | None = None

    def __post_init__(self) -> None:
        self.inputs = [_strict(TensorSpec, t, f"graph {self.file} input") for t in self.inputs]
        self.outputs = [_strict(TensorSpec, t, f"graph {self.file} output") for t in self.outputs]


@dataclass
class Preprocessing:
    num_frames: int
    image_size: int
    mean: list[float]
    std: list[float]
    sampling: str = "uniform"  # frames spread uniformly over the clip
    frame_layout: str = "NHWC-uint8-RGB"


@dataclass
class PromptSpec:
    template: str
    system: str
    prefix: str  # text before the visual tokens ({system} already filled in)
    question: str  # text after them, with a "{question}" placeholder
    stop_ids: list[int]
    pad_id: int


@dataclass
class DecoderSpec:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_seq: int  # largest past + new tokens the export was sized for
    max_frames: int
    tokens_per_frame: int
    kv_cache: str = "concat"  # one of KV_CACHES; bundles before format 5 are "concat"

    def __post_init__(self) -> None:
        if self.kv_cache not in KV_CACHES:
            raise BundleError(f"manifest: decoder.kv_cache '{self.kv_cache}' is not one of {', '.join(KV_CACHES)}")


@dataclass
class EngineSpec:
    file: str
    graph: str  # "vision" | "decoder"
    precision: str
    tensorrt_version: str
    compute_capability: str  # e.g. "8.7" (Orin)
    gpu_name: str
    profiles: dict[str, list[int]] = field(default_factory=dict)  # axis -> [min, opt, max]


@dataclass
class Manifest:
    format: str
    format_version: int
    model: ModelConfig
    preprocessing: Preprocessing
    prompt: PromptSpec
    decoder: DecoderSpec
    graphs: dict[str, GraphSpec]  # "vision", "decoder" [, STEP_DECODER]
    embeddings: TensorSpec  # the token-embedding table stored as .npy; name is its file
    tokenizer: str
    files: dict[str, str]  # relative path -> sha256
    provenance: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)  # figures measured at export time
    engines: list[EngineSpec] = field(default_factory=list)
    # Per-row float32 scales (V,) when ``embeddings`` is int8: row i is table[i] * scales[i].
    # int8 table: (V,) row scales; int4 table (uint8, two values per byte, low nibble first; the
    # spec's shape is the logical (V, D)): (V, D / EMBEDDING_INT4_BLOCK) block scales.
    embedding_scales: TensorSpec | None = None
    # package -> version it needs, ">=X" (the oldest release the graphs load on, tested) or "==X"
    # (graphs saved as that exact ONNX Runtime optimized them, `export --ort-optimize`).
    requires: dict[str, str] = field(default_factory=dict)
    golden: str | None = None  # the file of golden inputs and PyTorch outputs for `verify`
    # Graph costs for the roofline, measured at export so a device needs no onnx package:
    # {"decoder": ..., "vision_per_frame": ...} as perf.roofline.GraphCost fields.
    costs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            try:
                self.model = ModelConfig.from_dict(self.model)
            except UserError as e:
                raise BundleError(f"manifest: {e}") from None
        self.preprocessing = _strict(Preprocessing, self.preprocessing, "preprocessing")
        self.prompt = _strict(PromptSpec, self.prompt, "prompt")
        self.decoder = _strict(DecoderSpec, self.decoder, "decoder")
        self.graphs = {k: _strict(GraphSpec, v, f"graphs.{k}") for k, v in self.graphs.items()}
        self.embeddings = _strict(TensorSpec, self.embeddings, "embeddings")
        if self.embedding_scales is not None:
            self.embedding_scales = _strict(TensorSpec, self.embedding_scales, "embedding_scales")
        self.engines = [_strict(EngineSpec, e, "engines[]") for e in self.engines]
        for required in ("vision", "decoder"):
            if required not in self.graphs:
                raise BundleError(f"manifest has no '{required}' graph")
        unknown = sorted(set(self.graphs) - {"vision", "decoder", STEP_DECODER})
        if unknown:
            raise BundleError(f"manifest: graphs has unknown entries {unknown}; is the bundle from a newer exporter?")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def parity_passed(self) -> bool:
        return self.parity.get("passed", True) is not False

    def required(self, package: str) -> str | None:
        """The version spec ``package`` must meet; format 2 bundles saved ORT-optimized need the
        exporter's exact ONNX Runtime (their manifests predate ``requires``)."""
        if package in self.requires:
            return self.requires[package]
        if package == "onnxruntime" and self.provenance.get("ort_graph_optimization"):
            return "==" + self.provenance.get("libraries", {}).get("onnxruntime", "?")
        return None


def _release(version: str) -> tuple[int, ...]:
    """(1, 23, 2) from '1.23.2', '1.23.2+cu126' or '1.23.2rc1': local and pre-release tags ignored."""
    return tuple(int(n) for n in re.findall(r"\d+", re.match(r"[\d.]*", version).group()))


def unmet_requirement(spec: str | None, installed: str) -> bool:
    """Whether ``installed`` misses ``spec`` (">=X" or "==X"; None: nothing required)."""
    if spec is None:
        return False
    op, want = spec[:2], _release(spec[2:])
    have = _release(installed)
    if op == ">=":
        return have < want
    if op == "==":
        return have[: len(want)] != want
    raise BundleError(f"manifest: requires spec {spec!r} is neither '>=X' nor '==X'")


def _strict(cls, value: Any, where: str):
    """Build dataclass ``cls`` from a dict, refusing keys it does not know."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise BundleError(f"manifest: {where} must be an object")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise BundleError(f"manifest: {where} has unknown keys {unknown}; is the bundle from a newer exporter?")
    try:
        return cls(**value)
    except TypeError as e:
        raise BundleError(f"manifest: {where} is incomplete ({e})") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: str | Path) -> Manifest:
    """Parse ``manifest.json`` strictly, refusing another format or a newer format version."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: {'a file, not a bundle folder' if bundle.exists() else 'no such bundle folder'}")
    if not path.is_file():
        if (bundle / "config.json").is_file() and (bundle / "model.safetensors").is_file():
            raise BundleError(f"{bundle} is a checkpoint, not a bundle: export it first "
                              f"(exo2ego-edge export --checkpoint {bundle} --out BUNDLE --int8)")
        raise BundleError(f"{bundle}: not a bundle (manifest.json missing)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BundleError(f"{path}: not an exo2ego-edge bundle manifest")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{path}: format_version must be an integer (got {version!r})")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{bundle}: bundle format {version} is newer than this exo2ego-edge reads "
            f"({FORMAT_VERSION}); upgrade exo2ego-edge or re-export with this version"
        )
    return _strict(Manifest, raw, "manifest")


def verify_files(bundle: str | Path, manifest: Manifest) -> None:
    """Check that every file the manifest lists exists and has the recorded sha256."""
    bundle = Path(bundle)
    for rel, digest in manifest.files.items():
        path = bundle / rel
        if not path.is_file():
            raise BundleError(f"{bundle}: file {rel} is missing")
        if sha256_file(path) != digest:
            raise BundleError(f"{bundle}: file {rel} does not match its checksum (modified or corrupt)")
    listed = set(manifest.files)
    needed = {g.file for g in manifest.graphs.values()} | {manifest.embeddings.name, manifest.tokenizer}
    needed |= {g.trt_file for g in manifest.graphs.values() if g.trt_file}
    needed |= {e.file for e in manifest.engines}
    needed |= {manifest.golden} if manifest.golden else set()
    if manifest.embedding_scales is not None:
        needed.add(manifest.embedding_scales.name)
    unlisted = sorted(needed - listed)
    if unlisted:
        raise BundleError(f"{bundle}: manifest lists no checksum for {unlisted}")


def load_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Read and (by default) verify a bundle: what the runtime does before loading any graph."""
    manifest = read_manifest(bundle)
    if verify:
        verify_files(bundle, manifest)
    return manifest


def _manifest_text(manifest: Manifest) -> str:
    return json.dumps(manifest.to_dict(), indent=2) + "\n"


def write_manifest(folder: str | Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` into a bundle folder being assembled (export's temp folder)."""
    (Path(folder) / MANIFEST).write_text(_manifest_text(manifest))


def write_manifest_atomically(folder: str | Path, manifest: Manifest) -> None:
    """Replace a finished bundle's manifest in one step (a temp file renamed over it)."""
    with atomic_file(Path(folder) / MANIFEST) as f:
        f.write(_manifest_text(manifest))
