"""Run directories: claimed atomically, locked while trained, never left half-made.

``<out_dir>/<name>/`` is created with ``os.mkdir``, which fails when the name exists, so two runs
never share a folder: a default name (``<recipe>-<method>-<time>``) takes the next free suffix
(``-2``, ``-3``, ...), and a ``--name`` that holds a run is refused. The process training a run
holds an exclusive ``flock`` on ``<run>/.lock`` for as long as it trains (the kernel releases it
when the process ends, even by ``kill -9``), so a second ``train`` or ``--resume`` of a run in
progress is refused too.

A run that stops before its first checkpoint is removed. One killed before it (nothing could
clean up) is *dead*: a ``config.yaml``, no checkpoint, no process holding the lock. Training again
with its ``--name`` replaces it; ``--resume`` starts it again from its ``config.yaml``.
``<out_dir>/latest`` moves to a run when it writes its first checkpoint, never before.
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Optional

from ..checkpoint import CHECKPOINT_NAME, LOCK_NAME, is_run_folder
from ..layout import latest_run
from ..errors import ConfigError, SnnkitError, WriteError

log = logging.getLogger("snnkit.train")

@dataclass
class RunDir:
    """A run directory; ``lock_fd`` is set in the one process that holds its lock (rank 0), which
    alone writes, clears or removes it. Other processes receive it with ``lock_fd`` None."""

    path: Path
    lock_fd: Optional[int] = None

    def __getstate__(self) -> dict:  # handed to the other ranks: the lock stays with its owner
        return {"path": self.path, "lock_fd": None}

    @property
    def owned(self) -> bool:
        return self.lock_fd is not None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor drops the flock
            self.lock_fd = None

    def clear(self, keep: tuple[str, ...] = ()) -> None:
        """Remove everything in the run except the lock and ``keep``."""
        for p in self.path.iterdir():
            if p.name in (LOCK_NAME, *keep):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def discard(self) -> None:
        """Remove the run (it stopped before its first checkpoint) and release it."""
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            self.release()


def point_latest(run_dir: Path) -> None:
    """``<out_dir>/latest`` -> ``run_dir``, replaced atomically (a relative link)."""
    latest = latest_run(run_dir.parent)
    tmp = latest.with_name(f".{latest.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, latest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot point {latest} at {run_dir} ({e.strerror}); the run itself is complete") from None


def lock(path: Path) -> Optional[int]:
    """An exclusive lock on ``path/.lock`` (its descriptor), or None if another process holds it or
    the run was removed (and perhaps made again) while we waited."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise WriteError(f"cannot write in {path} ({e.strerror}); choose a writable run.out_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:  # a file system without locks (ENOLCK, EOPNOTSUPP)
        log.warning("%s: cannot lock the run (%s); make sure no other process trains it", path, e.strerror)
    try:
        same = os.fstat(fd).st_ino == os.stat(path / LOCK_NAME).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def is_dead(path: Path) -> bool:
    """A run folder with no checkpoint, or an empty folder."""
    names = {p.name for p in path.iterdir()}
    return CHECKPOINT_NAME not in names and (not names or is_run_folder(path))


def make_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"run.out_dir {out_dir} is a file, not a folder; point run.out_dir at a folder") from None
    except OSError as e:
        raise WriteError(f"cannot create run.out_dir {out_dir} ({e.strerror}); choose a writable folder") from None


def claim(out_dir: str | Path, name: Optional[str], default_name: str) -> RunDir:
    """A new, locked run directory under ``out_dir``: ``name``, or ``default_name`` with the first free
    suffix."""
    out_dir = Path(out_dir)
    make_out_dir(out_dir)
    if name is not None:
        return claim_name(out_dir / name)
    for i in count(1):
        path = out_dir / (default_name if i == 1 else f"{default_name}-{i}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        fd = lock(path)
        if fd is not None:  # else someone replaced it between our mkdir and lock: take the next name
            return RunDir(path, fd)


def claim_name(path: Path) -> RunDir:
    """``path`` made new, or replacing a dead run; a run with a checkpoint or in progress is refused."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not path.is_dir():
            raise SnnkitError(f"{path} is a file; choose another --name") from None
        refuse_unless_dead(path)  # before writing a lock file into a folder that is not a run
    fd = lock(path)
    if fd is None:
        raise SnnkitError(f"{path} is being trained by another process; choose another --name")
    run = RunDir(path, fd)
    try:
        refuse_unless_dead(path)  # again, holding the lock: a run may have written its checkpoint since
    except SnnkitError:
        run.release()
        raise
    if any(p.name != LOCK_NAME for p in path.iterdir()):
        log.info("%s held a run that stopped before its first checkpoint; starting it afresh", path)
        run.clear()
    return run


def refuse_unless_dead(path: Path) -> None:
    if is_dead(path):
        return
    if (path / CHECKPOINT_NAME).is_file():
        raise SnnkitError(f"run directory {path} already holds a run; choose another --name or "
                          f"continue it with --resume {path}")
    raise SnnkitError(f"{path} holds files that are not an snnkit run; choose another --name")


def reopen(path: Path) -> RunDir:
    """The existing run at ``path``, locked for ``--resume``."""
    fd = lock(path)
    if fd is None:
        raise SnnkitError(f"{path} is being trained by another process; wait for it to finish or stop it first")
    return RunDir(path, fd)
