"""``snnkit eval``: accuracy on the test split of the model's dataset, ONNX parity, efficiency.

With a graph, everything runs at the graph's T. Parity (:mod:`snnkit.deploy.parity`) judges the
graph in onnxruntime, step by step, against its PyTorch twin (the checkpoint's model with BatchNorm
folded as exported, CPU float32); what folding alone changes is measured against the checkpoint's
own model and reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from snnkit.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path
from snnkit.data import encode, load_dataset
from snnkit.errors import DataError, SnnkitError
from snnkit.spiking import SpikingNet

from .costs import Tally, Topology, topology
from .efficiency import efficiency_report
from .export import file_sha256
from .graph import PROBE, TimeUnrolled, deployable
from .parity import Verdict, nonfinite_weights, verify
from .runtime import OnnxModel, load_onnx

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
LATEST = "runs/latest"
PROBE_BYTES = 1 << 30  # per chunk of samples run with every membrane and spike exposed (both sides)


@dataclass(frozen=True)
class Predictions:
    logits: np.ndarray  # [N, classes]
    spike_counts: np.ndarray  # [N, L]
    labels: np.ndarray  # [N]

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.labels).mean())


@dataclass(frozen=True)
class Agreement:
    """Two runs on the same samples, side by side."""

    logits_max_abs_diff: float
    prediction_agreement: float
    spike_count_identity: float  # fraction of (sample, layer) counts that are equal
    first_differing_layer: Optional[str]
    accuracy_a: float
    accuracy_b: float


def agreement(a: Predictions, b: Predictions, layer_names: list[str]) -> Agreement:
    same = a.spike_counts == b.spike_counts  # [N, L]
    differing = np.flatnonzero(~same.all(axis=0))
    return Agreement(float(np.abs(a.logits - b.logits).max()), float((a.logits.argmax(1) == b.logits.argmax(1)).mean()),
                     float(same.mean()), layer_names[differing[0]] if differing.size else None,
                     a.accuracy, b.accuracy)


@dataclass(frozen=True)
class Parity:
    """The graph (b) against its PyTorch twin (a): the verdict on every spike, and the outputs."""

    T: int
    verdict: Verdict
    outputs: Agreement

    @property
    def passed(self) -> bool:
        return self.verdict.passed


@dataclass(frozen=True)
class EvalResult:
    checkpoint: Path
    dataset: str
    T: int
    accuracy: float  # of the evaluated model (the ONNX graph when one is given)
    report: dict  # efficiency_report(...)
    parity: Optional[Parity] = None
    folding: Optional[Agreement] = None  # BN folding alone: the checkpoint's model (a) against the twin (b)
    providers: list[str] = field(default_factory=list)


@torch.no_grad()
def predict_torch(net: SpikingNet, batches: Batches, T: int, kind: str) -> Predictions:
    outs = [(net(encode(x, T, kind)), y) for x, y in batches]
    return Predictions(torch.cat([o.logits for o, _ in outs]).numpy(),
                       torch.cat([o.spike_counts for o, _ in outs]).numpy().astype(np.int64),
                       torch.cat([y for _, y in outs]).numpy())


def graph_input(x: torch.Tensor, T: int, kind: str) -> torch.Tensor:
    """A loader batch in a graph's input layout: static ``[B, C, H, W]``, event ``[T, B, C, H, W]``."""
    return x if kind == "static" else encode(x, T, kind)


def check_graph(model: OnnxModel, twin: TimeUnrolled, batches: Batches,
                neurons: int) -> tuple[Predictions, Predictions, Verdict]:
    """Run every batch through the graph with its probes exposed and judge it against ``twin``;
    returns (twin's predictions, graph's predictions, verdict). ``neurons`` (per sample) sizes the
    chunks that bound the memory."""
    chunk = max(1, PROBE_BYTES // (neurons * twin.T * 32))  # ~8 float32 copies of every membrane
    ref_out, got_out, labels, verdict = [], [], [], nonfinite_weights(model.weights())
    for x, y in batches:
        for xs in graph_input(x, twin.T, twin.kind).split(chunk, dim=0 if twin.kind == "static" else 1):
            observed = model.observe(xs.numpy())
            ref = verify(twin, xs, observed)
            verdict = verdict.merge(ref.verdict)
            ref_out.append((ref.logits, ref.spike_counts))
            got_out.append((observed.logits, observed.spike_counts))
        labels.append(y)

    def predictions(outs: list) -> Predictions:
        return Predictions(torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy(),
                           torch.cat(labels).numpy())

    return predictions(ref_out), predictions(got_out), verdict


@torch.no_grad()
def count_operations(topo: Topology, twin: TimeUnrolled, batches: Batches) -> Tally:
    """The twin's spikes, position by position, over the batches the graph ran (parity's bound
    interpreter does not call the modules, so the count is a plain run of its own)."""
    with topo.tally(twin.body, twin.T) as tally:
        for x, _ in batches:
            twin(graph_input(x, twin.T, twin.kind))
    return tally


def evaluation_batches(ckpt: dict, root: Optional[str], batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test split of the dataset the checkpoint was trained on, checked against the model."""
    data = ckpt["data"]
    bundle = load_dataset(data["name"], root)
    expected = tuple(data["input_shape"])
    if tuple(bundle.input_shape) != expected or bundle.num_classes != len(data["class_names"]):
        raise DataError(f"dataset {data['name']!r} gives samples of shape {tuple(bundle.input_shape)} with "
                        f"{bundle.num_classes} classes but the model expects {expected} with "
                        f"{len(data['class_names'])}; point --data-root at the data it was trained on")
    return list(DataLoader(bundle.test, batch_size=batch_size, shuffle=False))


def checkpoint_for(model: OnnxModel, checkpoint: Optional[str | Path]) -> Path:
    """``checkpoint``, or the one the graph names beside it; either must have the recorded SHA-256."""
    recorded = model.meta.get("checkpoint") if model.meta is not None else None
    if recorded is not None and not (isinstance(recorded, dict) and {"file", "sha256"} <= recorded.keys()):
        recorded = None
    if checkpoint is None and recorded is None:
        what = "no snnkit metadata" if model.meta is None else "snnkit metadata that names no checkpoint"
        raise SnnkitError(f"{model.path} has {what}; pass --checkpoint with the checkpoint it was exported "
                          "from to evaluate it")
    if checkpoint is not None:
        path = resolve_checkpoint_path(checkpoint)
    else:
        path = model.path.parent / recorded["file"]
        if not path.is_file():
            raise SnnkitError(f"{model.path} was exported from {recorded['file']}, which is not beside it; "
                              "pass --checkpoint with that checkpoint")
    if recorded is not None and file_sha256(path) != recorded["sha256"]:
        raise SnnkitError(f"{path} is not the checkpoint {model.path} was exported from (its SHA-256 differs); "
                          "pass that checkpoint with --checkpoint, or re-export")
    return path


def graph_steps(model: OnnxModel, layer_names: list[str]) -> int:
    """The graph's T: from its metadata, else from the steps its probes show."""
    if model.meta is not None:
        if model.meta["layer_names"] != layer_names:
            raise SnnkitError(f"{model.path} was not exported from this checkpoint (its spiking layers differ); "
                              "pass the matching --checkpoint or re-export")
        return int(model.meta["T"])
    steps = [int(m["step"]) for m in map(PROBE.match, model.probe_names()) if m["layer"] == layer_names[0]]
    if not steps:
        raise SnnkitError(f"{model.path} does not expose per-step membranes and spikes for the layers of this "
                          "checkpoint; export it with `snnkit export` to check its parity")
    return max(steps) + 1


def evaluate(checkpoint: Optional[str | Path] = None, onnx: Optional[str | Path] = None,
             data_root: Optional[str] = None, batch_size: int = 256, model: Optional[OnnxModel] = None) -> EvalResult:
    """Evaluate the checkpoint (default ``runs/latest``) or, with ``onnx`` (or an opened ``model``),
    the graph against it, at the graph's T."""
    if batch_size < 1:
        raise SnnkitError(f"--batch-size must be at least 1, got {batch_size}")
    model = model or (load_onnx(onnx) if onnx is not None else None)
    ckpt_path = checkpoint_for(model, checkpoint) if model is not None else resolve_checkpoint_path(checkpoint or LATEST)
    ckpt = load_checkpoint(ckpt_path)
    net = model_from_checkpoint(ckpt).to(torch.float32)
    kind, input_shape = ckpt["data"]["kind"], tuple(ckpt["data"]["input_shape"])
    topo = topology(net, input_shape)
    T = graph_steps(model, topo.layer_names) if model is not None else int(ckpt["T"])
    batches = evaluation_batches(ckpt, data_root, batch_size)
    twin = deployable(net, T, kind, probes=True)  # the graph's PyTorch twin: same folded weights
    describe = dict(computed_once=twin.computed_once, model=ckpt["model"]["name"], dataset=ckpt["data"]["name"])
    if model is None:
        with topo.tally(net.body, T) as tally:
            ref = predict_torch(net, batches, T, kind)
        return EvalResult(ckpt_path, ckpt["data"]["name"], T, ref.accuracy, efficiency_report(topo, tally, **describe))
    ref = predict_torch(net, batches, T, kind)
    folded, got, verdict = check_graph(model, twin, batches, sum(topo.neurons))
    return EvalResult(ckpt_path, ckpt["data"]["name"], T, got.accuracy,
                      efficiency_report(topo, count_operations(topo, twin, batches), **describe),
                      Parity(T, verdict, agreement(folded, got, topo.layer_names)),
                      agreement(ref, folded, topo.layer_names), model.providers)
