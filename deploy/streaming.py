"""``snnkit export --streaming``: a graph that advances the network by one time step per call.

Inputs: ``input`` (one step, ``[B, C, H, W]``: the image again for static data, the next frame for
events) and ``state_i``, the membrane potential of the i-th LIF layer after the previous step
(``[B, *shape_i]``, zeros before the first step). Outputs: this step's ``logits`` and
``spike_counts`` (int64 ``[B, L]``) and ``next_state_i``. Calling it T times, feeding each
``next_state_i`` back, gives the time-unrolled graph's spike counts summed and its logits averaged;
the metadata names the state tensors, their per-sample shapes and initial values.
:func:`stream` is the driver: it runs a streaming graph over batches and keeps every step's logits,
so the accuracy after t = 1..T steps (the early-exit curve) can be read off.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from snnkit.data import encode
from snnkit.neuron import lif_step
from snnkit.spiking import LIF, Mode, SingleStep, neuron_mode, spike_counts

from .evaluate import Batches, Predictions
from .export import ExportResult, Source, save_onnx, trace
from .graph import fold_batchnorm
from .runtime import OUTPUTS, OnnxModel, load_onnx

NAME = "model_streaming.onnx"
FORMAT = "streaming"


class Carried(Mode):
    """One step of a LIF layer whose potential comes in as ``v`` and leaves as ``v_next``."""

    def __init__(self, v: torch.Tensor):
        super().__init__()
        self.v = v
        self.v_next: Optional[torch.Tensor] = None

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        s, self.v_next, _ = lif_step(self.v, x, lif.neuron)
        self.count(s.unsqueeze(0), 1)
        return s


class SingleStepGraph(nn.Module):
    """``(input, *states) -> (logits, spike_counts, *next_states)`` for one time step."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        incoming = iter(states)  # neuron_mode builds the modes in spike-count column order
        with neuron_mode(self.body, lambda _: Carried(next(incoming))) as modes:
            logits = self.body(x)
        return (logits, spike_counts(modes).to(torch.int64), *[m.v_next for m in modes])


@torch.no_grad()
def state_shapes(body: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The per-sample shape of each LIF layer's potential, from one step on a zero sample."""
    with neuron_mode(body, lambda _: SingleStep()) as modes:
        body(torch.zeros(1, *input_shape))
    return [tuple(m.v.shape[1:]) for m in modes]


def state_names(layers: int) -> tuple[list[str], list[str]]:
    return [f"state_{i}" for i in range(layers)], [f"next_state_{i}" for i in range(layers)]


def export_streaming(src: Source, out: Path, opset: int, data_root: Optional[str] = None) -> ExportResult:
    body = fold_batchnorm(src.net.body)
    shapes = state_shapes(body, src.input_shape)
    inputs, outputs = state_names(len(shapes))
    example = (torch.randn(2, *src.input_shape), *[torch.zeros(2, *s) for s in shapes])
    graph = SingleStepGraph(body).eval()
    with torch.no_grad():
        model = trace(graph, example, opset, {"input": 0, **{n: 0 for n in inputs}}, OUTPUTS + outputs)
    states = [{"input": i, "output": o, "layer": layer, "shape": list(s), "initial": 0.0}
              for i, o, layer, s in zip(inputs, outputs, src.topo.layer_names, shapes)]
    meta = {**src.metadata(opset), "format": FORMAT, "input_layout": "[B, C, H, W], one step per call",
            "states": states}
    save_onnx(model, meta, out)
    check_streaming(out, graph, example[0], src.T)
    return ExportResult(out, out.stat().st_size, len(model.graph.node), src.T, len(shapes), opset,
                        f"one step per call, {len(shapes)} state tensors")


def initial_states(model: OnnxModel, batch: int) -> dict[str, np.ndarray]:
    return {s["input"]: np.full((batch, *s["shape"]), s["initial"], np.float32) for s in model.meta["states"]}


def run_steps(model: OnnxModel, x_seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feed ``x_seq`` ``[T, B, C, H, W]`` one step per call -> (logits per step ``[T, B, K]``,
    spike counts summed over the steps ``[B, L]``)."""
    states = initial_states(model, x_seq.shape[1])
    names = OUTPUTS + [s["output"] for s in model.meta["states"]]
    logits, counts = [], 0
    for x in x_seq:
        y, c, *nxt = model.session.run(names, {"input": np.ascontiguousarray(x, np.float32), **states})
        states = {s["input"]: v for s, v in zip(model.meta["states"], nxt)}
        logits.append(y)
        counts = counts + c
    return np.stack(logits), counts


@dataclass(frozen=True)
class Streamed:
    logits_per_step: np.ndarray  # [T, N, classes]
    spike_counts: np.ndarray  # [N, L], summed over the T steps
    labels: np.ndarray  # [N]

    def predictions(self) -> Predictions:
        """As the unrolled graph reports them: logits averaged over the T steps."""
        return Predictions(self.logits_per_step.mean(0), self.spike_counts, self.labels)

    def accuracy_per_step(self) -> list[float]:
        """Accuracy when stopping after t = 1..T steps (the prediction is the argmax of the logits
        averaged over the steps so far)."""
        running = np.cumsum(self.logits_per_step, axis=0)
        return [float((r.argmax(1) == self.labels).mean()) for r in running]


def stream(model: OnnxModel, batches: Batches, T: int, kind: str) -> Streamed:
    """Run a streaming graph over ``batches`` (as a loader yields them) for T steps each."""
    outs = [(run_steps(model, encode(x, T, kind).numpy()), y) for x, y in batches]
    return Streamed(np.concatenate([o[0] for o, _ in outs], axis=1), np.concatenate([o[1] for o, _ in outs]),
                    torch.cat([y for _, y in outs]).numpy())


def check_streaming(path: Path, graph: SingleStepGraph, x: torch.Tensor, T: int) -> None:
    """Run the written file for T steps against its PyTorch module; a gross mismatch is a bug."""
    model = load_onnx(path)
    logits, _ = run_steps(model, np.repeat(x.numpy()[None], T, axis=0))
    states = [torch.zeros(x.shape[0], *s["shape"]) for s in model.meta["states"]]
    with torch.no_grad():
        for t in range(T):
            expected, _, *states = graph(x, *states)
            delta = float(np.abs(logits[t] - expected.numpy()).max())
            if not delta <= 1e-3:
                raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch at step {t + 1} right after "
                                   f"export (logits max |Δ| {delta:.3g}); this is an snnkit bug, please report it")
