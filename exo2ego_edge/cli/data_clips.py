"""`exo2ego-edge data build-clips` and `data stats`: thin over exo2ego_edge.data.clips."""

from __future__ import annotations

import json
from pathlib import Path

import click

_ROOT_HELP = "Ego-Exo4D root (real download or simulator output)."


@click.command(name="build-clips")
@click.option("--root", required=True, type=click.Path(path_type=Path), help=_ROOT_HELP)
@click.option(
    "--split", default="train", show_default=True,
    help="Reads annotations/atomic_descriptions_<split>.json.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Clips JSONL to write.")
@click.option(
    "--clip-len", default=1.0, show_default=True, type=float,
    help="Clip length in seconds, centred on each timestamp, clamped inside the take.",
)
@click.option("--best-exo-only", is_flag=True, help="Pair each clip only with its best exo camera.")
@click.option(
    "--wearer", default="the camera wearer", show_default=True,
    help='Replacement for the "C" token in clip text.',
)
@click.option(
    "--instructions-out", type=click.Path(path_type=Path), default=None,
    help="Instructions JSONL [default: <out stem>.instructions.jsonl].",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def build_clips(
    root: Path,
    split: str,
    out: Path,
    clip_len: float,
    best_exo_only: bool,
    wearer: str,
    instructions_out: Path | None,
    overwrite: bool,
) -> None:
    """Cut Ego-ExoClip ego/exo clip pairs and EgoIT-style instructions from an Ego-Exo4D root.

    Video paths in the output are absolute. Missing or corrupt videos skip their take (or that
    exo camera) with one warning each; nothing is written if no clip survives.
    """
    from exo2ego_edge.errors import UserError
    from exo2ego_edge.data.clips import build_clips as build, default_instructions_path

    existing = [f for f in (out, instructions_out or default_instructions_path(out)) if f.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} exists; pass --overwrite to replace it")
    report = build(
        root,
        split,
        out,
        clip_len=clip_len,
        best_exo_only=best_exo_only,
        wearer=wearer,
        instructions_out=instructions_out,
    )
    click.echo(report.summary())


@click.command()
@click.option("--root", required=True, type=click.Path(path_type=Path), help=_ROOT_HELP)
@click.option(
    "--clips", type=click.Path(path_type=Path), default=None,
    help="A clips JSONL from build-clips (adds lengths, pairs, text sides).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats(root: Path, clips: Path | None, as_json: bool) -> None:
    """Counts per split, kept/dropped descriptions, and clip lengths / pairs / text sides."""
    from exo2ego_edge.data.clips import dataset_stats, format_stats

    result = dataset_stats(root, clips)
    click.echo(json.dumps(result, indent=2) if as_json else format_stats(result))
