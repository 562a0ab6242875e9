"""Online training through time: OTTT (Xiao et al., NeurIPS 2022) and SLTT (Meng et al., ICCV 2023);
see docs/spec/methods.md.

Both run the network one step at a time with the membrane detached between steps, compute a
per-step loss ``L[t]/T`` and call backward at every step, so autograd holds one step's graph and
memory does not grow with T. OTTT's hidden conv/linear layers output ``W·s[t]`` but take the weight
gradient of the presynaptic trace ``â[t] = λ·â[t−1] + s[t]``:
``y = stopgrad(W·s) + (W·â − stopgrad(W·â))``, so ∇W accumulates ``g[t] ⊗ â[t]`` (the bias, a
weight on a constant input, gets the trace ρ[t] = 1 + λ + … + λ^{t−1} of that input). The input
layers (before the first LIF) take the trace of the raw input by default (``method.first_layer=
trace``); ``raw`` gives them the raw input's gradient ``g ⊗ x[t]``, the rule of SpikingJelly's
``OTTTLIFNode`` and of the OTTT authors' code (docs/methods.md). SLTT uses the instantaneous spike:
it is OTTT with trace decay 0. The readout (no membrane follows it) always uses the instantaneous
input, so its gradient is BPTT's under the same per-step loss.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ..errors import ConfigError
from ..spiking import LIF, Mode, SingleStep, firing_rate, layer_modes, neuron_mode
from .base import Method, StepOutput, register_method
from .layers import ParametricOp, Trace, input_layers, next_lif, parametric_op
from .losses import check_loss, step_loss

Forward = Callable[[torch.Tensor], torch.Tensor]
FIRST_LAYER_RULES = ("trace", "raw")  # the input layers' weight gradient: of the raw input's trace, or of the input


class DetachedStep(SingleStep):
    """One step per call with batch ``[B, ...]``; the potential is cut from the graph after each step."""

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        s = super().__call__(lif, x)
        self.v = self.v.detach()
        return s


def trace_forward(op: ParametricOp, trace: Trace, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """OTTT's mode of a hidden conv/linear layer: value ``op(x)``; input gradient ``Wᵀg``; weight
    gradient ``g ⊗ â`` (two ops with autograd)."""
    a = trace.update(x)
    if not torch.is_grad_enabled():
        return op(layer, x, layer.weight, layer.bias)
    bias = layer.bias
    value = op(layer, x, layer.weight.detach(), None if bias is None else bias.detach())
    through_trace = op(layer, a, layer.weight, None if bias is None else bias * trace.rho)
    return value + (through_trace - through_trace.detach())


@dataclass(frozen=True)
class OnlineOptions:
    loss: str = "ce_mse"  # a per-step loss: ce_mse ((1−w)·CE + w·MSE to one-hot) or tet
    loss_weight: Optional[float] = None  # w; None: the loss's default (γ = 0.05, φ = 1e-3)

    def __post_init__(self):
        check_loss(self.loss, per_step_only=True, weight=self.loss_weight)


class OnlineMethod(Method):
    """Per-step forward, loss and backward over t; subclasses set the scope and the update policy."""

    Options = OnlineOptions
    update_every_step = False  # OTTT_O: the optimiser steps after every step's backward
    per_step_statistics = True  # one step per forward call

    @contextmanager
    def scope(self, body: nn.Module) -> Iterator[tuple[Forward, list[Mode]]]:
        """What one iteration runs in: yields (the one-step forward, the LIF modes)."""
        with neuron_mode(body, lambda _: DetachedStep()) as modes:
            yield body, modes

    def grad_steps(self) -> list[bool]:
        """Which steps run with autograd (the others only advance the state)."""
        return [True] * self.T

    def train_step(self, net, x_seq, y, step):
        loss_fn = step_loss(self.options.loss, self.options.loss_weight)
        losses, logits = [], []
        with self.scope(net.body) as (forward, modes):
            for x, grad in zip(x_seq, self.grad_steps()):
                with torch.set_grad_enabled(grad):
                    o = forward(x)
                    loss = loss_fn(o, y)
                if grad:
                    (loss / self.T).backward()
                    if self.update_every_step:
                        step()
                losses.append(loss.detach())
                logits.append(o.detach())
        if not self.update_every_step:
            step()
        return StepOutput(float(torch.stack(losses).mean()), torch.stack(logits).mean(0),
                          firing_rate(modes))


@dataclass(frozen=True)
class OTTTOptions(OnlineOptions):
    trace_decay: Optional[float] = None  # λ of the presynaptic trace; None: the neuron's decay
    first_layer: str = "trace"  # raw: the input layers' gradient of the raw input (SpikingJelly, OTTT's code)

    def __post_init__(self):
        super().__post_init__()
        if self.first_layer not in FIRST_LAYER_RULES:
            raise ValueError(f"method.first_layer must be one of {', '.join(FIRST_LAYER_RULES)}, "
                             f"got {self.first_layer!r}")
        if self.trace_decay is not None and not 0.0 <= self.trace_decay < 1.0:
            raise ValueError(f"method.trace_decay must be in [0, 1), got {self.trace_decay}")


class OTTT(OnlineMethod):
    Options = OTTTOptions

    @contextmanager
    def scope(self, body):
        forwards = {}
        plain = set(input_layers(body)) if self.options.first_layer == "raw" else set()
        for layer, lif in next_lif(body).items():
            op = parametric_op(layer)
            if op is not None and lif is not None and layer not in plain:  # the readout (and raw input layers) unchanged
                decay = lif.neuron.decay if self.options.trace_decay is None else self.options.trace_decay
                forwards[layer] = partial(trace_forward, op, Trace(decay))
        with layer_modes(forwards), super().scope(body) as scoped:
            yield scoped


@register_method("ottt_a")
class OTTTA(OTTT):
    """OTTT accumulating gradients over the T steps: one optimiser step per batch."""


@register_method("ottt_o")
class OTTTO(OTTT):
    """OTTT with an optimiser step after every time step's backward (T steps per batch)."""

    update_every_step = True


@register_method("sltt")
class SLTT(OnlineMethod):
    """Spatial gradient only: instantaneous spikes, no temporal path; one optimiser step per batch."""


@dataclass(frozen=True)
class SLTTKOptions(OnlineOptions):
    K: int = 2  # steps per iteration that run with autograd, drawn uniformly without replacement

    def __post_init__(self):
        super().__post_init__()
        if self.K < 1:
            raise ValueError(f"method.K must be at least 1, got {self.K}")


@register_method("sltt_k")
class SLTTK(SLTT):
    """SLTT with backward at K random steps of T; the others run without autograd (loss still /T)."""

    Options = SLTTKOptions

    def __init__(self, T: int, options=None):
        super().__init__(T, options)
        if self.options.K > T:
            raise ConfigError(f"method.K = {self.options.K} exceeds method.T = {T}; set method.K <= T")

    def grad_steps(self) -> list[bool]:
        chosen = set(torch.randperm(self.T)[: self.options.K].tolist())
        return [t in chosen for t in range(self.T)]
