"""`exo2ego-edge data synth`: make a simulated Ego-Exo4D world (thin wrapper over the simulator)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="synth")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path),
    help="Output folder; refused if it exists, unless --overwrite.",
)
@click.option("--takes", default=100, show_default=True, type=int, help="Number of takes.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same world.")
@click.option("--size", default=128, show_default=True, type=int, help="Frame side (px, even).")
@click.option("--fps", default=8, show_default=True, type=int, help="Frames per second.")
@click.option("--exo-cams", default=2, show_default=True, type=int, help="Exo cameras (>= 2).")
@click.option(
    "--val-frac", default=0.2, show_default=True, type=float,
    help="Fraction of takes put in the val split.",
)
@click.option(
    "--exo-text-frac", default=0.6, show_default=True, type=float,
    help="Fraction of train takes whose text is usable on the exo side.",
)
@click.option(
    "--ego-text-frac", default=0.15, show_default=True, type=float,
    help="Fraction of train takes whose text is usable on the ego side (the rest: video only).",
)
@click.option("--jobs", type=int, help="Worker processes [default: one per CPU, at most 8].")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out when done.")
def synth(out: Path, overwrite: bool, **knobs) -> None:
    """Synthesize a tabletop world in the Ego-Exo4D layout: ego + exo videos, atomic descriptions.

    Writes takes.json, annotations/atomic_descriptions_{train,val}.json,
    takes/<take>/frame_aligned_videos/*.mp4 and simulator/take_records.jsonl.
    """
    from exo2ego_edge.atomic import check_writable
    from exo2ego_edge.data.simulator import synthesize_world  # lazy: keeps --help fast

    check_writable(out, f"--out {out}")
    report = synthesize_world(out, overwrite=overwrite, **knobs)
    click.echo(report.summary())
