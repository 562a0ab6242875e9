"""Where runs live: ``<run.out_dir>/<name>/``, and ``<run.out_dir>/latest``, the link to the newest
run with a checkpoint (written by training, read by ``export`` and ``eval`` given no run). Neutral:
deployment reads it without importing the config or the training code."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import CheckpointError, SnnkitError

DEFAULT_OUT_DIR = "runs"  # run.out_dir's default
LATEST_NAME = "latest"


def latest_run(out_dir: Optional[str | Path] = None) -> Path:
    """``<out_dir>/latest`` (default: ``runs/latest``): the run a command given none uses."""
    return runs_folder(out_dir) / LATEST_NAME


def runs_folder(runs: Optional[str | Path] = None) -> Path:
    """The ``run.out_dir`` a command looks in (default: ``runs``)."""
    return Path(runs if runs is not None else DEFAULT_OUT_DIR)


def chosen_run(run: Optional[str | Path], runs: Optional[str | Path] = None) -> Path:
    """The run directory or checkpoint a command reads: ``run`` as given, or, when ``run`` is a
    ``run.out_dir`` (a folder holding ``latest``), its latest run; with no ``run``, the latest run
    under ``runs`` (default: ``runs/latest``)."""
    if run is not None and runs is not None:
        raise SnnkitError(f"{run} and --runs {runs} both name the run; give one of them")
    if run is not None:
        given = Path(run)
        return given / LATEST_NAME if given.is_dir() and os.path.lexists(given / LATEST_NAME) else given
    latest = latest_run(runs)
    if not os.path.lexists(latest):
        raise CheckpointError(f"no run given and no {latest} (the newest run with a checkpoint under {runs_folder(runs)}/); "
                              "give a run directory or checkpoint, or --runs DIR for runs trained with "
                              "--set run.out_dir=DIR")
    return latest
