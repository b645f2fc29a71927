"""`exo2ego-edge export` (student checkpoint -> bundle) and `exo2ego-edge export inspect BUNDLE`.

Thin click over :func:`exo2ego_edge.export.pipeline.export_bundle`; the export layer (torch,
onnx) is imported only when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from exo2ego_edge.errors import UserError


@click.group(name="export", invoke_without_command=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Student checkpoint folder.")
@click.option("--out", type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--fp16", is_flag=True, help="Float16 graphs (norms/softmax kept fp32).")
@click.option("--int8", is_flag=True, help="INT8: weights (CPU) or explicit Q/DQ (GPU targets).")
@click.option("--int4", is_flag=True, help="INT4 block-wise decoder weights (MatMulNBits); vision INT8.")
@click.option("--target", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="Where the bundle runs: decides the INT8 scheme.")
@click.option("--calib-data", type=click.Path(path_type=Path), help="Clips JSONL (ego_video/start/end) for calibration.")
@click.option("--calib-samples", type=int, default=16, show_default=True, help="Clips used for calibration.")
@click.option("--calib-method", type=click.Choice(["entropy", "percentile", "minmax"]), default="entropy",
              show_default=True, help="Activation range calibration (GPU Q/DQ).")
@click.option("--eval-data", type=click.Path(path_type=Path), help="Held-out clips JSONL for the parity check.")
@click.option("--parity-samples", type=int, default=4, show_default=True, help="Clips in the parity check.")
@click.option("--cpu-activations", type=click.Choice(["dynamic", "static"]), default="dynamic", show_default=True,
              help="CPU INT8 vision activations (dynamic measured faster on ORT CPU).")
@click.option("--cpu-decoder", type=click.Choice(["integer", "weight-only", "hybrid"]), default="integer",
              show_default=True,
              help="CPU INT8 decoder: integer = INT8 weights and activations on the CPU's integer GEMM "
                   "(VNNI / AMX / Arm dot product: much faster prefill), lm_head weight-only; weight-only = "
                   "MatMulNBits with float activations (faster one-token steps on CPUs without AMX); hybrid = "
                   "both graphs, integer for prefill and weight-only for decode steps (the decoder's weights "
                   "twice on disk and in memory).")
@click.option("--vision-kernels", type=click.Choice(["fused", "standard"]), default=None,
              help="Vision tower: fused = its attention and GELU as ONNX Runtime's one-kernel MultiHeadAttention / "
                   "FastGelu (1.3x faster INT8 vision on edge-0.5b's CPU); standard = plain ONNX ops. "
                   "[fused for --target cpu except --fp16, else standard]")
@click.option("--kv-cache", type=click.Choice(["in-place", "concat"]), default=None,
              help="Decoder KV cache: in-place = the graph reads the past where the runtime keeps it and writes "
                   "only each step's new keys and values; concat = past + new copied into a new cache every step "
                   "(what the TensorRT backend runs). [in-place for --target cpu, else concat]")
@click.option("--graph-passes/--no-graph-passes", default=True, show_default=True,
              help="Rewrite the exported graphs before quantizing: one MatMul for the projections that read the "
                   "same input (q/k/v, gate/up) and shape arithmetic folded to constants (fewer, larger ops; "
                   "the same arithmetic). --no-graph-passes keeps the exporter's graph as written.")
@click.option("--ort-optimize", is_flag=True,
              help="Save the CPU graphs as this ONNX Runtime optimizes them: faster session starts, but the "
                   "bundle then loads on exactly this ONNX Runtime version (not on a device's older one).")
@click.option("--trt", is_flag=True, help="Also build TensorRT engines (needs TensorRT).")
@click.option("--dla-core", type=int, help="Build the vision engine for this DLA core (Jetson).")
@click.option("--max-frames", type=int, help="Largest frame count the engines accept [config's num_frames].")
@click.option("--max-seq", type=int, help="Largest past + new tokens [min(max positions, 4096)].")
@click.option("--force", is_flag=True, help="Keep the bundle (marked failed) when parity is below thresholds.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle (never the checkpoint or a folder of other files).")
@click.pass_context
def export(ctx: click.Context, checkpoint: Path | None, out: Path | None, fp16: bool, int8: bool, int4: bool,
           **options) -> None:
    """Export a student checkpoint to a bundle: ONNX graphs, INT8/FP16/INT4, TensorRT engines.

    \b
    exo2ego-edge export --checkpoint runs/student --out bundle --int8
    exo2ego-edge export --checkpoint runs/student --out bundle-trt --int8 --target tensorrt \\
        --calib-data clips.jsonl --trt
    exo2ego-edge export inspect bundle
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, v in (("--checkpoint", checkpoint), ("--out", out)) if v is None]
    if missing:
        raise UserError(f"export needs {' and '.join(missing)} (or: exo2ego-edge export inspect BUNDLE)")
    chosen = [name for name, on in (("fp16", fp16), ("int8", int8), ("int4", int4)) if on]
    if len(chosen) > 1:
        raise UserError(f"--{' and --'.join(chosen)} exclude each other: pick one precision (default fp32)")
    from exo2ego_edge.export.pipeline import export_bundle

    result = export_bundle(checkpoint, out, chosen[0] if chosen else "fp32", **options)
    p = result.manifest.parity
    status = "passed" if p.get("passed") else "FAILED (kept with --force)"
    click.echo(
        f"wrote {result.out} ({', '.join(f'{k} {g.precision}' for k, g in result.manifest.graphs.items())}); "
        f"parity {status}: visual cosine {p['visual_cosine_mean']:.4f}, greedy agreement {p['token_agreement']:.1%}"
    )


@export.command(name="inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
def inspect_(bundle: Path) -> None:
    """Print a bundle's manifest as a table: graphs, precisions, sizes, parity, provenance.

    Exits 1 when a file is missing or does not match its sha256 (the table is printed first).
    """
    from exo2ego_edge.export.inspect_bundle import inspect_bundle

    table, problem = inspect_bundle(bundle)
    click.echo(table)
    if problem:
        click.echo(f"error: integrity check failed: {problem}", err=True)
        raise click.exceptions.Exit(1)
