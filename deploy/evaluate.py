"""``snnkit eval``: accuracy on the test split of the model's dataset, ONNX parity, efficiency.

Both sides see the same batches: PyTorch runs the checkpoint's own model (BatchNorm unfolded,
CPU float32, the reference multi-step layout); onnxruntime runs the exported graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from snnkit.checkpoint import load_checkpoint, model_from_checkpoint
from snnkit.data import DataBundle, encode, load_dataset
from snnkit.errors import DataError, SnnkitError
from snnkit.spiking import SpikingNet

from .costs import Topology, topology
from .graph import deployable
from .efficiency import efficiency_report
from .runtime import OnnxModel, load_onnx

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
LATEST = "runs/latest"


@dataclass(frozen=True)
class Predictions:
    logits: np.ndarray  # [N, classes]
    spike_counts: np.ndarray  # [N, L]
    labels: np.ndarray  # [N]

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.labels).mean())


@dataclass(frozen=True)
class Thresholds:
    max_logit_diff: float = 1e-4
    min_agreement: float = 0.999
    min_spike_identity: float = 0.999
    max_accuracy_drop: float = 0.005  # the int8 graph's verdict: its accuracy against the float32 model's


@dataclass(frozen=True)
class Parity:
    logits_max_abs_diff: float
    prediction_agreement: float
    spike_count_identity: float  # fraction of (sample, layer) counts that are equal
    first_differing_layer: Optional[str]
    torch_accuracy: float
    onnx_accuracy: float
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def passed(self) -> bool:
        t = self.thresholds
        return (self.logits_max_abs_diff <= t.max_logit_diff and self.prediction_agreement >= t.min_agreement
                and self.spike_count_identity >= t.min_spike_identity)


@dataclass(frozen=True)
class EvalResult:
    checkpoint: Path
    dataset: str
    accuracy: float  # of the evaluated model (the ONNX graph when one is given)
    report: dict  # efficiency_report(...)
    parity: Optional[Parity] = None  # the ONNX graph against its PyTorch twin (same folded weights)
    folding: Optional[Parity] = None  # BN folding alone: the checkpoint's model against that twin
    providers: list[str] = field(default_factory=list)
    accuracy_per_step: Optional[list[float]] = None  # a streaming graph's, after t = 1..T steps


@torch.no_grad()
def predict_torch(net: SpikingNet, batches: Batches, T: int, kind: str) -> Predictions:
    outs = [(net(encode(x, T, kind)), y) for x, y in batches]
    return Predictions(torch.cat([o.logits for o, _ in outs]).numpy(),
                       torch.cat([o.spike_counts for o, _ in outs]).numpy().astype(np.int64),
                       torch.cat([y for _, y in outs]).numpy())


def predict_graph(run: Callable[[torch.Tensor], tuple], batches: Batches, T: int, kind: str) -> Predictions:
    """Run a deployed graph (onnxruntime, or its PyTorch twin): static batches go in as
    ``[B, C, H, W]``, event batches as ``[T, B, C, H, W]``; ``run`` returns (logits, spike counts)."""
    outs = [(run(x if kind == "static" else encode(x, T, kind)), y) for x, y in batches]
    return Predictions(np.concatenate([o[0] for o, _ in outs]), np.concatenate([o[1] for o, _ in outs]),
                       torch.cat([y for _, y in outs]).numpy())


@torch.no_grad()
def predict_twin(net: SpikingNet, batches: Batches, T: int, kind: str) -> Predictions:
    """The exported arithmetic in PyTorch: the checkpoint's model with BatchNorm folded, unrolled."""
    twin = deployable(net, T, kind).eval()
    return predict_graph(lambda x: tuple(t.numpy() for t in twin(x)), batches, T, kind)


def parity(ref: Predictions, onnx: Predictions, layer_names: list[str], thresholds: Thresholds) -> Parity:
    same = ref.spike_counts == onnx.spike_counts  # [N, L]
    differing = np.flatnonzero(~same.all(axis=0))
    return Parity(
        logits_max_abs_diff=float(np.abs(ref.logits - onnx.logits).max()),
        prediction_agreement=float((ref.logits.argmax(1) == onnx.logits.argmax(1)).mean()),
        spike_count_identity=float(same.mean()),
        first_differing_layer=layer_names[differing[0]] if differing.size else None,
        torch_accuracy=ref.accuracy, onnx_accuracy=onnx.accuracy, thresholds=thresholds)


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


def evaluation_batches(ckpt: dict, root: Optional[str], batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test split of the dataset the checkpoint was trained on."""
    return list(DataLoader(checked_dataset(ckpt, root).test, batch_size=batch_size, shuffle=False))


def checkpoint_for(model: OnnxModel, checkpoint: Optional[str | Path]) -> str | Path:
    if checkpoint is not None:
        return checkpoint
    if model.meta is None:
        raise SnnkitError(f"{model.path} has no snnkit metadata; pass --checkpoint with the checkpoint "
                          "it was exported from to evaluate it")
    if not Path(model.meta["checkpoint"]).is_file():
        raise SnnkitError(f"{model.path} was exported from {model.meta['checkpoint']}, which is gone; "
                          "pass --checkpoint with that checkpoint's new location")
    return model.meta["checkpoint"]


def check_match(model: OnnxModel, topo: Topology, T: int) -> None:
    if model.meta is not None and (model.meta["layer_names"] != topo.layer_names or model.meta["T"] != T):
        raise SnnkitError(f"{model.path} was not exported from this checkpoint (its layers or T differ); "
                          "pass the matching --checkpoint or re-export")


def evaluate(checkpoint: Optional[str | Path] = None, onnx: Optional[str | Path] = None,
             data_root: Optional[str] = None, batch_size: int = 256,
             thresholds: Thresholds = Thresholds()) -> EvalResult:
    """Evaluate the checkpoint (default ``runs/latest``) or, with ``onnx``, the graph against it."""
    model = load_onnx(onnx) if onnx is not None else None
    ckpt_path = checkpoint_for(model, checkpoint) if model is not None else (checkpoint or LATEST)
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt).to(torch.float32)
    T, kind, input_shape = int(ckpt["T"]), ckpt["data"]["kind"], tuple(ckpt["data"]["input_shape"])
    topo = topology(net, input_shape)
    batches = evaluation_batches(ckpt, data_root, batch_size)
    ref = predict_torch(net, batches, T, kind)
    if model is None:
        return EvalResult(Path(ckpt_path), ckpt["data"]["name"], ref.accuracy,
                          efficiency_report(topo, ref.spike_counts, T, kind))
    check_match(model, topo, T)
    # Folding BN rounds differently from conv-then-BN in float32, so a neuron within an ulp of its
    # threshold may flip: parity gates on the exported arithmetic (the graph against its PyTorch
    # twin); what folding alone changes is measured against the checkpoint's model and reported.
    folded = predict_twin(net, batches, T, kind)
    if model.meta is not None and model.meta.get("format", "unrolled") != "unrolled":
        from .edge_eval import evaluate_edge  # the streaming and int8 forms (issue 11)

        return evaluate_edge(model, ref, folded, batches, topo, T, kind, thresholds, Path(ckpt_path),
                             ckpt["data"]["name"])
    got = predict_graph(lambda x: model.run(x.numpy()), batches, T, kind)
    return EvalResult(Path(ckpt_path), ckpt["data"]["name"], got.accuracy,
                      efficiency_report(topo, got.spike_counts, T, kind),
                      parity(folded, got, topo.layer_names, thresholds),
                      parity(ref, folded, topo.layer_names, thresholds), model.providers)
