"""Where runs live: ``<run.out_dir>/<name>/``, and ``<run.out_dir>/latest``, the link to the newest
run with a checkpoint (written by training, read by ``export`` and ``eval`` given no run). Neutral:
deployment reads it without importing the config or the training code."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

DEFAULT_OUT_DIR = "runs"  # run.out_dir's default
LATEST_NAME = "latest"


def latest_run(out_dir: Optional[str | Path] = None) -> Path:
    """``<out_dir>/latest`` (default: ``runs/latest``): the run a command given none uses."""
    return Path(out_dir if out_dir is not None else DEFAULT_OUT_DIR) / LATEST_NAME
