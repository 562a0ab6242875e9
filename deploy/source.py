"""What every deploy command starts from: a checkpoint, checked and opened once, as its model on
CPU in float32 with the topology the cost model reads, the T to run and the dataset it was trained
on. This is the only place deploy opens a checkpoint; everything above takes a :class:`Source`."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch

from snnkit import __version__
from snnkit.checkpoint import load_checkpoint, model_from_checkpoint, nonfinite, resolve_checkpoint_path
from snnkit.data import DataBundle, load_dataset
from snnkit.digest import config_hash
from snnkit.errors import DataError, SnnkitError
from snnkit.spiking import SpikingNet

from . import MAX_T
from .costs import Topology, topology
from .graph import TimeUnrolled, deployable


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Source:
    """What every form starts from: the checkpoint, its model on CPU in float32, the T to run."""

    path: Path
    ckpt: dict
    net: SpikingNet
    T: int
    kind: str
    input_shape: tuple[int, ...]
    topo: Topology

    @classmethod
    def load(cls, checkpoint: str | Path, T: Optional[int] = None) -> "Source":
        """The checkpoint (a file or a run directory), to run for ``T`` steps (default: the trained T)."""
        if T is not None and not 1 <= T <= MAX_T:
            raise SnnkitError(f"--T {T} is not a number of time steps snnkit exports; give 1 to {MAX_T:,}")
        path = resolve_checkpoint_path(checkpoint)
        ckpt = load_checkpoint(path)
        if bad := nonfinite(ckpt["state_dict"]):
            raise SnnkitError(f"{path} holds non-finite weights ({bad[0]}): its run diverged; use an "
                              "earlier checkpoint or retrain with a lower optim.lr")
        kind, trained = ckpt["data"]["kind"], int(ckpt["T"])
        if kind == "event" and T is not None and T != trained:
            raise SnnkitError(f"--T {T} does not fit event data, which gives one frame per step: this model's data "
                              f"has {trained} frames per sample, so export it at T = {trained}")
        net = model_from_checkpoint(ckpt).to("cpu", torch.float32).eval()
        input_shape = tuple(ckpt["data"]["input_shape"])
        return cls(path, ckpt, net, int(T or trained), kind, input_shape, topology(net, input_shape))

    def twin(self) -> TimeUnrolled:
        """The unrolled network with its probes: what every float32 form is judged against."""
        return deployable(self.net, self.T, self.kind, probes=True)

    def example(self, batch: int = 2) -> torch.Tensor:
        """Random samples in the unrolled graph's input layout."""
        return torch.randn(batch, *self.input_shape) if self.kind == "static" else torch.randn(self.T, batch,
                                                                                                *self.input_shape)

    def metadata(self, form: str, opset: Optional[int], computed_once: Iterable[str], out: Path,
                 exporter: str) -> dict:
        """The facts every exported file carries (JSON values): ``computed_once`` names the modules
        the graph computes once per sample, ``exporter`` what wrote it; the checkpoint is named by its SHA-256, its size and its
        path relative to ``out``'s folder (never an absolute path), so eval finds it wherever both go."""
        data = self.ckpt["data"]
        return {
            "snnkit_version": __version__, "format": form, "T": self.T, "neuron": self.ckpt["model"]["neuron"],
            "layer_names": self.topo.layer_names, "topology": self.topo.as_dict(),
            "computed_once": list(computed_once), "input_shape": list(self.input_shape), "input_kind": self.kind,
            "input_layout": "[B, C, H, W]" if self.kind == "static" else "[T, B, C, H, W]",
            "normalization": data["normalization"], "class_names": data["class_names"],
            "dataset": data["name"], "model": self.ckpt["model"], "opset": opset,
            "config_hash": config_hash(self.ckpt["config"]),
            "checkpoint": {"file": self.path.name, "sha256": file_sha256(self.path), "bytes": self.path.stat().st_size,
                           "relative": Path(os.path.relpath(self.path.resolve(), out.resolve().parent)).as_posix()},
            "exporter": exporter,
        }


def checked_dataset(ckpt: dict, root: Optional[str]) -> DataBundle:
    """The dataset the checkpoint was trained on, checked against the model."""
    data = ckpt["data"]
    bundle = load_dataset(data["name"], root)
    expected = tuple(data["input_shape"])
    if tuple(bundle.input_shape) != expected or bundle.num_classes != len(data["class_names"]):
        raise DataError(f"dataset {data['name']!r} gives samples of shape {tuple(bundle.input_shape)} with "
                        f"{bundle.num_classes} classes but the model expects {expected} with "
                        f"{len(data['class_names'])}; point --data-root at the data it was trained on")
    return bundle
