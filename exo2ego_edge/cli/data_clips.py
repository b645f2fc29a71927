import click


@click.command(name="build-clips")
def build_clips() -> None:
    """placeholder"""


@click.command()
def stats() -> None:
    """placeholder"""
