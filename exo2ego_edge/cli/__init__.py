"""The ``exo2ego-edge`` command line: thin click commands over library functions.

Each command group lives in its own module and imports its layer lazily, so ``exo2ego-edge run``
never imports torch and ``--help`` stays fast. A :class:`~exo2ego_edge.errors.UserError` anywhere
becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from exo2ego_edge import __version__
from exo2ego_edge.cli.bench import bench
from exo2ego_edge.cli.data import data
from exo2ego_edge.cli.demo import demo
from exo2ego_edge.cli.device import engines, verify
from exo2ego_edge.cli.doctor import doctor
from exo2ego_edge.cli.eval import eval_
from exo2ego_edge.cli.export import export
from exo2ego_edge.cli.run import run
from exo2ego_edge.cli.train import pretrain_tower, train
from exo2ego_edge.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="exo2ego-edge")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Train an Exo2Ego egocentric video MLLM, export it to ONNX / TensorRT, and run it on the edge.

    \b
    Pipeline:
      exo2ego-edge data synth        make a simulated Ego-Exo4D world (or bring the real one)
      exo2ego-edge data build-clips  cut Ego-ExoClip pairs + instructions from it
      exo2ego-edge pretrain-tower    (tiny preset) a vision tower that knows the simulator's objects
      exo2ego-edge train             init -> stage 1 -> stage 2 -> stage 3
      exo2ego-edge export --int8     student checkpoint -> bundle (ONNX [+ TensorRT])
      exo2ego-edge run               answer a question about an egocentric video

    \b
    On the device (no torch):
      exo2ego-edge doctor            what this machine can run
      exo2ego-edge engines build B   TensorRT engines for this GPU, from the bundle alone
      exo2ego-edge verify BUNDLE     the parity gate, through the backend that will serve
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for command in (data, pretrain_tower, train, export, run, bench, eval_, demo, doctor, verify, engines):
    cli.add_command(command)


def os_error_line(e: OSError) -> str:
    """'PATH: reason', and why when a file stands where a folder was needed."""
    if not e.filename:
        return str(e)
    hint = " (a file is in the way of a folder)" if isinstance(e, FileExistsError) and Path(e.filename).is_file() else ""
    return f"{e.filename}: {e.strerror or e}{hint}"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="exo2ego-edge", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # disk full, permission denied, ...: the OS already said it in one line
        click.echo(f"error: {os_error_line(e)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
