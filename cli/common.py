"""What every command shares: logging set-up and turning expected errors into one line.

Exit status: 0 success; 2 an error the user can act on (one line on stderr), running out of memory
included; 3 ``eval --onnx``: the graph failed its parity check (:data:`FAILED`); 130 interrupted by
Ctrl-C (SIGINT), 143 stopped by SIGTERM (the same line); 1 a bug (a traceback).

Text wraps at word boundaries to the terminal's width (rich's default); an error's sentence stays
one line when stderr is not a terminal (a log file, a pipe), and wraps at words on one.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Annotated, Iterable, Iterator, Optional

import typer
from rich import get_console
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from snnkit.errors import SnnkitError, out_of_memory

MODEL_OPTION = Annotated[Optional[str], typer.Option(
    "--model", help="Import this model of your own (package.module:function or file.py:function) when the "
                    "checkpoint names it. Importing runs that code: naming it is your own act, and a "
                    "checkpoint alone never imports anything.")]

RUNS_OPTION = Annotated[Optional[str], typer.Option(
    "--runs", metavar="DIR", help="Where your runs are, the run.out_dir you trained with: given no run, read "
                                  "DIR/latest (default: runs/latest).")]


def one_of(names: Iterable[str]) -> str:
    """A metavar that shows an option's choices in ``--help``: ``[a|b|c]``."""
    return "[" + "|".join(names) + "]"


FAILED = 3  # eval's exit status for a graph that failed its check: distinct from errors (2) and bugs (1)
console = get_console()  # shared with the progress bars, so log lines print above them
err_console = Console(stderr=True)


def say(text: str) -> None:
    """A line of plain text on stdout (no markup, no highlighting), wrapped at words to the width."""
    console.print(text, markup=False, highlight=False)


def verbose() -> bool:
    """Whether ``snnkit --verbose`` was given (it sets debug logging)."""
    return logging.getLogger().isEnabledFor(logging.DEBUG)


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


def error_line(text: str, markup: bool = False) -> None:
    err_console.print(text, markup=markup, highlight=False, soft_wrap=not err_console.is_terminal)


def fail(message: str) -> typer.Exit:
    """One line on stderr; raise the returned exit (status 2)."""
    error_line(f"[bold red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(2)


@contextmanager
def user_errors(lower: str = "") -> Iterator[None]:
    """Expected mistakes end as one line on stderr and exit code 2, never a traceback; so does
    running out of memory, saying what to ``lower``; Ctrl-C and SIGTERM end as one line saying
    what was kept."""
    try:
        with sigterm_as_interrupt():
            yield
    except SnnkitError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt as e:
        error_line(f"interrupted{f'; {e}' if str(e) else ''}")
        raise typer.Exit(128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)) from None
    except Exception as e:
        if lower and out_of_memory(e):
            raise fail(f"out of memory ({type(e).__name__}); lower {lower} and try again") from None
        raise
