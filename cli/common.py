"""What every command shares: logging set-up and turning expected errors into one line."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

import typer
from rich import get_console
from rich.console import Console
from rich.logging import RichHandler

from snnkit.errors import SnnkitError

console = get_console()  # shared with the progress bars, so log lines print above them
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=console, show_path=False)],
                        force=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected mistakes end as one line on stderr and exit code 2, never a traceback."""
    try:
        yield
    except SnnkitError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted; the last completed epoch's checkpoint is intact")
        sys.exit(130)
