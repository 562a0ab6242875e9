"""Checkpoints: plain dicts of tensors and built-in types, loadable with ``weights_only=True``.

A checkpoint carries everything needed to rebuild the model without training code (the model spec,
T, the data description, the resolved config) plus the training state for resume. Writes are
atomic: a temporary file in the same folder, then a rename.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import CheckpointError, one_line
from .files import atomic_write_with
from .models import ModelSpec, build_model, require_named
from .spiking import SpikingNet

FORMAT = "snnkit.checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.yaml"
LOCK_NAME = ".lock"  # made when a run directory is claimed
FIELDS = {"model": dict, "T": int, "data": dict, "config": dict, "state_dict": dict, "train_state": dict}
DATA_FIELDS = ("name", "kind", "input_shape", "class_names", "normalization")


def make_checkpoint(net: SpikingNet, spec: ModelSpec, T: int, data: dict, config: dict,
                    train_state: dict[str, Any] | None = None) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "snnkit_version": __version__,
        "model": spec.as_dict(), "T": T, "data": data, "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "train_state": train_state or {},
    }


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old file or the new one."""
    atomic_write_with(path, lambda f: torch.save(obj, f))


def is_run_folder(path: Path) -> bool:
    """A folder snnkit claimed for a run: it holds the lock that claiming it made (a run claimed a
    moment ago may hold only that and a config being written) or a config (a run whose lock is gone)."""
    return (path / LOCK_NAME).exists() or (path / CONFIG_NAME).is_file()


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
        if not p.is_file() and is_run_folder(p.parent):
            raise CheckpointError(f"{path} has no checkpoint yet: its run has not finished its first epoch "
                                  f"(if it was stopped, `snnkit train --resume {path}` starts it again)")
    if not p.is_file():
        raise CheckpointError(f"no checkpoint at {path}; give a run directory or a {CHECKPOINT_NAME} file "
                              "(train one with `snnkit train`)")
    return p


def load_checkpoint(path: str | Path) -> dict:
    p = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt or pickled with arbitrary objects
        raise CheckpointError(f"{p} is not a readable snnkit checkpoint ({type(e).__name__}); "
                              "re-export it from its run directory or retrain") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an snnkit checkpoint (no '{FORMAT}' format tag); "
                              "give a checkpoint written by `snnkit train`")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{p} was written by a newer snnkit (format {ckpt['format_version']}); upgrade snnkit")
    bad = next((k for k, t in FIELDS.items() if not isinstance(ckpt.get(k), t)), None)
    bad = bad or next((f"data.{k}" for k in DATA_FIELDS if k not in ckpt["data"]), None)
    if bad is not None:
        raise CheckpointError(f"{p} is damaged: its '{bad}' entry is missing or malformed; use another "
                              "checkpoint of the run (best.pt) or retrain")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> SpikingNet:
    try:
        spec = ModelSpec.from_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the checkpoint's model spec is damaged ({type(e).__name__}: {e}); "
                              "use another checkpoint of the run (best.pt) or retrain") from None
    require_named(spec.name, "the checkpoint")
    net = build_model(spec)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's weights do not fit its model spec ({one_line(e)}); "
                              "it is damaged") from None
    return net.eval()


def nonfinite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` holding a NaN or an infinity."""
    return [name for name, t in state_dict.items() if t.is_floating_point() and not bool(t.isfinite().all())]
