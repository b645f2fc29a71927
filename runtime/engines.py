"""TensorRT engines for a bundle's graphs, built on the device from the bundle alone (no torch, no onnx).

One engine per graph, each with one optimization profile declaring min / opt / max for every
dynamic axis (frames for vision; sequence, past and total length for the decoder), built from the
bundle's ONNX file with FP16, or INT8 taken from its explicit Q/DQ nodes; the decoder's engine
from the graph the exporter wrote with ``logits_to_keep`` fixed to 1 (``GraphSpec.trt_file``). A
timing cache is loaded when it exists and saved after each build, so rebuilding on the same GPU is
fast. A parse or build failure stops the build (TensorRT-LLM only logs and carries on; we don't).

TensorRT 10 (JetPack 6.1 and newer) only: 8.6's network flags and int64 handling differ, and
:func:`require_tensorrt` refuses it in one line, as it refuses a missing TensorRT: never a fake engine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

from exo2ego_edge.bundle import (
    BATCH, FRAMES, PAST, SEQ, TOTAL, EngineSpec, GraphSpec, Manifest, load_manifest, sha256_file,
    write_manifest_atomically,
)
from exo2ego_edge.errors import UserError
from exo2ego_edge.runtime.sysinfo import nvidia_smi_query, tensorrt_supported

log = logging.getLogger(__name__)

ENGINES_DIR = "engines"
TIMING_CACHE = "timing.cache"
WORKSPACE_BYTES = 4 << 30


def require_tensorrt():
    """The ``tensorrt`` module (10 or newer), or a one-line UserError saying why there is none."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or a broken install failing to load libnvinfer
        raise UserError(
            f"building TensorRT engines needs TensorRT, which does not import here ({type(e).__name__}: {e}); "
            "build them on the device (JetPack 6.1+ ships TensorRT 10; in a venv, create it with "
            "--system-site-packages to see JetPack's bindings)"
        ) from None
    problem = tensorrt_supported(trt.__version__)
    if problem:
        raise UserError(problem)
    return trt


# --- profiles: pure functions, testable without TensorRT ---------------------------------------
def axis_profiles(graph: str, max_frames: int, max_seq: int, opt_frames: int | None = None,
                  opt_prompt: int | None = None, max_batch: int = 1, dla: bool = False) -> dict[str, list[int]]:
    """[min, opt, max] per dynamic axis. The decoder's opt point is a decode step after a prompt:
    TensorRT tunes kernels for the opt shapes, and decode steps dominate generation time. A DLA
    has no dynamic shapes: its vision engine takes exactly ``max_frames`` frames."""
    if max_frames < 1 or max_seq < 2:
        raise UserError(f"engine profile needs max frames >= 1 and max sequence >= 2 (got {max_frames}, {max_seq})")
    if graph == "vision":
        opt = min(opt_frames or max_frames, max_frames)
        return {FRAMES: [max_frames] * 3 if dla else [1, opt, max_frames]}
    prompt = min(opt_prompt or max_seq // 2, max_seq - 1)
    return {
        BATCH: [1, 1, max_batch],
        SEQ: [1, 1, max_seq],
        PAST: [0, prompt, max_seq - 1],
        TOTAL: [1, prompt + 1, max_seq],
    }


def input_shapes(spec: GraphSpec, axes: dict[str, list[int]]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) concrete shape of every graph input under ``axes``."""
    shapes = {}
    for t in spec.inputs:
        per_point = []
        for point in range(3):
            dims = []
            for d in t.shape:
                if isinstance(d, str):
                    if d not in axes:
                        raise UserError(f"no profile for dynamic axis '{d}' of input '{t.name}'")
                    dims.append(axes[d][point])
                else:
                    dims.append(d)
            per_point.append(tuple(dims))
        shapes[t.name] = tuple(per_point)
    return shapes


def engine_name(graph: str, precision: str, gpu_tag: str) -> str:
    return f"{ENGINES_DIR}/{graph}.{precision}.{gpu_tag}.engine"


# --- building (needs TensorRT and a GPU) ----------------------------------------------------------
def gpu_identity() -> tuple[str, str]:
    """(compute capability "8.7", GPU name) of device 0, from pycuda, else nvidia-smi."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        device = cuda.Device(0)
        return "{}.{}".format(*device.compute_capability()), device.name()
    except Exception:  # no pycuda (or no driver): nvidia-smi knows too, also on JetPack 6
        pass
    rows = nvidia_smi_query(("compute_cap", "name"))
    if rows and rows[0]["compute_cap"] and rows[0]["name"]:
        return rows[0]["compute_cap"], rows[0]["name"]
    raise UserError("cannot identify the GPU to build engines for: no pycuda, and nvidia-smi does not give "
                    "its compute capability (pip install 'exo2ego-edge[tensorrt]')")


def build_engine(
    onnx_path: Path, engine_path: Path, spec: GraphSpec, axes: dict[str, list[int]],
    timing_cache: Path, dla_core: int | None = None, workspace: int = WORKSPACE_BYTES,
) -> None:
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers outside Q/DQ pairs run fp16
    if spec.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the graph's Q/DQ nodes: no calibrator
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False):
        log.warning("timing cache %s is from another GPU or TensorRT: starting a new one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for name, (lo, opt, hi) in input_shapes(spec, axes).items():
        if name in network_inputs:  # logits_to_keep is a constant in the decoder's engine graph
            profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if dla_core is not None:
        if dla_core >= builder.num_DLA_cores:
            raise UserError(f"--dla-core {dla_core}: this GPU has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # DLA lacks some ops (e.g. attention's MatMul)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine for {onnx_path.name} (see the TensorRT log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))


def build_bundle_engines(
    folder: Path, graphs: dict[str, GraphSpec], max_frames: int, max_seq: int,
    dla_core: int | None = None, timing_cache: Path | None = None, out: Path | None = None,
) -> list[EngineSpec]:
    """Build an engine per graph of the bundle ``folder`` into ``out/engines`` (``out`` defaults to
    ``folder``); the timing cache is kept there too (and copied back to ``timing_cache`` when
    given, to be reused by the next build)."""
    trt = require_tensorrt()
    cap, gpu = gpu_identity()
    gpu_tag = f"sm{cap.replace('.', '')}"
    out = out or folder
    cache = out / ENGINES_DIR / TIMING_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    if timing_cache is not None and Path(timing_cache).is_file():
        cache.write_bytes(Path(timing_cache).read_bytes())
    engines = []
    for name, spec in graphs.items():
        axes = axis_profiles(name, max_frames, max_seq, dla=dla_core is not None)
        rel = engine_name(name, spec.precision, gpu_tag)
        log.info("building TensorRT engine %s", rel)
        build_engine(folder / (spec.trt_file or spec.file), out / rel, spec, axes, cache,
                     dla_core=dla_core if name == "vision" else None)
        engines.append(EngineSpec(file=rel, graph=name, precision=spec.precision, tensorrt_version=trt.__version__,
                                  compute_capability=cap, gpu_name=gpu, profiles=axes))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(cache.read_bytes())
    return engines


def engine_graphs(manifest: Manifest, precision: str | None) -> dict[str, GraphSpec]:
    """The bundle's graphs as TensorRT will build them: ``precision`` "fp16" turns float32 graphs
    into FP16 engines, "int8" needs the bundle's Q/DQ graphs; None keeps each graph's own."""
    if manifest.provenance.get("options", {}).get("target") == "cpu":
        raise UserError("this bundle was exported for the CPU (ONNX Runtime's MatMulNBits and dynamic INT8, "
                        "which TensorRT cannot parse): export it with --target tensorrt (or cuda) for engines")
    graphs = {}
    for name, spec in manifest.graphs.items():
        if precision is None or precision == spec.precision:
            graphs[name] = spec
        elif precision == "fp16" and spec.precision == "fp32":
            graphs[name] = dataclasses.replace(spec, precision="fp16")
        else:
            raise UserError(f"--{precision} cannot be built from this bundle's {spec.precision} {name} graph: "
                            f"{'re-export with --int8 --target tensorrt' if precision == 'int8' else 'drop the flag'}")
    return graphs


def build_engines(bundle: str | Path, precision: str | None = None, dla_core: int | None = None,
                  max_frames: int | None = None, max_seq: int | None = None,
                  timing_cache: Path | None = None) -> Manifest:
    """``exo2ego-edge engines build``: engines for this GPU from the bundle alone, written beside
    its graphs; the old engines and the manifest are replaced only when every engine built."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    d = manifest.decoder
    max_frames = d.max_frames if max_frames is None else max_frames
    max_seq = d.max_seq if max_seq is None else max_seq
    if not (1 <= max_frames <= d.max_frames and 2 <= max_seq <= d.max_seq):
        raise UserError(f"--max-frames / --max-seq must be within the bundle's limits 1..{d.max_frames} / "
                        f"2..{d.max_seq} (got {max_frames}, {max_seq})")
    graphs = engine_graphs(manifest, precision)
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".engines-") as tmp:
        engines = build_bundle_engines(bundle, graphs, max_frames, max_seq, dla_core, timing_cache, out=Path(tmp))
        old = bundle / ENGINES_DIR
        if old.exists():
            shutil.rmtree(old)
        os.replace(Path(tmp) / ENGINES_DIR, old)
    files = {k: v for k, v in manifest.files.items() if not k.startswith(f"{ENGINES_DIR}/")}
    files.update({p.relative_to(bundle).as_posix(): sha256_file(p) for p in sorted(old.rglob("*")) if p.is_file()})
    manifest = dataclasses.replace(manifest, engines=engines, files=files)
    write_manifest_atomically(bundle, manifest)
    return manifest
