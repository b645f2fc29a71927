"""TensorRT engines for a bundle's graphs (TensorRT 10 Python API, imported lazily).

One engine per graph, each with one optimization profile declaring min / opt / max for every
dynamic axis (frames for vision; sequence, past and total length for the decoder), built from the
bundle's ONNX file with FP16, or INT8 taken from its explicit Q/DQ nodes; the decoder's engine
from a copy of its graph with ``logits_to_keep`` fixed to 1 (see :func:`keep_last_logits`). A
timing cache is loaded when it exists and saved after each build, so rebuilding on the same GPU is
fast. A parse or build failure stops the export (TensorRT-LLM only logs and carries on; we don't).

Where ``tensorrt`` does not import, ``require_tensorrt`` refuses in one line: never a fake engine.
"""

from __future__ import annotations

import logging
from pathlib import Path

from exo2ego_edge.bundle import BATCH, FRAMES, LOGITS_TO_KEEP, PAST, SEQ, TOTAL, EngineSpec, GraphSpec
from exo2ego_edge.errors import UserError

log = logging.getLogger(__name__)

ENGINES_DIR = "engines"
TIMING_CACHE = "timing.cache"
WORKSPACE_BYTES = 4 << 30


def require_tensorrt():
    """The ``tensorrt`` module, or a one-line UserError saying why there is none."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or a broken install failing to load libnvinfer
        raise UserError(
            f"--trt needs TensorRT, which does not import here ({type(e).__name__}: {e}); "
            "export without --trt, or run the export on the target GPU (JetPack ships TensorRT)"
        ) from None
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


def keep_last_logits(src: Path, dst: Path) -> bool:
    """Write ``src`` to ``dst`` with the ``logits_to_keep`` input replaced by the constant 1.

    TensorRT would take that scalar, which sizes an output, as a shape tensor needing a profile
    of its own, and the runtime reads only the last position's logits; as a constant it is folded
    and the engine projects one row onto the vocabulary. External weights are referenced, not
    copied, so ``dst`` must be in ``src``'s folder. False (nothing written) for a graph without
    the input.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src), load_external_data=False)
    inputs = [i for i in model.graph.input if i.name != LOGITS_TO_KEEP]
    if len(inputs) == len(model.graph.input):
        return False
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.append(numpy_helper.from_array(np.array(1, dtype=np.int64), LOGITS_TO_KEEP))
    onnx.save(model, str(dst))
    return True


def engine_name(graph: str, precision: str, gpu_tag: str) -> str:
    return f"{ENGINES_DIR}/{graph}.{precision}.{gpu_tag}.engine"


# --- building (needs TensorRT and a GPU) ----------------------------------------------------------
def gpu_identity() -> tuple[str, str]:
    """(compute capability "8.7", GPU name) of device 0."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}", torch.cuda.get_device_name(0)
    except Exception:  # a CPU-only torch: fall back to nvidia-smi
        pass
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap,name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        cap, name = (s.strip() for s in out.splitlines()[0].split(",", 1))
        return cap, name
    except Exception as e:
        raise UserError(f"--trt: cannot identify the GPU ({e})") from None


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
    dla_core: int | None = None, timing_cache: Path | None = None,
) -> list[EngineSpec]:
    """Build an engine per graph into ``folder/engines``; the timing cache is kept there too
    (and copied back to ``timing_cache`` when given, to be reused by the next export)."""
    trt = require_tensorrt()
    cap, gpu = gpu_identity()
    gpu_tag = f"sm{cap.replace('.', '')}"
    cache = folder / ENGINES_DIR / TIMING_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    if timing_cache is not None and Path(timing_cache).is_file():
        cache.write_bytes(Path(timing_cache).read_bytes())
    engines = []
    for name, spec in graphs.items():
        axes = axis_profiles(name, max_frames, max_seq, dla=dla_core is not None)
        rel = engine_name(name, spec.precision, gpu_tag)
        log.info("building TensorRT engine %s", rel)
        source = folder / spec.file
        frozen = source.with_name(f".{source.stem}.tensorrt.onnx")  # beside its external weights
        try:
            if name == "decoder" and keep_last_logits(source, frozen):
                source = frozen
            build_engine(source, folder / rel, spec, axes, cache, dla_core=dla_core if name == "vision" else None)
        finally:
            frozen.unlink(missing_ok=True)  # built before the checksums are taken: never in the bundle
        engines.append(EngineSpec(file=rel, graph=name, precision=spec.precision, tensorrt_version=trt.__version__,
                                  compute_capability=cap, gpu_name=gpu, profiles=axes))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(cache.read_bytes())
    return engines
