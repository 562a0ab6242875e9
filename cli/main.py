"""The ``snnkit`` Typer app."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from snnkit import __version__

from . import eval as eval_cmd, export as export_cmd, listing, train as train_cmd
from .common import setup_logging

app = typer.Typer(name="snnkit", no_args_is_help=True, add_completion=False,
                  help="Train spiking neural networks with rate-based backpropagation and deploy them.")
app.command()(train_cmd.train)
app.command()(export_cmd.export)
app.command(name="eval")(eval_cmd.eval_command)
app.command(name="list")(listing.list_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"snnkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    setup_logging(verbose)


def main() -> None:
    app()
