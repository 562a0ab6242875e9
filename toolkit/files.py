"""Atomic file writes: the target is either the old file or the complete new one, never a part.

New files get the mode the umask gives (0644 under the usual 022), like any other file the user
writes. A write that fails because of the file system (disk full, read-only, a folder in the way)
raises :class:`~snnkit.errors.WriteError` with one sentence; the temporary file is removed.
"""
from __future__ import annotations

import os
import secrets
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

from .errors import WriteError


class _Recorded:
    """A file object that remembers the first ``OSError`` of its ``write``: ``torch.save`` reports a
    failed write (ENOSPC) as an unrelated ``RuntimeError`` about stream positions."""

    def __init__(self, f: BinaryIO):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def _temporary(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, created exclusively with mode 0666 less the umask."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _cannot_write(path: Path, e: OSError | str) -> WriteError:
    reason = e if isinstance(e, str) else e.strerror or str(e)
    error = WriteError(f"cannot write {path} ({reason}); free space or choose a writable "
                       f"location and try again (the previous file, if any, is unchanged)")
    error.path, error.reason = path, reason
    return error


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, sync it, then rename it over ``path``."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{path} is a folder; give a file path to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary(path)
    except OSError as e:
        raise _cannot_write(path, e) from None
    f: Optional[_Recorded] = None
    try:
        with os.fdopen(fd, "wb") as raw:
            f = _Recorded(raw)
            write(f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else f.error if f is not None else None
        if cause is not None:
            raise _cannot_write(path, cause) from None
        raise
    return path


def atomic_write(path: str | Path, data: bytes) -> Path:
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, text.encode())


def append_line(path: str | Path, line: str) -> Path:
    """Add ``line`` to a small text file by rewriting it atomically (never a torn last line)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    return atomic_write_text(path, f"{old}{line}\n")


@contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` for a file that is written (atomically) and checked there,
    renamed over ``path`` when the block succeeds and removed when it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
    except WriteError as e:  # said of the staged name: say it of ``path``
        tmp.unlink(missing_ok=True)
        if getattr(e, "path", None) != tmp:
            raise
        raise _cannot_write(path, e.reason) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _cannot_write(path, e) from None


@contextmanager
def uninterrupted(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Run the block whole: Ctrl-C or SIGTERM arriving inside it is held and delivered when it ends,
    so that a commit (a file and the state saying it was written) is never split. Python runs signal
    handlers in the main thread only; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                for s in signums if signal.getsignal(s) is not None}  # None: a handler Python cannot restore
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            signal.raise_signal(held[0])
