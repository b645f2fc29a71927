"""`exo2ego-edge eval`."""

from __future__ import annotations

import click

from exo2ego_edge.cli.pending import not_yet


@click.command(name="eval", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_(args: tuple[str, ...]) -> None:
    """Score a checkpoint or bundle on EgoSim-Bench / EgoBench (issue 7; not implemented yet)."""
    not_yet("exo2ego-edge eval", 7)
