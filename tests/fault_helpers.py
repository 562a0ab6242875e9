"""Shared by the bad-input tests: run the CLI, check a one-line error, record the disk, fill it up."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

from typer.testing import CliRunner

from snnkit.cli.main import app

runner = CliRunner()
TINY = ["--set", "model.width=0.125", "--set", "data.batch_size=512", "-T", "1"]  # digits: 3 steps an epoch


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int, *fragments: str) -> str:
    """``result`` exited with ``code``, printed no traceback and exactly one line on stderr, holding
    every fragment; returns that line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, object]:
    """Every file's bytes and every link's target under ``root``, by relative path."""
    files: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            files[str(p.relative_to(root))] = ("link", os.readlink(p))
        elif p.is_file():
            files[str(p.relative_to(root))] = p.read_bytes()
    return files


def temporaries(root: Path) -> list[Path]:
    return list(root.rglob("*.tmp"))


class _FullFile:
    """A file on a disk with ``disk.room`` bytes left per file: a write past it stores what fits and
    raises ENOSPC, as ``write(2)`` does."""

    def __init__(self, f, disk: "DiskFull"):
        self.f, self.disk = f, disk

    def write(self, data) -> int:
        room = self.disk.room if self.disk.full() else len(data)
        self.f.write(memoryview(data)[:room])
        if len(data) > room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)

    def __getattr__(self, name: str):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


class DiskFull:
    """Stands in for ``os`` in ``snnkit.files``: once ``full()`` is true, a file written there holds at
    most ``room`` bytes and the next write fails with ENOSPC."""

    def __init__(self, room: int = 0, full: Callable[[], bool] = lambda: True):
        self.room, self.full = room, full

    def fdopen(self, fd: int, mode: str):
        return _FullFile(os.fdopen(fd, mode), self)

    def __getattr__(self, name: str):
        return getattr(os, name)


class Payload:
    """Pickles as a call of ``fn(*args)``: what a crafted dataset file would run on ``pickle.load``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args
