"""`exo2ego-edge bench`: per-stage latency distributions, rooflines and a Jetson projection.

A thin wrapper over :func:`exo2ego_edge.perf.harness.run_benchmark`; only ``--preset``
(a random-weight bundle built through the real exporter) imports the export layer and torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from exo2ego_edge.cli.run import video_decoder_option
from exo2ego_edge.errors import UserError


DEFAULT_FRAMES = (8, 16)


def _positive_ints(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        numbers = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got '{value}'") from None
    if not numbers or any(n < 1 for n in numbers):
        raise click.BadParameter(f"expected positive integers, got '{value}'")
    return numbers


@click.command(name="bench")
@click.option("--bundle", type=click.Path(path_type=Path), help="Bundle folder to benchmark.")
@click.option("--preset", help="Instead of --bundle: build a random-weight bundle of this preset (needs the export extra).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "int4"]), default="fp32", show_default=True,
              help="Precision of the --preset bundle.")
@click.option("--llm-layers", type=int, help="--preset only: fewer decoder layers at the same width (a reduced variant).")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="--preset only: where built bundles are cached.")
@click.option("--cpu-decoder", type=click.Choice(["integer", "weight-only", "hybrid"]),
              help="--preset only, with --precision int8: the CPU INT8 decoder, as export's --cpu-decoder [integer].")
@click.option("--backend", type=click.Choice(["auto", "ort", "tensorrt"]), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto", show_default=True,
              help="ONNX Runtime provider for --backend ort.")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads (default: ONNX Runtime's choice).")
@click.option("--frames", callback=_positive_ints,
              help="Frame counts to sweep [8,16, those the bundle accepts; else its max frames].")
@click.option("--prompt-tokens", type=int, default=32, show_default=True, help="Question tokens after the video.")
@click.option("--new-tokens", type=int, default=32, show_default=True, help="Answer tokens (stop token ignored).")
@click.option("--runs", type=int, default=10, show_default=True)
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--video", type=click.Path(exists=True, dir_okay=False), help="A clip to decode (default: synthetic H.264).")
@video_decoder_option
@click.option("--contexts", default="512,2048,4096", show_default=True, callback=_positive_ints,
              help="KV-cache lengths to time a decode step at (or as close as the bundle's max_seq allows).")
@click.option("--no-roofline", is_flag=True, help="Skip the bandwidth / GEMM measurements and the graph walk.")
@click.option("--os-reserve-gb", type=float, default=2.0, show_default=True,
              help="Memory the Jetson projection leaves to the OS and CUDA stack.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as Markdown.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG chart (needs matplotlib).")
def bench(bundle: Path | None, preset: str | None, precision: str, llm_layers: int | None, cache_dir: Path | None,
          cpu_decoder: str | None, backend: str, device: str, threads: int | None, frames: list[int] | None, prompt_tokens: int, new_tokens: int,
          runs: int, warmup: int, video: str | None, video_decoder: str, contexts: list[int], no_roofline: bool, os_reserve_gb: float,
          json_path: Path | None, md_path: Path | None, plot_path: Path | None) -> None:
    """Latency benchmark of a bundle: per-stage p50/p90/p99, tokens/s, frames/s, memory, power,
    achieved fraction of this machine's bandwidth and compute rooflines, and a Jetson projection.

    \b
    exo2ego-edge bench --bundle out/bundle --frames 8,16 --json bench.json
    exo2ego-edge bench --preset egosim-tiny --precision int8 --runs 5 --json out.json
    """
    from exo2ego_edge.perf import harness as bench_harness

    if (bundle is None) == (preset is None):
        raise UserError("bench needs exactly one of --bundle or --preset")
    if cpu_decoder is not None and (preset is None or precision != "int8"):
        raise UserError("--cpu-decoder chooses the decoder of a --preset bundle at --precision int8")
    if bundle is None:
        frames = frames or list(DEFAULT_FRAMES)
        options = {"cpu_decoder": cpu_decoder} if cpu_decoder else {}
        bundle = _build_preset(preset, precision, llm_layers, cache_dir, max(frames), options)
    elif frames is None:
        from exo2ego_edge.bundle import read_manifest

        most = read_manifest(bundle).decoder.max_frames
        frames = [f for f in DEFAULT_FRAMES if f <= most] or [most]
    config = bench_harness.BenchConfig(
        frames=frames, prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=runs, warmup=warmup,
        backend=backend, device=device, threads=threads, video=video, video_decoder=video_decoder,
        roofline=not no_roofline,
        os_reserve_bytes=int(os_reserve_gb * 2**30), contexts=contexts,
    )
    total = len(frames) * (runs + warmup)
    with click.progressbar(length=total, label="bench", file=sys.stderr, show_pos=True,
                           hidden=not sys.stderr.isatty()) as bar:
        last = [0]

        def tick(done: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        report = bench_harness.run_benchmark(bundle, config, progress=tick)
    if preset is not None:
        report["bundle"]["random_weights"] = True
        report["bundle"]["preset"] = preset
    markdown = bench_harness.to_markdown(report)
    if json_path:
        _write(json_path, json.dumps(report, indent=2) + "\n")
    if md_path:
        _write(md_path, markdown)
    if plot_path:
        bench_harness.plot(report, plot_path)
    click.echo(markdown)
    skipped = [r for r in report["results"] if "skipped" in r]
    if len(skipped) == len(report["results"]):
        reasons = "; ".join(f"{r['frames']} frames: {r['skipped']}" for r in skipped)
        raise UserError(f"nothing was measured ({reasons})")


def _build_preset(preset: str, precision: str, llm_layers: int | None, cache_dir: Path | None, max_frames: int,
                  options: dict[str, str]) -> Path:
    try:
        from exo2ego_edge.export.random_bundle import build_random_bundle
    except ImportError as e:
        raise UserError(f"--preset builds a bundle with the exporter, which needs the export extra ({e.name} is missing); "
                        "pass --bundle instead") from None
    return build_random_bundle(preset, precision, llm_layers=llm_layers, cache_dir=cache_dir, max_frames=max_frames,
                               **options)


def _write(path: Path, text: str) -> None:
    from exo2ego_edge.atomic import atomic_file

    with atomic_file(path) as f:
        f.write(text)
