"""What every command shares: logging set-up and turning expected errors into one line.

Exit status: 0 success; 2 an error the user can act on (one line on stderr); 130 interrupted by
Ctrl-C (SIGINT), 143 stopped by SIGTERM (the same line); 1 a bug (a traceback) or, for
``eval --onnx``, a failed parity check.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import typer
from rich import get_console
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from snnkit.errors import SnnkitError

console = get_console()  # shared with the progress bars, so log lines print above them
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=console, show_path=False)],
                        force=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or ``kill``), taken down the same path as Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected mistakes end as one line on stderr and exit code 2, never a traceback; Ctrl-C and
    SIGTERM end as one line saying what was kept."""
    try:
        with sigterm_as_interrupt():
            yield
    except SnnkitError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as e:
        err_console.print(f"interrupted{f'; {e}' if str(e) else ''}", markup=False, highlight=False,
                          soft_wrap=True)
        raise typer.Exit(128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)) from None
