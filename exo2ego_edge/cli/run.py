"""`exo2ego-edge run`."""

from __future__ import annotations

import click

from exo2ego_edge.cli.pending import not_yet


@click.command(name="run", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Answer a question about an egocentric video with a bundle (issue 5; not implemented yet)."""
    not_yet("exo2ego-edge run", 5)
