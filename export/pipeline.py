"""``export_bundle``: student checkpoint -> bundle folder, as one fixed pipeline of small builders.

Every export runs the same steps (ONNX Runtime GenAI's builder shape), each a function here:

    load student -> export FP32 graphs -> calibration clips -> precision graphs ->
    embeddings + tokenizer -> [TensorRT engines] -> manifest -> parity gate

The bundle is assembled in a temp folder beside ``out`` and renamed into place only when every
step (the parity gate included) succeeded, so a failed export leaves nothing behind.

Precision per graph (``precision`` x ``target``):

| precision | target cpu (default)                         | target cuda / tensorrt                 |
|-----------|----------------------------------------------|----------------------------------------|
| fp32      | as exported                                  | as exported                            |
| fp16      | float16, norms/softmax/rotary kept float32   | same                                   |
| int8      | vision: INT8 weights, dynamic activations;   | both: explicit Q/DQ, per-channel       |
|           | decoder: weight-only INT8 (MatMulNBits)      | symmetric weights, calibrated acts     |
| int4      | vision as int8; decoder: INT4 MatMulNBits    | vision Q/DQ; decoder INT4 MatMulNBits  |

Vision kernels (``vision_kernels``): target cpu (but fp16) exports the vision tower's attention and
tanh GELU as ONNX Runtime's fused ``MultiHeadAttention`` / ``FastGelu`` (fused_vision.py); GPU
targets keep standard ops, which TensorRT parses and fuses itself.

KV cache (``kv_cache``): target cpu exports the in-place cache (the past read where the runtime
keeps it, only the new rows written: a decode step copies no cache); GPU targets the concat graph,
which the TensorRT backend runs.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exo2ego_edge.atomic import atomic_dir, check_writable
from exo2ego_edge.bundle import (
    EMBEDDING_INT4_BLOCK, KV_CACHES, LOGITS_TO_KEEP, MANIFEST, STEP_DECODER, GraphSpec, Manifest, TensorSpec,
    decode_graph, past_names, write_manifest,
)
from exo2ego_edge.errors import UserError
from exo2ego_edge.export import graph_passes, onnx_graphs, ort_offline, quantize
from exo2ego_edge.export.bundle_writer import make_manifest, ort_requirement, provenance
from exo2ego_edge.export.clip_frames import load_clips, random_clips
from exo2ego_edge.export.onnx_graphs import GraphIO
from exo2ego_edge.export.parity import DEFAULT_THRESHOLDS, ParityThresholds, make_goldens, measure_parity
from exo2ego_edge.perf.roofline import bundle_costs
from exo2ego_edge.runtime.verify import save_golden

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8", "int4")
TARGETS = ("cpu", "cuda", "tensorrt")
CPU_ACTIVATIONS = ("dynamic", "static")
CPU_DECODERS = ("integer", "weight-only", "hybrid")
VISION_KERNELS = ("fused", "standard")
GRAPH_FILES = {"vision": "vision.onnx", "decoder": "decoder.onnx", STEP_DECODER: "decoder_step.onnx"}
if TYPE_CHECKING:
    from exo2ego_edge.model import Student

EMBEDDINGS_FILE, EMBEDDING_SCALES_FILE, TOKENIZER_FILE = "embeddings.npy", "embedding_scales.npy", "tokenizer.json"


@dataclass
class ExportOptions:
    """Everything ``export_bundle`` can be told; ``problems()`` lists every invalid combination."""

    precision: str = "fp32"
    target: str = "cpu"
    # CPU INT8 vision activations: "dynamic" measured faster on ORT CPU here (benchmarks/results).
    cpu_activations: str = "dynamic"
    # CPU INT8 decoder: "integer" runs its layers on INT8 GEMMs (fast prefill on VNNI / AMX / Arm
    # dot product), "weight-only" on MatMulNBits with float activations (see quantize.py), "hybrid"
    # writes both: integer for prefill, weight-only for decode steps (bundle.STEP_DECODER).
    cpu_decoder: str = "integer"
    # None: "in-place" for target cpu, "concat" for GPU targets (see the module docstring).
    kv_cache: str | None = None
    # None: "fused" (the tower's attention and GELU as ONNX Runtime kernels, fused_vision.py) where
    # ORT's CPU provider runs the bundle, else "standard" ONNX ops.
    vision_kernels: str | None = None
    calib_data: Path | None = None
    calib_samples: int = 16
    calib_method: str = "entropy"
    eval_data: Path | None = None
    parity_samples: int = 4
    max_new_tokens: int = 32
    thresholds: ParityThresholds | None = None
    max_frames: int | None = None
    max_seq: int | None = None
    # 128 (GPTQ / AWQ's usual group): 1.29x INT8 decode end to end against 1.14x for 32, 44 MiB smaller
    # for edge-0.5b (benchmarks/results/decoder_schemes.md); the parity gate still judges each bundle.
    int4_block_size: int = 128
    trt: bool = False
    # Fuse sibling weight MatMuls and fold shape arithmetic in the FP32 graphs (graph_passes.py).
    graph_passes: bool = True
    # Save the CPU graphs as this ONNX Runtime optimizes them (export/ort_offline.py): faster
    # session starts, but the bundle then loads on exactly this ORT version only.
    ort_optimize: bool = False
    dla_core: int | None = None
    timing_cache: Path | None = None
    force: bool = False
    overwrite: bool = False
    opset: int = onnx_graphs.DEFAULT_OPSET
    exporter: str = "torchscript"
    seed: int = 0

    def problems(self) -> list[str]:
        out = []
        if self.precision not in PRECISIONS:
            out.append(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.target not in TARGETS:
            out.append(f"target '{self.target}' is not one of {', '.join(TARGETS)}")
        if self.cpu_activations not in CPU_ACTIVATIONS:
            out.append(f"cpu activations '{self.cpu_activations}' is not one of {', '.join(CPU_ACTIVATIONS)}")
        if self.cpu_decoder not in CPU_DECODERS:
            out.append(f"cpu decoder '{self.cpu_decoder}' is not one of {', '.join(CPU_DECODERS)}")
        if self.kv_cache is not None and self.kv_cache not in KV_CACHES:
            out.append(f"KV cache '{self.kv_cache}' is not one of {', '.join(KV_CACHES)}")
        if self.kv_cache == "in-place" and self.target != "cpu":
            out.append("--kv-cache in-place runs on ONNX Runtime's CPU provider: it needs --target cpu "
                       "(GPU targets export the concat cache the TensorRT backend runs)")
        if self.kv_cache == "in-place" and self.exporter != "torchscript":
            out.append("--kv-cache in-place is exported with the torchscript exporter")
        if self.vision_kernels is not None and self.vision_kernels not in VISION_KERNELS:
            out.append(f"vision kernels '{self.vision_kernels}' is not one of {', '.join(VISION_KERNELS)}")
        if self.vision_kernels == "fused" and not self.ort_cpu:
            out.append("--vision-kernels fused exports ONNX Runtime's CPU kernels: it needs --target cpu, "
                       "not --fp16, and the torchscript exporter")
        if self.calib_method not in quantize.CALIBRATION_METHODS:
            out.append(f"calibration method '{self.calib_method}' is not one of {', '.join(quantize.CALIBRATION_METHODS)}")
        if self.opset < 17:
            out.append(f"opset {self.opset} < 17 (LayerNormalization needs 17)")
        for name in ("calib_samples", "parity_samples", "max_frames", "max_seq", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:  # max_new_tokens is the API's alone: no flag
                flag = name if name == "max_new_tokens" else f"--{name.replace('_', '-')}"
                out.append(f"{flag} must be >= 1 (got {value})")
        for name in ("calib_data", "eval_data"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                out.append(f"--{name.replace('_', '-')} {path}: no such file")
        if self.dla_core is not None and not self.trt:
            out.append("--dla-core needs --trt")
        if self.dla_core is not None and self.precision not in ("fp16", "int8"):
            out.append("--dla-core needs --fp16 or --int8 (a DLA runs neither fp32 nor MatMulNBits)")
        if self.trt and self.precision == "int4":
            out.append("--int4 has no TensorRT engine (its MatMulNBits decoder is ONNX Runtime's own op): "
                       "use --int8 or --fp16 with --trt")
        if self.ort_optimize and (self.target != "cpu" or self.precision == "fp16"):
            out.append("--ort-optimize saves graphs for ONNX Runtime's CPU provider: it needs --target cpu, not --fp16")
        if self.trt and self.target == "cpu":
            out.append("--trt builds GPU engines; use --target tensorrt (or cuda)")
        return out

    @property
    def calibrates_activations(self) -> bool:
        """INT8 / INT4 whose vision activations get calibrated ranges: GPU Q/DQ, or CPU static."""
        return self.precision in ("int8", "int4") and (self.target != "cpu" or self.cpu_activations == "static")

    @property
    def int8_cpu_decoder(self) -> str | None:
        """The CPU INT8 decoder when this export writes one (``cpu_decoder``), else None."""
        return self.cpu_decoder if self.precision == "int8" and self.target == "cpu" else None

    @property
    def decoder_kv_cache(self) -> str:
        """The KV cache the decoder is exported with: as asked, else by target."""
        return self.kv_cache or ("in-place" if self.target == "cpu" and self.exporter == "torchscript" else "concat")

    @property
    def ort_cpu(self) -> bool:
        """Whether the graphs may use ONNX Runtime's CPU kernels (contrib ops): a CPU target, not
        fp16, exported with torchscript."""
        return self.target == "cpu" and self.precision != "fp16" and self.exporter == "torchscript"

    @property
    def fused_vision(self) -> bool:
        """Whether the vision graph is exported with ONNX Runtime's fused kernels: as asked, else
        wherever they can run."""
        return self.vision_kernels == "fused" if self.vision_kernels else self.ort_cpu

    def parity_thresholds(self) -> ParityThresholds:
        return self.thresholds or DEFAULT_THRESHOLDS[self.precision]


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    timings_s: dict[str, float] = field(default_factory=dict)


def check_out(out: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse, before any work, an --out that cannot be written or whose replacement would destroy
    something that is not a bundle (--overwrite removes the old folder)."""
    check_writable(out, f"--out {out}")
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a bundle folder")
    resolved = out.resolve()
    if resolved == checkpoint.resolve() or resolved in checkpoint.resolve().parents:
        raise UserError(f"--out {out} holds the checkpoint {checkpoint}: write the bundle to another folder")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"--out {out} is a folder but not a bundle (no {MANIFEST}): write the bundle to another folder")
    if not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")


# --- the builders -------------------------------------------------------------------------------
def export_fp32_graphs(student: Student, work: Path, opts: ExportOptions, max_seq: int) -> dict[str, tuple[Path, GraphIO]]:
    """Both graphs in FP32, each in its own folder (a >2 GB export scatters weight files), with
    graph_passes' rewrites applied: for ONNX Runtime's CPU provider also the decoder's rotary as its
    RotaryEmbedding kernel, with tables for ``max_seq`` positions."""
    import onnx

    out = {}
    for name in ("vision", "decoder"):
        folder = work / f"fp32-{name}"
        folder.mkdir()
        path = folder / f"{name}.onnx"
        if name == "vision":
            io = onnx_graphs.export_vision(student.model, path, opset=opts.opset, exporter=opts.exporter,
                                           fused=opts.fused_vision)
        else:
            io = onnx_graphs.export_decoder(student.model, path, opset=opts.opset, exporter=opts.exporter,
                                            kv_cache=opts.decoder_kv_cache)
        if opts.graph_passes:
            model = onnx.load(str(path))
            rotary = onnx_graphs.rotary_tables(student.model, max_seq) if name == "decoder" and opts.ort_cpu else None
            rewrites = graph_passes.simplify(model, onnx_graphs.probe_feeds(student.model.cfg, name), folder, rotary)
            onnx_graphs.save_onnx(model, path, keep_value_info=True)
            log.info("%s: %s", name, rewrites)
        out[name] = (path, io)
    return out


def calibration_clips(student: Student, opts: ExportOptions) -> list[tuple[np.ndarray, dict]]:
    cfg = student.model.cfg
    if opts.calib_data is None:
        raise UserError("--target cuda/tensorrt INT8 calibrates activations on real ego frames: pass --calib-data CLIPS.jsonl")
    return load_clips(opts.calib_data, opts.calib_samples, cfg.num_frames, cfg.vision.image_size)


def parity_clips(student: Student, opts: ExportOptions) -> tuple[list[tuple[np.ndarray, dict]], str]:
    """Held-out clips: --eval-data, else the calibration file read from its end, else random frames."""
    cfg = student.model.cfg
    n, t, s = opts.parity_samples, cfg.num_frames, cfg.vision.image_size
    if opts.eval_data is not None:
        return load_clips(opts.eval_data, n, t, s), str(opts.eval_data)
    if opts.calib_data is not None:
        return load_clips(opts.calib_data, n, t, s, from_end=True), f"{opts.calib_data} (held-out rows from its end)"
    return random_clips(n, t, s, seed=opts.seed + 1), "random frames"


def vision_feeds(clips: list[tuple[np.ndarray, dict]]) -> list[dict[str, np.ndarray]]:
    return [{"frames": frames} for frames, _ in clips]


def decoder_feeds(student: Student, clips: list[tuple[np.ndarray, dict]]) -> list[dict[str, np.ndarray]]:
    """Prefill inputs (prompt + real visual tokens, empty cache) for decoder calibration."""
    import torch

    model, lc = student.model, student.model.cfg.llm
    feeds = []
    for frames, row in clips:
        prompt = student.tokenizer.prompt_ids(model.cfg.system_prompt, row.get("question") or model.cfg.caption_question)
        batch = model.assemble(model(torch.from_numpy(frames)[None]), [prompt])
        empty = np.zeros((1, lc.num_kv_heads, 0, lc.head_dim), np.float32)
        feeds.append({
            "inputs_embeds": batch.inputs_embeds.numpy(),
            "attention_mask": batch.attention_mask.numpy(),
            "position_ids": batch.position_ids.numpy(),
            # Every position's logits: the vocabulary projection's input is calibrated on all of them.
            LOGITS_TO_KEEP: np.array(0, dtype=np.int64),
            **{n: empty for n in past_names(lc.num_layers)},
        })
    return feeds


def make_precision_graphs(
    fp32: dict[str, tuple[Path, GraphIO]], out: Path, work: Path, student: Student, opts: ExportOptions,
) -> dict[str, GraphSpec]:
    """Write vision.onnx and decoder.onnx [+ decoder_step.onnx] into the bundle at the requested
    precision."""
    import onnx

    cfg = student.model.cfg
    gpu = opts.target in ("cuda", "tensorrt")
    specs = {}
    calib = None
    if opts.calibrates_activations:  # GPU targets require --calib-data; CPU static falls back to random frames
        calib = (calibration_clips(student, opts) if gpu or opts.calib_data
                 else random_clips(opts.calib_samples, cfg.num_frames, cfg.vision.image_size, seed=opts.seed))
    for name, (src, io) in fp32.items():
        if opts.precision in ("int8", "int4") and not gpu:  # ORT's recommended pre-processing before its CPU quantizers
            pre = work / f"{name}-pre" / f"{name}.onnx"
            pre.parent.mkdir()
            quantize.preprocess(src, pre)
            src = pre
        for graph in bundle_graphs(name, opts):
            dst = out / GRAPH_FILES[graph]
            precision, float_dtype = opts.precision, "float32"
            scheme = matmul_scheme(graph, opts)
            if opts.precision == "fp32":
                tmp = src
            elif opts.precision == "fp16":
                tmp = work / f"{name}-fp16.onnx"
                quantize.convert_fp16(src, tmp)
                float_dtype = "float16"
            elif name == "decoder" and scheme == "integer-dynamic":
                tmp = work / "decoder-int8.onnx"
                quantize.quantize_integer_decoder(src, tmp)
            elif name == "decoder" and scheme == "weight-only":
                bits = 4 if opts.precision == "int4" else 8
                block = opts.int4_block_size if bits == 4 else quantize.WEIGHT_ONLY_INT8_BLOCK
                tmp = work / f"decoder-int{bits}-weight-only.onnx"
                quantize.quantize_weight_only(src, tmp, bits=bits, block_size=block)
            else:
                precision = "int8"
                feeds = None
                if opts.calibrates_activations:
                    feeds = vision_feeds(calib) if name == "vision" else decoder_feeds(student, calib)
                tmp = work / f"{name}-int8.onnx"
                if gpu:
                    quantize.quantize_qdq_for_gpu(src, tmp, feeds, method=opts.calib_method)
                elif opts.cpu_activations == "static":
                    quantize.quantize_static_int8(src, tmp, feeds, method="minmax")
                else:
                    quantize.quantize_dynamic_int8(src, tmp)
            onnx_graphs.save_onnx(onnx.load(str(tmp)), dst)
            if cpu_optimized(opts):
                ort_offline.optimize_for_cpu(dst)
            trt_file = None
            if gpu and graph == "decoder":  # the graph a device's `engines build` reads (it has no onnx)
                trt_file = f"{dst.stem}.trt.onnx"
                onnx_graphs.keep_last_logits(dst, dst.with_name(trt_file))
            io_spec = (onnx_graphs.vision_io(cfg, float_dtype) if name == "vision"
                       else onnx_graphs.decoder_io(cfg, float_dtype, opts.decoder_kv_cache))
            specs[graph] = GraphSpec(file=dst.name, precision=precision, inputs=io_spec.inputs,
                                     outputs=io_spec.outputs, opset=opts.opset, trt_file=trt_file, matmuls=scheme)
    return specs


def bundle_graphs(exported: str, opts: ExportOptions) -> tuple[str, ...]:
    """The bundle's graphs made from the exported graph ``exported``: the hybrid CPU decoder is two."""
    hybrid = exported == "decoder" and opts.int8_cpu_decoder == "hybrid"
    return (exported, STEP_DECODER) if hybrid else (exported,)


def matmul_scheme(graph: str, opts: ExportOptions) -> str:
    """How a graph's weight MatMuls compute, as the manifest records it (``GraphSpec.matmuls``)."""
    if opts.precision in ("fp32", "fp16"):
        return "float"
    if graph == STEP_DECODER or (graph == "decoder" and (opts.precision == "int4" or opts.int8_cpu_decoder == "weight-only")):
        return "weight-only"
    if opts.target != "cpu":
        return "qdq"
    return "integer-static" if graph == "vision" and opts.cpu_activations == "static" else "integer-dynamic"


def cpu_optimized(opts: ExportOptions) -> bool:
    """Whether the graphs are saved ORT-optimized (export/ort_offline.py): only when asked, since
    such graphs load on the exporter's ONNX Runtime version alone (a Jetson's 1.23 refuses 1.32's
    prepacked MatMulNBits). Never float16, where the CPU provider would bake in float32 casts."""
    return opts.ort_optimize


def write_embeddings_and_tokenizer(student: Student, out: Path, precision: str) -> tuple[TensorSpec, TensorSpec | None]:
    """The token-embedding table as .npy, and tokenizer.json. The runtime gathers only the few rows
    a prompt uses and casts them to the decoder's input dtype, so the table's precision follows
    the bundle's: float32, float16 beside an fp16 decoder, int8 with per-row symmetric scales (a
    second .npy) beside an INT8 one, a quarter of the float32 bytes, and int4 in blocks of
    EMBEDDING_INT4_BLOCK with float16 scales beside an INT4 one, under a seventh (for edge-0.5b
    77 MB instead of int8's 137 MB: the table is a third of an INT4 bundle)."""
    shutil.copyfile(student.folder / TOKENIZER_FILE, out / TOKENIZER_FILE)
    table = onnx_graphs.embedding_table(student.model)
    if precision in ("fp32", "fp16"):
        if precision == "fp16":
            table = table.astype(np.float16)
        np.save(out / EMBEDDINGS_FILE, table)
        return TensorSpec(EMBEDDINGS_FILE, str(table.dtype), list(table.shape)), None
    if precision == "int4" and table.shape[1] % EMBEDDING_INT4_BLOCK == 0:
        packed, scales = int4_rows(table)
        np.save(out / EMBEDDINGS_FILE, packed)
        np.save(out / EMBEDDING_SCALES_FILE, scales)
        return (TensorSpec(EMBEDDINGS_FILE, "int4", list(table.shape)),
                TensorSpec(EMBEDDING_SCALES_FILE, "float16", list(scales.shape)))
    scales = np.maximum(np.abs(table).max(axis=1), np.finfo(np.float32).tiny) / 127.0
    np.save(out / EMBEDDINGS_FILE, np.round(table / scales[:, None]).astype(np.int8))
    np.save(out / EMBEDDING_SCALES_FILE, scales.astype(np.float32))
    return (TensorSpec(EMBEDDINGS_FILE, "int8", list(table.shape)),
            TensorSpec(EMBEDDING_SCALES_FILE, "float32", [table.shape[0]]))


def int4_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int4 in blocks of EMBEDDING_INT4_BLOCK along each row: (V, D / 2) uint8, two
    values per byte (low nibble first, two's complement), and (V, D / block) float16 scales."""
    v, d = table.shape
    blocks = table.reshape(v, d // EMBEDDING_INT4_BLOCK, EMBEDDING_INT4_BLOCK)
    scales = (np.maximum(np.abs(blocks).max(axis=2), np.finfo(np.float16).tiny) / 7.0).astype(np.float16)
    q = np.clip(np.round(blocks / scales[..., None].astype(np.float32)), -8, 7).astype(np.int8).reshape(v, d)
    nibbles = (q & 0x0F).astype(np.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scales


# --- the pipeline -------------------------------------------------------------------------------
def export_bundle(
    checkpoint: str | Path, out: str | Path, precision: str = "fp32", target: str = "cpu", **options: Any
) -> ExportResult:
    """Export a student checkpoint folder to a bundle folder ``out``.

    ``options`` are the fields of :class:`ExportOptions`. Raises :class:`UserError` (one line) on
    invalid options, an existing ``out`` without ``overwrite``, a missing TensorRT with ``trt``,
    or parity below the thresholds without ``force`` (with ``force`` the bundle is kept and its
    manifest says ``parity.passed: false``).
    """
    import time

    from tqdm import tqdm

    known = {f.name for f in dataclasses.fields(ExportOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"export: unknown options {unknown}")
    opts = ExportOptions(precision=precision, target=target, **options)
    problems = opts.problems()
    if problems:
        raise UserError("export: " + "; ".join(problems))
    # The manifest's provenance records the choices in effect, not "by target".
    opts = dataclasses.replace(opts, kv_cache=opts.decoder_kv_cache,
                               vision_kernels="fused" if opts.fused_vision else "standard")
    checkpoint, out = Path(checkpoint), Path(out)
    check_out(out, checkpoint, opts.overwrite)
    # Without --eval-data the parity check reads the calibration file's end: then it is used.
    if opts.calib_data is not None and opts.eval_data is not None and not opts.calibrates_activations:
        log.warning("--calib-data is not used: only INT8 with calibrated activations reads it "
                    "(--target cuda/tensorrt, or --cpu-activations static)")
    if opts.calibrates_activations and opts.target == "cpu" and opts.calib_data is None:
        log.warning("--cpu-activations static without --calib-data calibrates on random frames: "
                    "pass --calib-data CLIPS.jsonl to calibrate on real ego frames")
    if opts.trt:
        from exo2ego_edge.runtime.engines import require_tensorrt

        require_tensorrt()

    timings: dict[str, float] = {}
    steps = tqdm(total=7, desc="export", unit="step", disable=None)

    def done(step: str, t0: float) -> float:
        timings[step] = round(time.perf_counter() - t0, 3)
        steps.set_postfix_str(step)
        steps.update()
        return time.perf_counter()

    import torch

    from exo2ego_edge.model import load_student

    t = time.perf_counter()
    student = load_student(checkpoint)
    cfg = student.model.cfg
    if opts.max_frames is not None and opts.max_frames < cfg.num_frames:
        # The runtime samples num_frames per clip: a smaller limit would make every clip unanswerable.
        raise UserError(f"--max-frames {opts.max_frames} is below the model's {cfg.num_frames} frames per clip")
    max_frames = opts.max_frames or cfg.num_frames
    if opts.max_seq is not None and opts.max_seq > cfg.llm.max_position_embeddings:
        raise UserError(f"--max-seq {opts.max_seq} is above the LLM's {cfg.llm.max_position_embeddings} positions")
    max_seq = opts.max_seq or min(cfg.llm.max_position_embeddings, 4096)
    t = done("load", t)
    with (torch.no_grad(), tempfile.TemporaryDirectory(prefix="exo2ego-export-") as work_dir,
          atomic_dir(out, overwrite=opts.overwrite) as tmp):
        work = Path(work_dir)
        fp32 = export_fp32_graphs(student, work, opts, max_seq)
        t = done("onnx", t)
        graphs = make_precision_graphs(fp32, tmp, work, student, opts)
        t = done("precision", t)
        embeddings, embedding_scales = write_embeddings_and_tokenizer(student, tmp, opts.precision)
        t = done("embeddings", t)
        engines = []
        if opts.trt:
            from exo2ego_edge.runtime.engines import build_bundle_engines

            engines = build_bundle_engines(tmp, graphs, max_frames=max_frames, max_seq=max_seq,
                                           dla_core=opts.dla_core, timing_cache=opts.timing_cache)
        t = done("engines", t)
        clips, source = parity_clips(student, opts)
        goldens = make_goldens(student.model, student.tokenizer, clips, opts.max_new_tokens)
        golden_file = save_golden(tmp, goldens)
        option_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(opts).items()}
        manifest = make_manifest(
            tmp, cfg, student.tokenizer, graphs, embeddings, TOKENIZER_FILE, max_seq, max_frames, opts.decoder_kv_cache,
            provenance(checkpoint, opts.opset, opts.exporter, option_record,
                       ort_offline.LEVEL if cpu_optimized(opts) else None), engines,
            embedding_scales=embedding_scales, requires=ort_requirement(tmp, graphs, cpu_optimized(opts)),
            # The decoder's cost is a decode step's: the weights of the graph steps run on.
            golden=golden_file, costs=bundle_costs(tmp, graphs["vision"].file, decode_graph(graphs).file,
                                                   graphs["vision"].inputs[0].name, cfg.vision.image_size),
        )
        write_manifest(tmp, manifest)
        t = done("manifest", t)
        manifest.parity = measure_parity(tmp, goldens, opts.parity_thresholds(), source)
        log.info("parity: %s", {k: v for k, v in manifest.parity.items() if k != "thresholds"})
        write_manifest(tmp, manifest)  # the manifest is not in its own checksum list
        done("parity", t)
        steps.close()
        if not manifest.parity["passed"]:
            reason = "; ".join(manifest.parity["failures"])
            if not opts.force:
                raise UserError(f"parity check failed ({reason}); nothing written — pass --force to keep the bundle marked failed")
            log.warning("parity check failed (%s); keeping the bundle marked failed (--force)", reason)
    return ExportResult(out, manifest, timings)
