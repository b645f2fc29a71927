"""`exo2ego-edge export`."""

from __future__ import annotations

import click

from exo2ego_edge.cli.pending import not_yet


@click.command(name="export", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def export(args: tuple[str, ...]) -> None:
    """Export a student checkpoint to a bundle: ONNX, INT8/FP16, TensorRT (issue 4; not implemented yet)."""
    not_yet("exo2ego-edge export", 4)
