"""`exo2ego-edge bench`."""

from __future__ import annotations

import click

from exo2ego_edge.cli.pending import not_yet


@click.command(name="bench", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Latency benchmarks: per-stage profiles, rooflines, Jetson projections (issue 6; not implemented yet)."""
    not_yet("exo2ego-edge bench", 6)
