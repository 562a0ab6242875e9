"""Spike-causal gradient scaling: snnkit's own formulation of the idea of Park et al.
(arXiv 2308.00558, whose exact formula is not public); docs/spec/methods.md.

For every conv/linear layer that drives a LIF layer, the causal coincidence of each weight is
``C = Σ_t Σ_batch s^l[t] ⊗ â^{l−1}[t]``: the post spike at t times the presynaptic trace (the
pre-before-post pairs that could have caused it). It is the layer's weight-gradient operator with
the post spikes as output gradient and the trace as input, so C has the weight's shape. Per output
channel C is min-max normalised to Ĉ ∈ [0, 1] (a channel without contrast gets Ĉ = 1/2) and the
weight gradient is scaled by ``f = 1 − β + 2β·Ĉ``, rescaled so that mean(f) = 1. With the rate
methods, rates take the place of spikes and traces (one step). The readout is not scaled.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from .layers import next_lif, parametric_op, presynaptic_trace

GRAD_SCALES = ("none", "causal")


@dataclass(frozen=True)
class ScalingOptions:
    grad_scale: str = "none"  # causal: scale each weight's gradient by its spike-causal coincidence
    beta: float = 0.5  # strength of the scaling, in [0, 1]

    def __post_init__(self):
        if self.grad_scale not in GRAD_SCALES:
            raise ValueError(f"method.grad_scale must be one of {', '.join(GRAD_SCALES)}, "
                             f"got {self.grad_scale!r}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"method.beta must be in [0, 1], got {self.beta}")


def coincidence(layer: nn.Module, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    """Σ over the batch of ``post ⊗ pre`` through the layer's op: its weight gradient for input
    ``pre`` and output gradient ``post``."""
    weight = layer.weight.detach().requires_grad_()
    with torch.enable_grad():
        out = parametric_op(layer)(layer, pre, weight, None)
        if out.shape != post.shape:
            raise ConfigError(f"grad_scale=causal needs each conv/linear layer's output to reach its "
                              f"LIF layer unchanged in shape ({tuple(out.shape)} vs "
                              f"{tuple(post.shape)}); use grad_scale=none for this model")
        (grad,) = torch.autograd.grad(out, weight, post)
    return grad


def causal_factor(c: torch.Tensor, beta: float) -> torch.Tensor:
    """``1 − β + 2β·Ĉ`` with Ĉ the per-output-channel min-max normalisation of ``c``; mean 1."""
    flat = c.flatten(1)
    lo, hi = flat.aminmax(dim=1, keepdim=True)
    span = hi - lo
    c_hat = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1.0), 0.5)
    f = 1.0 - beta + 2.0 * beta * c_hat
    return (f / f.mean()).view_as(c)


@contextmanager
def causal_scaling(body: nn.Module, steps: int, options: ScalingOptions) -> Iterator[Callable[[], None]]:
    """Record, for the block, each scaled layer's inputs and its LIF's outputs (``steps`` steps,
    time-major); yields ``scale()``, to call after backward. With ``grad_scale=none`` it records
    nothing and ``scale`` does nothing."""
    if options.grad_scale == "none":
        yield lambda: None
        return
    pairs = {layer: lif for layer, lif in next_lif(body).items()
             if lif is not None and parametric_op(layer) is not None}
    inputs: dict[nn.Module, list[torch.Tensor]] = {layer: [] for layer in pairs}
    outputs: dict[nn.Module, list[torch.Tensor]] = {lif: [] for lif in pairs.values()}

    def keep_input(layer, args):
        inputs[layer].append(args[0].detach())

    def keep_output(lif, args, out):
        outputs[lif].append(out.detach())

    @torch.no_grad()
    def scale() -> None:
        for layer, lif in pairs.items():
            if layer.weight.grad is None or not inputs[layer]:
                continue
            pre = torch.cat(inputs[layer]).unflatten(0, (steps, -1))  # [steps·B, ...] -> [steps, B, ...]
            pre = presynaptic_trace(pre, lif.neuron.decay).flatten(0, 1)
            c = coincidence(layer, pre, torch.cat(outputs[lif]))
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(c)  # every replica must scale its (already reduced) gradient alike
            layer.weight.grad.mul_(causal_factor(c, options.beta))

    handles = ([layer.register_forward_pre_hook(keep_input) for layer in pairs]
               + [lif.register_forward_hook(keep_output) for lif in outputs])
    try:
        yield scale
    finally:
        for h in handles:
            h.remove()
