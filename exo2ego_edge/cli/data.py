"""`exo2ego-edge data`: the Ego-Exo4D layer (simulator, Ego-ExoClip builder, stats)."""

from __future__ import annotations

import click

from exo2ego_edge.cli.data_clips import build_clips, stats
from exo2ego_edge.cli.data_synth import synth


@click.group()
def data() -> None:
    """Make or read Ego-Exo4D-layout data and cut Ego-ExoClip pairs from it."""


for command in (synth, build_clips, stats):
    data.add_command(command)
