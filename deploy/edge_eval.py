"""``snnkit eval --onnx`` on the edge forms: a streaming graph is driven step by step and checked
like the unrolled graph, with its accuracy after each step; an int8 graph is judged on accuracy
against the float32 model (its folded PyTorch twin), since quantized weights legitimately move
spikes; prediction agreement and spike identity are reported beside it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .costs import Topology
from .efficiency import efficiency_report
from .evaluate import Batches, EvalResult, Parity, Predictions, Thresholds, parity, predict_graph
from .runtime import OnnxModel
from .streaming import stream


@dataclass(frozen=True)
class AccuracyVerdict:
    """``comparison``: the int8 graph (the ONNX side) against the float32 model (the PyTorch side)."""

    comparison: Parity
    max_accuracy_drop: float

    @property
    def accuracy_drop(self) -> float:
        return self.comparison.torch_accuracy - self.comparison.onnx_accuracy

    @property
    def passed(self) -> bool:
        return self.accuracy_drop <= self.max_accuracy_drop


def graph_predictions(model: OnnxModel, batches: Batches, T: int, kind: str) -> tuple[Predictions, Optional[list[float]]]:
    """(the graph's predictions as the unrolled graph gives them, its accuracy after each step if it streams)."""
    if model.meta["format"] == "streaming":
        streamed = stream(model, batches, T, kind)
        return streamed.predictions(), streamed.accuracy_per_step()
    return predict_graph(lambda x: model.run(x.numpy()), batches, T, kind), None


def evaluate_edge(model: OnnxModel, ref: Predictions, folded: Predictions, batches: Batches, topo: Topology,
                  T: int, kind: str, thresholds: Thresholds, checkpoint: Path, dataset: str) -> EvalResult:
    """``ref``: the checkpoint's model; ``folded``: its folded twin (the float32 graph's arithmetic)."""
    got, curve = graph_predictions(model, batches, T, kind)
    verdict = parity(folded, got, topo.layer_names, thresholds)
    if model.meta["format"] == "int8":
        verdict = AccuracyVerdict(verdict, thresholds.max_accuracy_drop)
    return EvalResult(checkpoint, dataset, got.accuracy, efficiency_report(topo, got.spike_counts, T, kind),
                      verdict, parity(ref, folded, topo.layer_names, thresholds), model.providers, curve)
