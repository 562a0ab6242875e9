"""``snnkit eval``: accuracy on the test split of the model's dataset, ONNX parity, efficiency.

With a graph, everything runs at the graph's T, whatever its form (a streaming graph is driven for T
steps). Parity (:mod:`snnkit.deploy.parity`) judges the graph in onnxruntime, step by step, against
its PyTorch twin (the checkpoint's model with BatchNorm folded as exported, CPU float32); what
folding alone changes is measured against the checkpoint's own model and reported beside it. An
int8 graph is gated on its accuracy against the twin's instead, since quantized weights
legitimately move spikes; its spike-by-spike comparison is reported. Operations are counted on the
graph's own spikes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from snnkit.checkpoint import resolve_checkpoint_path
from snnkit.data import encode
from snnkit.errors import SnnkitError
from snnkit.evaluation import evaluate_network
from snnkit.layout import chosen_run, runs_folder
from snnkit.spiking import Mode, SpikingNet

from . import MAX_ACCURACY_DROP
from .costs import Tally, Topology
from .efficiency import efficiency_report
from .graph import PROBE, TimeUnrolled, deployable
from .parity import Observed, Verdict, nonfinite_weights, verify
from .runtime import OnnxModel, load_onnx
from .source import Source, checked_dataset, file_sha256

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
GIVE = "(`snnkit eval CHECKPOINT --onnx GRAPH`)"  # how a user names a graph's checkpoint
PROBE_BYTES = 1 << 30  # per chunk of samples run with every membrane and spike exposed (both sides)
ACCURACY_GATED = {"int8"}  # quantized weights legitimately move spikes


@dataclass(frozen=True)
class Predictions:
    logits: np.ndarray  # [N, classes]
    spike_counts: np.ndarray  # [N, L]
    labels: np.ndarray  # [N]
    step_logits: Optional[np.ndarray] = None  # [T, N, classes], a streaming graph's at each step

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.labels).mean())

    def accuracy_per_step(self) -> Optional[list[float]]:
        """The early-exit curve: accuracy when stopping after t = 1..T steps (the argmax of the
        logits averaged over the steps run)."""
        if self.step_logits is None:
            return None
        return [float((s.argmax(1) == self.labels).mean()) for s in np.cumsum(self.step_logits, axis=0)]

    @classmethod
    def of_torch(cls, net: SpikingNet, batches: Batches, T: int, kind: str) -> Predictions:
        """The PyTorch network's, from the one evaluator."""
        out = evaluate_network(net, batches, T, kind)
        return cls(out.logits.numpy(), out.spike_counts.numpy().astype(np.int64), out.labels.numpy())


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
    """The graph (b) against its PyTorch twin (a): the verdict on every spike, and the outputs. With
    ``max_accuracy_drop`` (an int8 graph) the gate is the accuracy instead, and the verdict is reported."""

    T: int
    verdict: Verdict
    outputs: Agreement
    max_accuracy_drop: Optional[float] = None

    @property
    def accuracy_drop(self) -> float:
        return self.outputs.accuracy_a - self.outputs.accuracy_b

    @property
    def passed(self) -> bool:
        if self.max_accuracy_drop is None:
            return self.verdict.passed
        return self.accuracy_drop <= self.max_accuracy_drop


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
    form: str = "checkpoint"  # or the graph's: "unrolled", "streaming", "int8"
    accuracy_per_step: Optional[list[float]] = None  # a streaming graph's, after t = 1..T steps
    float32_layers: tuple[str, ...] = ()  # an int8 graph's synaptic layers it computes in float32


def graph_input(x: torch.Tensor, T: int, kind: str) -> torch.Tensor:
    """A loader batch in a graph's input layout: static ``[B, C, H, W]``, event ``[T, B, C, H, W]``."""
    return x if kind == "static" else encode(x, T, kind)


class Replay(Mode):
    """A LIF layer that emits the spikes a graph emitted (``[T, B, ...]``)."""

    def __init__(self, spikes: torch.Tensor):
        super().__init__()
        self.spikes = spikes

    def __call__(self, lif, x: torch.Tensor) -> torch.Tensor:
        return self.spikes.flatten(0, 1)


@torch.no_grad()
def replay(twin: TimeUnrolled, x: torch.Tensor, observed: Observed) -> None:
    """Run the twin's layers on the graph's own spikes, so that a tally counts what they cost."""
    spikes = iter([observed.spikes[name] for name in twin.layer_names])  # in neuron_mode's order
    twin.run_steps(x if twin.kind == "static" else x.flatten(0, 1), lambda _: Replay(next(spikes)))


@dataclass(frozen=True)
class Checked:
    """A graph run over batches with its probes exposed, beside its twin."""

    twin: Predictions
    graph: Predictions
    verdict: Verdict
    tally: Optional[Tally]  # the graph's spikes position by position, when a topology was given


def check_graph(model: OnnxModel, twin: TimeUnrolled, batches: Batches, neurons: int,
                topo: Optional[Topology] = None) -> Checked:
    """Run every batch through the graph with its probes exposed and judge it against ``twin``;
    with ``topo``, also tally the graph's own spikes for the operation counts. ``neurons`` (per
    sample) sizes the chunks that bound the memory."""
    chunk = max(1, PROBE_BYTES // (neurons * twin.T * 32))  # ~8 float32 copies of every membrane
    ref_out, got_out, labels, verdict = [], [], [], nonfinite_weights(model.weights())
    tally = Tally(twin.T) if topo is not None else None
    for x, y in batches:
        for xs in graph_input(x, twin.T, twin.kind).split(chunk, dim=0 if twin.kind == "static" else 1):
            observed = model.observe(xs.numpy())
            ref = verify(twin, xs, observed)
            verdict = verdict.merge(ref.verdict)
            ref_out.append((ref.logits, ref.spike_counts, None))
            got_out.append((observed.logits, observed.spike_counts, observed.step_logits))
            if topo is not None:
                with topo.tally(twin.body, twin.T, tally):
                    replay(twin, xs, observed)
        labels.append(y)

    def predictions(outs: list) -> Predictions:
        steps = None if outs[0][2] is None else torch.cat([o[2] for o in outs], 1).numpy()
        return Predictions(torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy(),
                           torch.cat(labels).numpy(), steps)

    return Checked(predictions(ref_out), predictions(got_out), verdict, tally)


def evaluation_batches(ckpt: dict, root: Optional[str], batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The test split of the dataset the checkpoint was trained on."""
    return list(DataLoader(checked_dataset(ckpt, root).test, batch_size=batch_size, shuffle=False))


def run_checkpoints(runs: Path) -> list[Path]:
    """Every checkpoint file in the run directories under ``runs`` (a ``run.out_dir``)."""
    found = [run for run in runs.iterdir() if run.is_dir() and not run.is_symlink()] if runs.is_dir() else []
    return sorted(p for run in found for p in run.glob("*.pt"))


def is_recorded(path: Path, recorded: dict) -> bool:
    """Whether ``path`` is the checkpoint a graph records (its size first, then its SHA-256)."""
    return (path.is_file() and recorded.get("bytes", path.stat().st_size) == path.stat().st_size
            and file_sha256(path) == recorded["sha256"])


def checkpoint_for(model: OnnxModel, checkpoint: Optional[str | Path], runs: Path) -> Path:
    """``checkpoint``, or the checkpoint the graph records, found by its SHA-256: by name beside the
    graph, at its recorded path relative to the graph, any other ``.pt`` beside the graph, then in
    the runs under ``runs``; a given one must match too."""
    recorded = model.meta.get("checkpoint") if model.meta is not None else None
    if checkpoint is None and recorded is None:
        what = "no snnkit metadata" if model.meta is None else "snnkit metadata that names no checkpoint"
        raise SnnkitError(f"{model.path} has {what}; give the checkpoint it was exported from {GIVE} to evaluate it")
    if checkpoint is not None:
        path = resolve_checkpoint_path(checkpoint)
        if recorded is not None and file_sha256(path) != recorded["sha256"]:
            raise SnnkitError(f"{path} is not the checkpoint {model.path} was exported from (its SHA-256 differs); "
                              f"give that checkpoint {GIVE}, or re-export")
        return path
    named = [model.path.parent / recorded["file"]]  # beside the graph, then where it was relative to it
    named += [model.path.parent / recorded["relative"]] if "relative" in recorded else []
    beside = sorted(model.path.parent.glob("*.pt"))  # a copy may have another name
    if found := next((p for p in dict.fromkeys([*named, *beside, *run_checkpoints(runs)]) if is_recorded(p, recorded)),
                     None):
        return found
    if changed := next((p for p in named if p.is_file()), None):
        raise SnnkitError(f"{changed} is not the checkpoint {model.path} was exported from (its SHA-256 differs); "
                          f"give that checkpoint {GIVE}, or re-export")
    at = f", at its recorded path {recorded['relative']}," if "relative" in recorded else ""
    raise SnnkitError(f"{model.path} was exported from {recorded['file']} (SHA-256 {recorded['sha256'][:12]}), which "
                      f"is not beside it{at} or in a run under {runs}/; give that checkpoint {GIVE}, or --runs DIR "
                      "where its run is")


def graph_steps(model: OnnxModel, net: SpikingNet, layer_names: list[str]) -> int:
    """The graph's T (from its metadata, else from the steps its probes show), once the graph is
    seen to be of ``net``: the same spiking layers, each exposing its membranes and spikes, and
    nothing computed once per sample that ``net`` does not have."""
    if model.meta is not None:
        if model.meta["layer_names"] != layer_names:
            raise SnnkitError(f"{model.path} was not exported from this checkpoint (its spiking layers differ); "
                              "give the matching checkpoint or re-export")
        modules = dict(net.body.named_modules())
        if unknown := [name for name in model.meta["computed_once"] if name not in modules]:
            raise SnnkitError(f"{model.path}: its snnkit metadata 'computed_once' names {unknown[0]!r}, which this "
                              "checkpoint's model does not have; give the matching checkpoint or re-export")
    steps = {}
    for m in filter(None, map(PROBE.match, model.probe_names())):
        steps.setdefault(m["layer"], set()).add(int(m["step"]))
    if missing := [name for name in layer_names if name not in steps]:
        raise SnnkitError(f"{model.path} does not expose per-step membranes and spikes for layer {missing[0]!r} of "
                          "this checkpoint; export it with `snnkit export` to check its parity")
    return model.meta["T"] if model.meta is not None else max(steps[layer_names[0]]) + 1


def evaluate(checkpoint: Optional[str | Path] = None, onnx: Optional[str | Path] = None,
             data_root: Optional[str] = None, batch_size: int = 256, model: Optional[OnnxModel] = None,
             max_accuracy_drop: float = MAX_ACCURACY_DROP, runs: Optional[str | Path] = None) -> EvalResult:
    """Evaluate the checkpoint (see :func:`snnkit.layout.chosen_run`; by default the latest run under
    ``runs``, itself by default ``runs/``) or, with ``onnx`` (or an opened ``model``), the graph
    against it (by default the checkpoint it records, looked for beside it, then under ``runs``), at
    the graph's T. ``max_accuracy_drop`` gates an int8 graph."""
    if batch_size < 1:
        raise SnnkitError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= max_accuracy_drop <= 1:
        raise SnnkitError(f"--max-accuracy-drop must be between 0 and 1 (0.005 is 0.5 pp), got {max_accuracy_drop}")
    model = model or (load_onnx(onnx) if onnx is not None else None)
    if model is None:
        ckpt_path = resolve_checkpoint_path(chosen_run(checkpoint, runs))
    else:
        given = chosen_run(checkpoint, runs) if checkpoint is not None else None
        ckpt_path = checkpoint_for(model, given, runs_folder(runs))
    src = Source.load(ckpt_path)
    ckpt, net, kind, topo = src.ckpt, src.net, src.kind, src.topo
    T = graph_steps(model, net, topo.layer_names) if model is not None else src.T
    batches = evaluation_batches(ckpt, data_root, batch_size)
    twin = deployable(net, T, kind, probes=True)  # the graph's PyTorch twin: same folded weights
    describe = dict(model=ckpt["model"]["name"], dataset=ckpt["data"]["name"])
    if model is None:
        with topo.tally(net.body, T) as tally:
            ref = Predictions.of_torch(net, batches, T, kind)
        return EvalResult(ckpt_path, ckpt["data"]["name"], T, ref.accuracy,
                          efficiency_report(topo, tally, twin.computed_once, **describe))
    ref = Predictions.of_torch(net, batches, T, kind)
    checked = check_graph(model, twin, batches, sum(topo.neurons), topo)
    once = model.meta["computed_once"] if model.meta is not None else twin.computed_once  # what the graph computes
    gate = max_accuracy_drop if model.form in ACCURACY_GATED else None
    return EvalResult(ckpt_path, ckpt["data"]["name"], T, checked.graph.accuracy,
                      efficiency_report(topo, checked.tally, once, **describe),
                      Parity(T, checked.verdict, agreement(checked.twin, checked.graph, topo.layer_names), gate),
                      agreement(ref, checked.twin, topo.layer_names), model.providers, model.form,
                      checked.graph.accuracy_per_step(),
                      tuple((model.meta or {}).get("quantization", {}).get("float32_layers", ())))
