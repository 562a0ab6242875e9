"""The one PyTorch evaluator: the plain spiking network (eval mode, Heaviside, no surrogate) run over
a loader in the multi-step layout. Training validates and tests with it (adding the all-reduce over
ranks, :func:`snnkit.training.trainer.evaluate`) and ``snnkit eval`` runs a checkpoint with it; it
is core so that deployment reaches it without the training code."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from .data import encode
from .spiking import SpikingNet, spike_counts


@dataclass(frozen=True)
class Evaluation:
    """One network's outputs on every sample of a loader, in loader order, on the CPU."""

    logits: torch.Tensor  # [N, classes], averaged over the T steps
    spike_counts: torch.Tensor  # [N, L]: spikes per sample in each spiking layer, over its neurons and steps
    labels: torch.Tensor  # [N]
    slots_per_sample: int  # neurons × steps summed over the layers: where a sample's spikes could be

    @property
    def samples(self) -> int:
        return self.labels.numel()

    @property
    def correct(self) -> int:
        return int((self.logits.argmax(1) == self.labels).sum()) if self.samples else 0

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.samples, 1)

    @property
    def loss_sum(self) -> float:
        """The cross-entropy of the time-averaged logits, summed over the samples."""
        logits = self.logits.to(torch.promote_types(self.logits.dtype, torch.float32))  # bf16 in, float32 sums
        return float(F.cross_entropy(logits, self.labels, reduction="sum")) if self.samples else 0.0

    @property
    def firing_rate(self) -> float:
        """Mean firing rate over every neuron, step and sample."""
        return float(self.spike_counts.double().sum()) / max(self.slots_per_sample * self.samples, 1)


@torch.no_grad()
def evaluate_network(net: SpikingNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], T: int, kind: str,
                     device: torch.device | str = "cpu") -> Evaluation:
    """Run ``net`` over ``batches`` (loader batches, see :func:`snnkit.data.encode`) on ``device``."""
    net.eval()
    logits, counts, labels, slots = [], [], [], 0
    for x, y in batches:
        logits_seq, modes = net.run_multistep(encode(x.to(device, net.dtype), T, kind))
        logits.append(logits_seq.mean(0).cpu())
        counts.append(spike_counts(modes).cpu())
        labels.append(y.cpu())
        slots = sum(m.neurons_per_sample * m.steps for m in modes)
    if not labels:
        return Evaluation(torch.empty(0, 0), torch.empty(0, 0), torch.empty(0, dtype=torch.long), 0)
    return Evaluation(torch.cat(logits), torch.cat(counts), torch.cat(labels), slots)
