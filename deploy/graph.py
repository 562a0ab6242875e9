"""The deployable network: BatchNorm folded away, time unrolled, spike counts as an output.

The graph runs the toolkit's own plain-tensor :func:`~snnkit.neuron.lif_step` (Heaviside firing)
through a :class:`~snnkit.spiking.Mode`, so export, evaluation and training share one neuron.
Unlike the reference loop it indexes steps by number and starts the membrane at the scalar 0, so
a trace keeps the batch dimension dynamic. Nothing here depends on the training code.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from snnkit.neuron import lif_step
from snnkit.spiking import LIF, Mode, SpikingNet, neuron_mode, spike_counts

FOLDABLE = (nn.Conv2d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@torch.no_grad()
def folded_layer(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """``layer`` followed by eval-mode ``bn`` as one layer: W' = W·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β.

    Computed in float64 and rounded once to the layer's dtype."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    fused = copy.deepcopy(layer)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.empty_like(bn.bias))
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)  # scale per output channel
    fused.weight.copy_(layer.weight.double() * scale.view(shape))
    fused.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
    return fused


def fold_batchnorm(body: nn.Module) -> nn.Module:
    """A copy of ``body`` in which every BatchNorm that follows a conv/linear in a Sequential is
    merged into it (and replaced by Identity). Raises if any BatchNorm is left over."""
    body = copy.deepcopy(body).eval()
    for seq in [m for m in body.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            if isinstance(seq[i], BATCHNORMS) and isinstance(seq[i - 1], FOLDABLE):
                seq[i - 1], seq[i] = folded_layer(seq[i - 1], seq[i]), nn.Identity()
    left = [n for n, m in body.named_modules() if isinstance(m, BATCHNORMS)]
    if left:
        raise ValueError(f"BatchNorm layers {left} do not follow a conv/linear in a Sequential; "
                         "they cannot be folded")
    return body


class Unrolled(Mode):
    """T explicit copies of the LIF step on ``[T·B, ...]``; the potential starts at 0 in the graph."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unflatten(0, (self.T, -1))  # [T·B, ...] -> [T, B, ...]
        v: torch.Tensor | float = 0.0
        spikes = []
        for t in range(self.T):
            s, v, _ = lif_step(v, x_seq[t], lif.neuron)
            spikes.append(s)
        s_seq = torch.stack(spikes)
        self.count(s_seq, self.T)
        return s_seq.flatten(0, 1)


class TimeUnrolled(nn.Module):
    """``input`` -> (``logits`` [B, classes] time-averaged, ``spike_counts`` [B, L] int64).

    ``input`` is ``[B, C, H, W]`` for static data (fed at each of the T steps) or ``[T, B, C, H, W]``
    for event frames.
    """

    def __init__(self, body: nn.Module, T: int, kind: str):
        super().__init__()
        self.body, self.T, self.kind = body, T, kind
        # modules run once per sample, not T times: none yet, a static input is repeated T times first
        self.computed_once: tuple[str, ...] = ()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_seq = x.unsqueeze(0).repeat(self.T, *(1,) * x.dim()) if self.kind == "static" else x  # [T, B, ...]
        with neuron_mode(self.body, lambda _: Unrolled(self.T)) as modes:
            y = self.body(x_seq.flatten(0, 1))  # [T, B, ...] -> [T·B, ...]
        logits = y.unflatten(0, (self.T, -1)).mean(0)  # [T·B, K] -> [B, K]
        return logits, spike_counts(modes).to(torch.int64)


def deployable(net: SpikingNet, T: int, kind: str) -> TimeUnrolled:
    """The eval-mode CPU float32 network with BatchNorm folded, ready to trace."""
    net = net.to("cpu", torch.float32).eval()
    return TimeUnrolled(fold_batchnorm(net.body), T, kind).eval()
