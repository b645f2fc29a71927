"""`exo2ego-edge train`."""

from __future__ import annotations

import click

from exo2ego_edge.cli.pending import not_yet


@click.command(name="train", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Train the student: init -> stage 1 -> stage 2 -> stage 3 (issue 3; not implemented yet)."""
    not_yet("exo2ego-edge train", 3)
