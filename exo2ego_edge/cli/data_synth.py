import click


@click.command()
def synth() -> None:
    """placeholder"""
