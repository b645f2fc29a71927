"""`exo2ego-edge verify` and `exo2ego-edge engines build`: the on-device checks, torch-free."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True,
              help="Run the golden inputs through ONNX Runtime or the bundle's TensorRT engines.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto", show_default=True,
              help="ONNX Runtime's provider (--backend ort).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def verify(bundle: Path, backend: str, device: str, as_json: bool) -> None:
    """Run the parity gate on this machine: the golden clips the exporter stored in BUNDLE, through
    the chosen backend, against PyTorch's outputs, with the thresholds the bundle was exported
    with. Exits 1 when a figure misses its threshold.

    \b
    exo2ego-edge verify bundle                     # ONNX Runtime, best provider here
    exo2ego-edge verify bundle --backend tensorrt  # the engines built by `engines build`
    """
    from exo2ego_edge.runtime.verify import verify_bundle

    r = verify_bundle(bundle, backend=backend, device=device)
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        status = "PASSED" if r["passed"] else "FAILED"
        click.echo(f"parity {status} on {r['clips']} golden clips, {r['source']}")
        click.echo(f"  visual cosine mean {r['visual_cosine_mean']:.6f} min {r['visual_cosine_min']:.6f}; "
                   f"logits max |err| {r['logits_max_abs']:.3g}; greedy agreement {r['token_agreement']:.1%} "
                   f"of {r['tokens_compared']} tokens; identical answers on {r['exact_sequences']} of {r['clips']}")
        for failure in r["failures"]:
            click.echo(f"  failed: {failure}")
    if not r["passed"]:
        raise click.exceptions.Exit(1)


@click.group(name="engines")
def engines() -> None:
    """TensorRT engines for a bundle, built on the device that runs them (TensorRT 10 or newer)."""


@engines.command(name="build")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 engines from a float32 bundle.")
@click.option("--int8", "precision", flag_value="int8",
              help="INT8 engines from the bundle's Q/DQ graphs (export --int8 --target tensorrt).")
@click.option("--dla-core", type=int, help="Build the vision engine for this DLA core (Orin NX / AGX Orin).")
@click.option("--max-frames", type=int, help="Largest frame count the engines accept [the bundle's].")
@click.option("--max-seq", type=int, help="Largest past + new tokens [the bundle's].")
@click.option("--timing-cache", type=click.Path(path_type=Path), help="Reuse and update this timing cache file.")
def engines_build(bundle: Path, precision: str | None, dla_core: int | None, max_frames: int | None,
                  max_seq: int | None, timing_cache: Path | None) -> None:
    """Build TensorRT engines for this GPU from BUNDLE's ONNX graphs alone (no checkpoint, no
    torch) into BUNDLE/engines, and record them in its manifest. Without --fp16 / --int8 each
    engine has its graph's precision. Then: exo2ego-edge verify BUNDLE --backend tensorrt.
    """
    from exo2ego_edge.runtime.engines import build_engines

    manifest = build_engines(bundle, precision, dla_core, max_frames, max_seq, timing_cache)
    for e in manifest.engines:
        click.echo(f"built {e.file} ({e.precision}, TensorRT {e.tensorrt_version}, {e.gpu_name})")
