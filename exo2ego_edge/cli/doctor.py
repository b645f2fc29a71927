"""`exo2ego-edge doctor`: what this machine can run (a thin layer over runtime.doctor)."""

from __future__ import annotations

import json

import click


@click.command(name="doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Report Python, ONNX Runtime and its providers, TensorRT / pycuda, torch and its CUDA (for
    training and export), GPU, Jetson, memory, and which backends this machine can run."""
    from exo2ego_edge.runtime.doctor import diagnose, report_lines

    report = diagnose()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo("\n".join(report_lines(report)))
