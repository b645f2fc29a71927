"""The latency benchmark: a bundle through the real runtime, per stage, against this machine's roofline.

What one benchmark does, for each frame count asked for:

1. load the bundle with :meth:`Runtime.load` (the code a user runs; nothing re-implemented here),
2. answer one question about a synthetic H.264 clip ``warmup + runs`` times, each on a fresh
   :class:`Session` so every run pays video decode, vision and prefill like a new clip does,
   reading the runtime's own per-stage :class:`Timings`,
3. summarise every stage as a distribution (p50 / p90 / p99 / mean), decode per token over all
   tokens of all runs,
4. set the measured p50s against the roofline measured in the same process: bytes per decoded
   token over STREAM bandwidth, vision FLOPs over GEMM throughput at the graph's precision.

Generation ignores the stop token (``ignore_eos`` in other benchmarks): random-weight bundles would
otherwise end answers at arbitrary lengths and make runs incomparable. The stop ids are restored
afterwards.

The report is one JSON document (schema ``exo2ego-edge-bench/1``, documented in
``benchmarks/README.md``); :func:`to_markdown` renders it for humans. Torch-free.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.bundle import Manifest
from exo2ego_edge.perf import jetson, roofline
from exo2ego_edge.runtime import sysinfo

log = logging.getLogger(__name__)

SCHEMA = "exo2ego-edge-bench/1"
STAGES = ("video_decode", "preprocess", "vision", "prefill", "ttft", "decode_per_token", "end_to_end")
PERCENTILES = (50, 90, 99)
_FILLER_WORDS = "please tell me what is on the table next to my right hand and".split()


@dataclass
class BenchConfig:
    """What to measure. ``prompt_tokens`` counts the text after the video (question + template)."""

    frames: list[int] = field(default_factory=lambda: [8, 16])
    prompt_tokens: int = 32
    new_tokens: int = 32
    runs: int = 10
    warmup: int = 2
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    video: str | None = None  # a real clip to decode; default: a synthetic 640x480 H.264 clip
    video_decoder: str = "auto"  # runtime.video.clip_decoder: a Jetson's NVDEC where present
    roofline: bool = True
    stream_bytes: int | None = None  # STREAM array size (default: 4x the last-level cache, >= 64 MiB)
    gemm_size: int = 1024  # M = N = K of the GEMM ceiling
    os_reserve_bytes: int = jetson.DEFAULT_OS_RESERVE_BYTES
    # Decode speed against the KV cache's length: a decode step at each of these contexts (or as
    # close as the bundle's max_seq allows), each after a prefill of random tokens.
    contexts: list[int] = field(default_factory=lambda: [512, 2048, 4096])
    context_steps: int = 16

    def __post_init__(self) -> None:
        problems = []
        if not self.frames or any(f < 1 for f in self.frames):
            problems.append(f"frames must be positive, got {self.frames}")
        if self.runs < 1:
            problems.append(f"runs must be >= 1, got {self.runs}")
        if self.warmup < 0:
            problems.append(f"warmup must be >= 0, got {self.warmup}")
        if self.new_tokens < 2:
            problems.append(f"new-tokens must be >= 2 (one prefill token + decode steps), got {self.new_tokens}")
        if self.prompt_tokens < 1:
            problems.append(f"prompt-tokens must be >= 1, got {self.prompt_tokens}")
        if any(c < 1 for c in self.contexts) or self.context_steps < 1:
            problems.append(f"contexts and context steps must be positive, got {self.contexts}, {self.context_steps}")
        if problems:
            from exo2ego_edge.errors import UserError

            raise UserError("; ".join(problems))


# --- statistics ----------------------------------------------------------------------------------
def summarize(samples_s: list[float]) -> dict[str, float | int]:
    """Milliseconds: p50 / p90 / p99 (linear interpolation), mean, min, max and the sample count."""
    if not samples_s:
        return {"n": 0}
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    out: dict[str, float | int] = {f"p{q}": float(np.percentile(ms, q)) for q in PERCENTILES}
    out.update(mean=float(ms.mean()), min=float(ms.min()), max=float(ms.max()), n=int(ms.size))
    return out


# --- inputs --------------------------------------------------------------------------------------
def synthetic_clip(path: Path, seconds: float = 4.0, fps: int = 30, size: tuple[int, int] = (640, 480)) -> Path:
    """A camera-like H.264 clip (moving gradient + bar) so video decode is measured on real bitstream."""
    import av

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.empty((height, width, 3), dtype=np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            img[..., 2] = (xx + yy + i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def synthetic_frames(n: int, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3) frames, for machines without PyAV."""
    return np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _have_pyav() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


def question_with_tokens(count_ids: Callable[[str], int], target: int) -> tuple[str, int]:
    """A question whose prompt part is ``target`` tokens (or the fewest above it the tokenizer allows)."""
    words = ["What", "am", "I", "doing?"]
    i = 0
    while count_ids(" ".join(words)) < target and i < 8 * target:
        words.insert(-1, _FILLER_WORDS[i % len(_FILLER_WORDS)])
        i += 1
    question = " ".join(words)
    return question, count_ids(question)


# --- the run -------------------------------------------------------------------------------------
@dataclass
class _RunSamples:
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    decode_windows: list[tuple[float, float]] = field(default_factory=list)
    decoded_tokens: int = 0
    prefill_tokens: int = 0


@contextlib.contextmanager
def _ignore_eos(rt) -> Iterator[None]:
    saved = rt.prompt.stop_ids
    rt.prompt.stop_ids = []
    try:
        yield
    finally:
        rt.prompt.stop_ids = saved


@contextlib.contextmanager
def _frame_count(rt, frames: int) -> Iterator[None]:
    # The runtime samples the bundle's frame count per clip; a sweep asks for other counts.
    saved = rt.num_frames
    rt.num_frames = frames
    try:
        yield
    finally:
        rt.num_frames = saved


def _one_run(rt, source: Path | np.ndarray, question: str, new_tokens: int, samples: _RunSamples | None) -> None:
    session = rt.session(source) if isinstance(source, Path) else rt.session(frames=source)
    stream = session.stream(question, max_new_tokens=new_tokens)
    first = None
    n = 0
    for n, _token in enumerate(stream, start=1):
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    answer = stream.answer
    if samples is None:
        return
    t = answer.timings
    if n != new_tokens:
        log.warning("run produced %d tokens, expected %d (stopped: %s)", n, new_tokens, answer.stopped)
    s = samples.stages
    if isinstance(source, Path):
        s["video_decode"].append(t.decode_video_s)
    s["preprocess"].append(t.preprocess_s)
    s["vision"].append(t.vision_s)
    s["prefill"].append(t.prefix_prefill_s + t.question_prefill_s)
    s["ttft"].append(t.ttft_s)
    s["decode_per_token"].extend(t.token_s)
    s["end_to_end"].append(t.total_s)
    samples.decode_windows.append((first or end, end))
    samples.decoded_tokens += len(t.token_s)


def run_benchmark(
    bundle: str | Path,
    config: BenchConfig,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Benchmark ``bundle`` and return the report (schema :data:`SCHEMA`).

    ``progress(n)`` is called after every run (warm-up included) with the number of runs done.
    """
    from exo2ego_edge.runtime import Runtime

    bundle = Path(bundle)
    rss = sysinfo.PeakRss()
    rss.start()
    t_load = time.perf_counter()
    rt = Runtime.load(bundle, backend=config.backend, device=config.device, threads=config.threads,
                      video_decoder=config.video_decoder)
    load_s = time.perf_counter() - t_load
    manifest: Manifest = rt.manifest
    question, q_tokens = question_with_tokens(lambda q: len(rt.prompt.question_ids(q)), config.prompt_tokens)
    prefix_tokens = len(rt.prompt.prefix_ids)
    tpf = manifest.decoder.tokens_per_frame

    results: list[dict[str, Any]] = []
    done = 0
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        video = Path(config.video) if config.video else None
        if video is None and _have_pyav():
            video = synthetic_clip(tmp / "clip.mp4")
        elif video is None:
            # A machine without PyAV still benchmarks everything after decode, on ready frames.
            log.warning("PyAV is not installed: video decode is not measured (frames are fed directly)")
        tegra = stack.enter_context(jetson.Tegrastats())
        stack.enter_context(_ignore_eos(rt))
        for frames in config.frames:
            context = prefix_tokens + frames * tpf + q_tokens + config.new_tokens
            skip = _skip_reason(manifest, frames, context)
            if skip:
                log.warning("skipping %d frames: %s", frames, skip)
                results.append({"frames": frames, "skipped": skip})
                done += config.warmup + config.runs
                if progress:
                    progress(done)
                continue
            samples = _RunSamples()
            rss.start()  # per setting: the peak with this many frames, weights included
            with _frame_count(rt, frames), sysinfo.GpuMemorySampler() as gpu:
                source = video if video is not None else synthetic_frames(frames, manifest.preprocessing.image_size)
                for i in range(config.warmup + config.runs):
                    _one_run(rt, source, question, config.new_tokens, samples if i >= config.warmup else None)
                    done += 1
                    if progress:
                        progress(done)
            results.append(_setting_report(
                frames, samples, prefix_tokens, q_tokens, tpf, config, rss, gpu,
                tegra.report(samples.decode_windows, samples.decoded_tokens),
            ))
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundle": _bundle_info(bundle, manifest),
        "backend": {"name": rt.backend.name, "description": rt.backend.description,
                    "providers": list(getattr(rt.backend, "providers", [])), "threads": config.threads,
                    "load_s": load_s, "video_decoder": rt.video_decoder},
        "config": {"frames": config.frames, "prompt_tokens": q_tokens, "prompt_tokens_requested": config.prompt_tokens,
                   "prefix_tokens": prefix_tokens, "new_tokens": config.new_tokens, "runs": config.runs,
                   "warmup": config.warmup,
                   "video": config.video or ("synthetic 640x480 30fps 4s H.264" if _have_pyav() else "none: PyAV missing, frames fed directly"),
                   "ignore_eos": True},
        "system": sysinfo.describe_system(),
        "results": results,
        "decode_vs_context": decode_vs_context(rt, config.contexts, config.context_steps, config.warmup),
    }
    if config.roofline:
        _add_roofline(report, bundle, manifest, config)
    else:
        report["roofline"] = {"available": False, "reason": "disabled (--no-roofline)"}
        report["jetson_projection"] = None
    return report


def decode_vs_context(rt, contexts: list[int], steps: int, warmup: int) -> list[dict[str, Any]]:
    """Per-token decode latency with ``context`` positions already in the KV cache: how the cost of
    reading (and, with a "concat" cache, copying) the cache grows with its length. A context the
    bundle's ``max_seq`` has no room for (``warmup + steps`` tokens after it) is measured as close
    to it as the bundle allows."""
    dec, prompt = rt.decoder, rt.prompt
    max_seq = rt.manifest.decoder.max_seq
    rng = np.random.default_rng(0)
    out = []
    for requested in contexts:
        context = min(requested, max_seq - warmup - steps)
        if any(r.get("context") == context for r in out):  # several requests past max_seq: measured once
            continue
        if context < 1:
            out.append({"context": requested, "skipped": f"the bundle's max_seq {max_seq} leaves no room for {warmup + steps} steps"})
            continue
        ids = rng.integers(0, rt.manifest.decoder.vocab_size, context).tolist()
        prefix, _ = dec.extend(None, prompt.embed(ids))
        state, token = dec.start(prefix), prompt.embed(ids[-1:])
        times = []
        for i in range(warmup + steps):
            t = time.perf_counter()
            dec.step(state, token)
            if i >= warmup:
                times.append(time.perf_counter() - t)
        out.append({"context": context, "requested": requested, "decode_per_token_ms": summarize(times)})
    return out


def _skip_reason(manifest: Manifest, frames: int, context: int) -> str | None:
    d = manifest.decoder
    if frames > d.max_frames:
        return f"{frames} frames exceed the bundle's max_frames {d.max_frames}"
    if context > d.max_seq:
        return f"context {context} exceeds the bundle's max_seq {d.max_seq}"
    return None


def _setting_report(frames: int, samples: _RunSamples, prefix_tokens: int, q_tokens: int, tpf: int,
                    config: BenchConfig, rss: sysinfo.PeakRss, gpu: sysinfo.GpuMemorySampler,
                    power: dict[str, Any] | None) -> dict[str, Any]:
    stages = {name: summarize(values) for name, values in samples.stages.items()}
    token_p50 = stages["decode_per_token"].get("p50")
    e2e_p50 = stages["end_to_end"].get("p50")
    # Video decode is absent (not zero) without PyAV: ingest is then preprocess + vision alone.
    decode = samples.stages["video_decode"] or [0.0] * len(samples.stages["vision"])
    ingest = [a + b + c for a, b, c in zip(decode, samples.stages["preprocess"], samples.stages["vision"])]
    ingest_p50 = float(np.median(ingest)) if ingest else math.nan
    vision_p50 = stages["vision"].get("p50")
    prefill_len = prefix_tokens + frames * tpf + q_tokens
    return {
        "frames": frames,
        "visual_tokens": frames * tpf,
        "prefill_tokens": prefill_len,
        "context_tokens": prefill_len + config.new_tokens,
        "stages_ms": stages,
        "throughput": {
            "decode_tokens_per_s": 1e3 / token_p50 if token_p50 else None,
            "end_to_end_tokens_per_s": config.new_tokens / (e2e_p50 / 1e3) if e2e_p50 else None,
            "prefill_tokens_per_s": prefill_len / (stages["prefill"]["p50"] / 1e3) if stages["prefill"].get("p50") else None,
            "frames_per_s": frames / ingest_p50 if ingest_p50 > 0 else None,  # decode + preprocess + vision
            "vision_frames_per_s": frames / (vision_p50 / 1e3) if vision_p50 else None,
        },
        "memory": {"peak_rss_bytes": rss.peak_bytes(), "rss_before_bytes": rss.baseline_bytes,
                   "peak_is_windowed": rss.reset_ok, "gpu": gpu.report()},
        "power": power,
    }


def _bundle_info(bundle: Path, manifest: Manifest) -> dict[str, Any]:
    sizes = {rel: (bundle / rel).stat().st_size for rel in manifest.files}
    return {
        "path": str(bundle),
        "model": manifest.model.name,
        "precision": {name: g.precision for name, g in manifest.graphs.items()},
        "files_bytes": sizes,
        "total_bytes": sum(sizes.values()),
        "decoder": {"num_layers": manifest.decoder.num_layers, "hidden_size": manifest.decoder.hidden_size,
                    "vocab_size": manifest.decoder.vocab_size, "max_seq": manifest.decoder.max_seq,
                    "max_frames": manifest.decoder.max_frames},
        "random_weights": bool(manifest.provenance.get("random_weights", False)),
        "provenance": {k: manifest.provenance.get(k) for k in ("exporter", "onnx_exporter", "opset", "created")},
    }


# --- roofline ------------------------------------------------------------------------------------
def _add_roofline(report: dict[str, Any], bundle: Path, manifest: Manifest, config: BenchConfig) -> None:
    """Machine ceilings, graph costs, achieved fractions per setting, and the Jetson projection."""
    costs = _graph_costs(bundle, manifest)
    if isinstance(costs, str):
        report["roofline"] = {"available": False, "reason": costs}
        report["jetson_projection"] = None
        return
    decoder_cost, vision_per_frame = costs
    threads = config.threads
    bandwidth = roofline.measure_memory_bandwidth(threads=threads, array_bytes=config.stream_bytes)
    gemms: dict[str, roofline.GemmResult] = {}

    def gemm_for(cost: roofline.GraphCost) -> roofline.GemmResult:
        op, _ = roofline.dominant_matmul_op(cost)
        attrs = cost.nbits if op == "MatMulNBits" else {}
        key = f"{op}-{attrs.get('bits', '')}-{attrs.get('accuracy_level', '')}"
        if key not in gemms:
            gemms[key] = roofline.measure_gemm(op, size=config.gemm_size, threads=threads, **attrs)
        return gemms[key]

    kv = manifest.decoder
    kv_item = np.dtype(next(t.dtype for t in manifest.graphs["decoder"].inputs if t.name.startswith("past_key_values"))).itemsize
    kv_per_pos = roofline.kv_cache_bytes(kv.num_layers, kv.num_kv_heads, kv.head_dim, 1, kv_item)
    decoder_gemm = gemm_for(decoder_cost)
    per_frames: list[dict[str, Any]] = []
    vision_costs: dict[int, dict[str, Any]] = {}
    for res in report["results"]:
        if "skipped" in res:
            continue
        n = res["frames"]
        vcost = vision_per_frame.times(n)
        vision_costs[n] = vcost.to_dict()
        vgemm = gemm_for(vcost)
        vision_bound_ms = vcost.flops / (vgemm.gflops * 1e9) * 1e3
        # Decode context grows by one per token: the mean step sees the prefill plus half the answer.
        mean_ctx = res["prefill_tokens"] + (report["config"]["new_tokens"] - 1) / 2
        per_tok = roofline.decode_bytes_per_token(decoder_cost.weight_bytes, int(kv_per_pos * mean_ctx),
                                                  kv.hidden_size, kv.vocab_size)
        decode_bound_ms = per_tok["total"] / (bandwidth.best_gbps * 1e9) * 1e3
        res["roofline"] = {
            "decode": {
                "mean_context": mean_ctx, "bytes_per_token": per_tok,
                "flops_per_token": 2 * decoder_cost.matmul_weight_elements,
                "bound_ms": decode_bound_ms, "measured_p50_ms": res["stages_ms"]["decode_per_token"]["p50"],
                "fraction_of_bandwidth_bound": roofline.bound_fraction(decode_bound_ms, res["stages_ms"]["decode_per_token"]["p50"]),
            },
            "vision": {
                "flops": vcost.flops, "flops_by_op": vcost.flops_by_op, "unresolved_nodes": len(vcost.unresolved_nodes),
                "gemm": vgemm.kind, "bound_ms": vision_bound_ms, "measured_p50_ms": res["stages_ms"]["vision"]["p50"],
                "fraction_of_compute_bound": roofline.bound_fraction(vision_bound_ms, res["stages_ms"]["vision"]["p50"]),
            },
        }
        per_frames.append(res)
    report["roofline"] = {
        "available": True,
        "bandwidth": {**bandwidth.__dict__, "best_gbps": bandwidth.best_gbps},
        "gemm": {k: g.__dict__ for k, g in gemms.items()},
        "decoder_gemm": decoder_gemm.kind,
        "graphs": {"decoder": decoder_cost.to_dict(), "vision": {str(k): v for k, v in vision_costs.items()}},
        "kv_bytes_per_position": kv_per_pos,
    }
    report["jetson_projection"] = _jetson(report, manifest, bundle, decoder_cost, vision_costs, kv_per_pos, config) if per_frames else None


def _graph_costs(bundle: Path, manifest: Manifest) -> tuple[roofline.GraphCost, roofline.GraphCost] | str:
    """(decoder, vision at one frame): recorded in the manifest at export (a device needs no onnx),
    else read from the graphs with onnx; else the reason there are none."""
    costs = manifest.costs
    if not costs:
        try:
            import onnx  # noqa: F401
        except ImportError:
            return "the bundle records no graph costs (exported before format 3) and onnx is not installed"
        g = manifest.graphs
        costs = roofline.bundle_costs(bundle, g["vision"].file, g["decoder"].file, g["vision"].inputs[0].name,
                                      manifest.preprocessing.image_size)
    return roofline.GraphCost(**costs["decoder"]), roofline.GraphCost(**costs["vision_per_frame"])


def _jetson(report: dict[str, Any], manifest: Manifest, bundle: Path, decoder_cost: roofline.GraphCost,
            vision_costs: dict[int, dict[str, Any]], kv_per_pos: int, config: BenchConfig) -> dict[str, Any]:
    v, llm = manifest.model.vision, manifest.model.llm
    act_item = 2 if manifest.graphs["vision"].precision == "fp16" else 4
    seq_v = (v.image_size // v.patch_size) ** 2 + (1 if v.family == "clip" else 0)
    vision_weights = next(iter(vision_costs.values()))["weight_bytes"]
    embed_bytes = sum((bundle / t.name).stat().st_size for t in (manifest.embeddings, manifest.embedding_scales) if t)
    ref = next(r for r in report["results"] if "skipped" not in r)
    fp = jetson.Footprint(
        weight_bytes=int(vision_weights + decoder_cost.weight_bytes + embed_bytes),
        kv_bytes_per_position=kv_per_pos,
        vision_activation_bytes_per_frame=act_item * (seq_v * (v.intermediate_size + 4 * v.hidden_size)
                                                      + v.num_heads * seq_v * seq_v),
        prefill_activation_bytes_per_token=act_item * (llm.vocab_size + 2 * llm.intermediate_size + 4 * llm.hidden_size),
        attention_score_bytes_per_token_sq=act_item * llm.num_heads,
        tokens_per_frame=manifest.decoder.tokens_per_frame,
        text_tokens=ref["context_tokens"] - ref["visual_tokens"],
        max_positions=int(llm.max_position_embeddings),
    )
    per_tok = ref["roofline"]["decode"]["bytes_per_token"]["total"]
    return jetson.project(fp, per_tok, ref["frames"], kv_per_pos, os_reserve_bytes=config.os_reserve_bytes)


# --- schema --------------------------------------------------------------------------------------
# Required keys of schema exo2ego-edge-bench/1 (benchmarks/README.md documents every field).
_TOP_KEYS = ("schema", "created", "bundle", "backend", "config", "system", "results", "roofline", "jetson_projection")
_RESULT_KEYS = ("frames", "visual_tokens", "prefill_tokens", "context_tokens", "stages_ms", "throughput", "memory", "power")
_STAT_KEYS = ("p50", "p90", "p99", "mean", "min", "max", "n")
_SYSTEM_KEYS = ("cpu_model", "cpu_logical_cores", "memory_total_bytes", "gpus", "jetson", "ort_providers", "versions")


def schema_problems(report: dict[str, Any]) -> list[str]:
    """Everything in ``report`` that breaks schema ``exo2ego-edge-bench/1`` (empty when valid)."""
    problems = [f"missing top-level key '{k}'" for k in _TOP_KEYS if k not in report]
    if report.get("schema") != SCHEMA:
        problems.append(f"schema is {report.get('schema')!r}, expected {SCHEMA!r}")
    problems += [f"system lacks '{k}'" for k in _SYSTEM_KEYS if k not in report.get("system", {})]
    for res in report.get("results", []):
        where = f"results[frames={res.get('frames')}]"
        if "skipped" in res:
            continue
        problems += [f"{where} lacks '{k}'" for k in _RESULT_KEYS if k not in res]
        for stage in STAGES:
            s = res.get("stages_ms", {}).get(stage)
            if s is None:
                problems.append(f"{where} lacks stage '{stage}'")
                continue
            if s.get("n") == 0:  # a stage this machine could not measure (video decode without PyAV)
                continue
            problems += [f"{where}.{stage} lacks '{k}'" for k in _STAT_KEYS if k not in s]
            if all(k in s for k in _STAT_KEYS) and not (0 <= s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]):
                problems.append(f"{where}.{stage} percentiles are not ordered: {s}")
        if report.get("roofline", {}).get("available") and "roofline" not in res:
            problems.append(f"{where} lacks its roofline fractions")
    rl = report.get("roofline")
    if rl and rl.get("available"):
        problems += [f"roofline lacks '{k}'" for k in ("bandwidth", "gemm", "graphs", "kv_bytes_per_position") if k not in rl]
    return problems


# --- rendering -----------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: stage table per frame count, roofline, Jetson projection, machine."""
    sysd = report["system"]
    lines = [
        f"# Benchmark: {report['bundle']['model']} ({', '.join(f'{k} {v}' for k, v in report['bundle']['precision'].items())})",
        "",
        f"Backend {report['backend']['description']}, video decoded in "
        f"{report['backend'].get('video_decoder', 'software')}; prompt {report['config']['prompt_tokens']} question tokens "
        f"+ {report['config']['prefix_tokens']} prefix tokens, {report['config']['new_tokens']} new tokens, "
        f"{report['config']['runs']} runs after {report['config']['warmup']} warm-up. All times in ms.",
        "",
    ]
    for res in report["results"]:
        if "skipped" in res:
            lines += [f"## {res['frames']} frames: skipped ({res['skipped']})", ""]
            continue
        lines += [f"## {res['frames']} frames ({res['visual_tokens']} visual tokens, prefill {res['prefill_tokens']} tokens)", "",
                  "| stage | p50 | p90 | p99 | mean | n |", "|---|---:|---:|---:|---:|---:|"]
        for stage, s in res["stages_ms"].items():
            lines.append(f"| {stage} | {_fmt(s.get('p50'))} | {_fmt(s.get('p90'))} | {_fmt(s.get('p99'))} | {_fmt(s.get('mean'))} | {s['n']} |")
        t = res["throughput"]
        lines += ["", f"Decode {_fmt(t['decode_tokens_per_s'], 1)} tokens/s, end to end {_fmt(t['end_to_end_tokens_per_s'], 1)} tokens/s, "
                  f"prefill {_fmt(t['prefill_tokens_per_s'], 0)} tokens/s, ingest {_fmt(t['frames_per_s'], 1)} frames/s. "
                  f"Peak RSS {res['memory']['peak_rss_bytes'] / 2**20:.0f} MiB."]
        if res["memory"]["gpu"]:
            lines.append(f"GPU memory peak {res['memory']['gpu']['peak_bytes'] / 2**20:.0f} MiB.")
        if res["power"] and res["power"].get("energy_per_token_j"):
            lines.append(f"Decode power {res['power']['decode_mean_power_w']:.1f} W, {res['power']['energy_per_token_j'] * 1e3:.1f} mJ/token.")
        rl = res.get("roofline")
        if rl:
            d, v = rl["decode"], rl["vision"]
            lines += ["", "| roofline | model figure | bound (ms) | measured p50 (ms) | achieved |", "|---|---:|---:|---:|---:|",
                      f"| decode (memory) | {d['bytes_per_token']['total'] / 2**20:.1f} MiB/token at context {d['mean_context']:.0f} | "
                      f"{d['bound_ms']:.3f} | {_fmt(d['measured_p50_ms'], 3)} | {_pct(d['fraction_of_bandwidth_bound'])} |",
                      f"| vision (compute, {v['gemm']}) | {v['flops'] / 1e9:.2f} GFLOP | {v['bound_ms']:.2f} | "
                      f"{_fmt(v['measured_p50_ms'])} | {_pct(v['fraction_of_compute_bound'])} |"]
        lines.append("")
    lines += _context_lines(report.get("decode_vs_context") or [])
    rl = report.get("roofline") or {}
    if rl.get("available"):
        bw = rl["bandwidth"]
        lines += ["## Machine ceilings (measured in this run)", "",
                  f"STREAM copy {bw['copy_gbps']:.1f} GB/s, triad {bw['triad_gbps']:.1f} GB/s ({bw['threads']} threads, "
                  f"{bw['array_bytes'] / 2**20:.0f} MiB arrays), 1-thread copy {bw['single_thread_copy_gbps']:.1f} GB/s."]
        for g in rl["gemm"].values():
            lines.append(f"GEMM {g['kind']} {g['m']}x{g['n']}x{g['k']}: {g['gflops']:.1f} GFLOP/s ({g['engine']}).")
        lines.append("")
    proj = report.get("jetson_projection")
    if proj:
        lines += [f"## Jetson projection (not a measurement) at {proj['frames']} frames, context {proj['context']}", "",
                  f"{proj['note']} OS reserve {proj['os_reserve_bytes'] / 2**30:.1f} GiB ({proj['os_reserve_assumption']}).", "",
                  "| board | GB/s | decode ms/token (lower bound) | tokens/s (upper bound) | needs / available GiB | fits | max frames | max context |",
                  "|---|---:|---:|---:|---:|---|---:|---:|"]
        for b in proj["boards"]:
            lines.append(f"| {b['board']} | {b['bandwidth_gbps']:.1f} | {b['decode_ms_per_token_lower_bound']:.2f} | "
                         f"{b['decode_tokens_per_s_upper_bound']:.0f} | {b['needed_bytes'] / 2**30:.2f} / {b['available_bytes'] / 2**30:.1f} | "
                         f"{'yes' if b['fits'] else 'no'} | {b['largest_frames']} | {b['largest_context']} |")
        lines.append("")
    lines += ["## Machine", "", f"{sysd['cpu_model']}, {sysd['cpu_logical_cores']} logical cores, "
              f"{(sysd['memory_total_bytes'] or 0) / 2**30:.0f} GiB RAM, {sysd['os']}, Python {sysd['python']}; "
              f"load average {', '.join(f'{x:.1f}' for x in sysd.get('load_average') or [])}; "
              f"ORT providers {', '.join(sysd['ort_providers'])}; "
              + ", ".join(f"{k} {v}" for k, v in sysd["versions"].items()) + "."]
    if sysd["gpus"]:
        lines.append("GPUs: " + ", ".join(f"{g['name']} ({_gib(g['memory_total_bytes'])})" for g in sysd["gpus"]) + ".")
    if sysd["jetson"]:
        lines.append(f"Jetson: {sysd['jetson']}.")
    return "\n".join(lines) + "\n"


def _context_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Decode per token against the KV cache's length, as ratios to the shortest context measured."""
    measured = [r for r in rows if "skipped" not in r]
    if not measured:
        return []
    base = measured[0]["decode_per_token_ms"]["p50"]
    lines = ["## Decode against context length", "", "| context | p50 ms/token | p90 | tokens/s | x shortest |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['context']} | skipped: {r['skipped']} | | | |")
            continue
        s = r["decode_per_token_ms"]
        lines.append(f"| {r['context']} | {_fmt(s['p50'], 3)} | {_fmt(s['p90'], 3)} | {1e3 / s['p50']:.1f} | {s['p50'] / base:.2f} |")
    return lines + [""]


def _gib(n: int | None) -> str:
    """A GPU's memory; None where nvidia-smi says [N/A] (a Jetson: its GPU shares the system RAM)."""
    return f"{n / 2**30:.0f} GiB" if n is not None else "memory shared with the CPU"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Stacked p50 stage bars per frame count, with decode's bandwidth floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "skipped" not in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['frames']} frames" for r in rows]
    bottom = np.zeros(len(rows))
    for stage in ("video_decode", "preprocess", "vision", "prefill"):
        vals = np.array([r["stages_ms"][stage]["p50"] for r in rows])
        ax1.bar(labels, vals, bottom=bottom, label=stage)
        bottom += vals
    decode = np.array([r["stages_ms"]["decode_per_token"]["p50"] * (report["config"]["new_tokens"] - 1) for r in rows])
    ax1.bar(labels, decode, bottom=bottom, label=f"decode x{report['config']['new_tokens'] - 1}")
    ax1.set_ylabel("ms (p50)")
    ax1.set_title("End to end, by stage")
    ax1.legend(fontsize=8)
    measured = [r["stages_ms"]["decode_per_token"]["p50"] for r in rows]
    ax2.bar(labels, measured, label="measured p50")
    if all("roofline" in r for r in rows):
        ax2.scatter(labels, [r["roofline"]["decode"]["bound_ms"] for r in rows], color="k", marker="_", s=800,
                    label="bandwidth floor", zorder=3)
    ax2.set_ylabel("ms per token")
    ax2.set_title("Decode vs. memory-bandwidth roofline")
    ax2.legend(fontsize=8)
    fig.suptitle(f"{report['bundle']['model']} {report['bundle']['precision'].get('decoder')} on {report['system']['cpu_model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
