"""The Python API: what the CLI does, in a few calls from a notebook (``import snnkit``).

- :func:`configure`: a :class:`~snnkit.config.Config` from a recipe and sections given as dicts;
- :func:`tensor_data`: your own tensors as a dataset the other calls find by name;
- :func:`train` / :func:`resume`: a run directory with its checkpoints, as ``snnkit train`` makes;
- :func:`load`: the trained network from a run directory or checkpoint;
- :func:`export`: any form (``unrolled``, ``streaming``, ``int8``, ``nir``), checked where it is made;
- :func:`evaluate`: accuracy and spike efficiency, and with ``onnx`` the parity verdict;
- :func:`convert`: a SpikingJelly or snnTorch model as a snnkit network (:mod:`snnkit.conversion`).

Each wraps the library function the CLI calls. ``model=`` on :func:`resume`, :func:`load`,
:func:`export` and :func:`evaluate` names a model of your own (``package.module:function``) that the
checkpoint names, which imports (runs) that code; a checkpoint alone never does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import TensorDataset

from .config import Config, resolve_config
from .conversion import convert, to_original_state_dict
from .data import DATASETS, DataBundle, register_dataset
from .errors import ConfigError
from .models import naming
from .spiking import SpikingNet

__all__ = ["configure", "tensor_data", "train", "resume", "load", "export", "evaluate", "convert",
           "to_original_state_dict"]

_TENSOR_DATA: dict[str, DataBundle] = {}  # the bundles tensor_data registered, by name


def configure(recipe: Optional[str | Path] = None, overrides: Sequence[str] = (), **sections: dict[str, Any]
              ) -> Config:
    """Defaults < ``recipe`` (a bundled name or a YAML path) < ``sections`` (e.g. ``method={"name":
    "rate_m", "T": 4}``) < ``overrides`` (``"section.key=value"``, as ``--set`` takes)."""
    texts = []
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ConfigError(f"configure({section}=...) must be a dict of keys to values, got {type(values).__name__}")
        texts += [f"{section}.{key}={json.dumps(value)}" for key, value in values.items()]
    return resolve_config(recipe, [*texts, *overrides])


def tensor_data(name: str, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                classes: int | list[str], kind: str = "static") -> DataBundle:
    """Tensors ``(x [N, C, H, W] or event [N, T, C, H, W], y [N])`` as the dataset ``name`` for this
    process (``data.name`` in :func:`configure`; calling again replaces it). The tensors are used as
    they are: normalise them first."""
    if name in DATASETS and name not in _TENSOR_DATA:
        raise ConfigError(f"{name} is a dataset snnkit ships; give your tensors another name")
    class_names = [str(c) for c in range(classes)] if isinstance(classes, int) else list(classes)
    x, _ = train
    shape = tuple(x.shape[1:] if kind == "static" else x.shape[2:])
    bundle = DataBundle(TensorDataset(*train), TensorDataset(*test), shape, class_names, kind)
    if name not in _TENSOR_DATA:
        register_dataset(name)(lambda root: _TENSOR_DATA[name])
    _TENSOR_DATA[name] = bundle
    return bundle


def train(config: Config, data: Optional[DataBundle] = None, progress: bool = True):
    """Train ``config`` in a new run directory; returns its :class:`~snnkit.training.trainer.RunResult`."""
    from .training import train as train_run
    from .training.progress import EpochProgress

    return train_run(config, EpochProgress(enabled=progress), data)


def resume(run: str | Path, model: Optional[str] = None, progress: bool = True):
    """Continue the run in ``run`` from its last checkpoint."""
    from .training import resume as resume_run
    from .training.progress import EpochProgress

    with naming(model):
        return resume_run(run, EpochProgress(enabled=progress))


def load(run: str | Path, model: Optional[str] = None) -> SpikingNet:
    """The trained network (eval mode, CPU) of a run directory or checkpoint file."""
    from .checkpoint import load_checkpoint, model_from_checkpoint

    with naming(model):
        return model_from_checkpoint(load_checkpoint(run))


def export(run: str | Path, form: str = "unrolled", out: Optional[str | Path] = None, T: Optional[int] = None,
           opset: Optional[int] = None, model: Optional[str] = None, data_root: Optional[str] = None):
    """Export the checkpoint in ``run`` as ``form`` (default file beside it) and check the written
    file; returns its :class:`~snnkit.deploy.writer.ExportResult`."""
    from .deploy import OPSET
    from .deploy.export import export_checkpoint

    with naming(model):
        return export_checkpoint(run, out, OPSET if opset is None else opset, T, form, data_root)


def evaluate(run: Optional[str | Path] = None, onnx: Optional[str | Path] = None, model: Optional[str] = None,
             data_root: Optional[str] = None, batch_size: int = 256, runs: Optional[str | Path] = None):
    """Test accuracy and spike efficiency of the checkpoint (default: the latest run under ``runs``,
    a ``run.out_dir``, default ``runs``), or with ``onnx`` of the graph, with its parity verdict
    against the checkpoint (``result.parity.passed``)."""
    from .deploy.evaluate import evaluate as evaluate_run

    with naming(model):
        return evaluate_run(run, onnx, data_root, batch_size, runs=runs)
