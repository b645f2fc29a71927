"""`exo2ego-edge doctor`."""

from __future__ import annotations

import click

from exo2ego_edge.cli.pending import not_yet


@click.command(name="doctor", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def doctor(args: tuple[str, ...]) -> None:
    """Report what this machine can run: Python, ONNX Runtime, TensorRT, GPU (issue 5; not implemented yet)."""
    not_yet("exo2ego-edge doctor", 5)
