"""Spike accumulation forwarding, SAF-E and SAF-F (Saiin et al., TMLR 2024; docs/spec/methods.md).

Between layers SAF passes accumulated spikes ``â[t] = λ·â[t−1] + s[t]`` instead of spikes. With
soft reset the LIF is linear between spikes, so a layer's accumulated current is
``Û[t] = W·â[t] + b·ρ[t]`` (ρ[t] = 1 + λ + … + λ^{t−1}) and the neuron fires
``s[t] = H(Û[t] − V_th·(λ·â[t−1] + 1))``: one parametric op per layer per step, whose gradient is
the trace's (â[t−1] is held constant). The forward equals the LIF network's, so SAF-trained weights
run unchanged on LIF neurons. BatchNorm normalises the step's current, recovered linearly as
``Û[t] − λ·Û[t−1]``, with that step's statistics, and accumulates the result again. The readout
(layers after the last LIF) sees that LIF's spikes (SAF-E) or its mean spike count so far (SAF-F).

- SAF-E: per-step loss and backward at every step, optimiser step after each (= OTTT_O exactly).
- SAF-F: T − 1 steps without autograd, then one cross-entropy on the time-averaged logits and one
  backward: the gradient of the final accumulated output.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError
from ..spiking import LIF, Mode, firing_rate, layer_modes, neuron_mode, plain_forward, spiking_layers
from ..surrogate import heaviside
from .base import NoOptions, StepOutput, register_method
from .layers import ParametricOp, Trace, leaf_layers, next_lif, parametric_op, trace_step
from .online import OnlineMethod

# Layers that act on accumulated values unchanged (linear and the same at every step).
LINEAR_IN_TIME = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                  nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity)


class Accumulated(Mode):
    """SAF's neuron: input Û[t], fires against V_th·(λ·â[t−1] + 1); outputs ``emit`` of
    ``trace`` (â[t], between hidden layers), ``spike`` (s[t]) or ``mean`` (Σ_k s[k] / t)."""

    def __init__(self, emit: str):
        super().__init__()
        self.emit = emit
        self.trace: torch.Tensor | float = 0.0
        self.total: torch.Tensor | float = 0.0

    def __call__(self, lif: LIF, current: torch.Tensor) -> torch.Tensor:
        p = lif.neuron
        spike_fn = lif.surrogate.spike if torch.is_grad_enabled() else heaviside
        s = spike_fn(current - p.v_threshold * trace_step(self.trace, 1.0, p.decay))
        self.count(s.unsqueeze(0), 1)
        trace, total = trace_step(self.trace, s, p.decay), self.total + s
        self.trace, self.total = trace.detach(), total.detach()
        return {"trace": trace, "spike": s, "mean": total / self.steps}[self.emit]


def accumulated_op(op: ParametricOp, clock: Trace, layer: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """SAF's mode of a hidden conv/linear layer, ``W·â[t] + b·ρ[t]``: one op; gradient to W is
    ``g ⊗ â[t]``."""
    return op(layer, a, layer.weight, None if layer.bias is None else layer.bias * clock.rho)


class AccumulatedBatchNorm:
    """SAF's mode of a BN layer: BN of the step's current ``Û[t] − λ·Û[t−1]`` (step statistics),
    accumulated again."""

    def __init__(self, decay: float):
        self.decay = decay
        self.last_in: torch.Tensor | float = 0.0
        self.last_out: torch.Tensor | float = 0.0

    def __call__(self, bn: _BatchNorm, acc: torch.Tensor) -> torch.Tensor:
        out = plain_forward(bn, acc - self.decay * self.last_in)
        out = trace_step(self.last_out, out, self.decay)
        self.last_in, self.last_out = acc.detach(), out.detach()
        return out


class SAF(OnlineMethod):
    readout_input: str  # what the last LIF hands the readout: "spike" (SAF-E) or "mean" (SAF-F)

    def check(self, net) -> None:
        lifs = spiking_layers(net.body)
        if not lifs:
            raise ConfigError("SAF needs a model with LIF layers; train this one with bptt")
        if {lif.neuron.reset for lif in lifs} != {"soft"} or len({lif.neuron.decay for lif in lifs}) > 1:
            raise ConfigError("SAF needs soft reset and one decay for every LIF layer; "
                              "set neuron.reset=soft or train with ottt_o")
        following = next_lif(net.body)
        names = {m: n for n, m in net.body.named_modules()}
        for m in leaf_layers(net.body):
            hidden = following.get(m) is not None
            if hidden and not (parametric_op(m) or isinstance(m, (_BatchNorm, *LINEAR_IN_TIME))):
                raise ConfigError(
                    f"SAF cannot train layer {names[m]} ({type(m).__name__}): SAF accumulates "
                    "inputs over time, so every layer before the last LIF must be conv, linear, "
                    "BatchNorm or average pooling; train with ottt_o or sltt instead")

    @contextmanager
    def scope(self, body):
        lifs = spiking_layers(body)
        decay = lifs[0].neuron.decay
        clock = Trace(decay)  # one iteration's time: the accumulated input x̂[t] and ρ[t]
        forwards = {}
        for layer, lif in next_lif(body).items():
            op = parametric_op(layer)
            if lif is None:  # the readout runs unchanged on the last LIF's output
                continue
            if op is not None:
                forwards[layer] = partial(accumulated_op, op, clock)
            elif isinstance(layer, _BatchNorm):
                forwards[layer] = AccumulatedBatchNorm(decay)
        emit = {lif: "trace" for lif in lifs} | {lifs[-1]: self.readout_input}
        with layer_modes(forwards), neuron_mode(body, lambda lif: Accumulated(emit[lif])) as modes:
            yield (lambda x: body(clock.update(x))), modes


@register_method("saf_e")
class SAFE(SAF):
    """Loss at every step, optimiser step after every step: the gradients are OTTT_O's."""

    readout_input = "spike"
    update_every_step = True


@register_method("saf_f")
class SAFF(SAF):
    """One cross-entropy on the time-averaged logits at the final step; one backward per batch."""

    Options = NoOptions
    readout_input = "mean"

    def train_step(self, net, x_seq, y, step):
        with self.scope(net.body) as (forward, modes):
            with torch.no_grad():
                for x in x_seq[:-1]:
                    forward(x)
            logits = forward(x_seq[-1])  # [B, K]: the readout of the mean spike count over T steps
        loss = F.cross_entropy(logits, y)
        loss.backward()
        step()
        return StepOutput(loss.item(), logits.detach(), firing_rate(modes))
