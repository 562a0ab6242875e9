"""What the trace-based methods share: the presynaptic trace, the parametric ops and each layer's
postsynaptic LIF. The methods change a layer's computation with :func:`snnkit.spiking.layer_modes`.

A model body is walked in registration order (the order the architectures call their layers in);
the LIF layer registered next after a conv/linear/BN layer is the one its output drives. Layers
registered after the last LIF form the readout: no membrane follows them.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..spiking import LIF

ParametricOp = Callable[[nn.Module, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def trace_step(previous, x, decay: float):
    """The presynaptic trace's recurrence ``â[t] = λ·â[t−1] + x[t]``, the one every online method
    (OTTT, SAF, the causal scaling) runs; on a constant input 1 it is ``ρ[t] = 1 + λ + … + λ^{t−1}``."""
    return decay * previous + x


class Trace:
    """One input's trace ``â[t]`` and the bias's ``ρ[t]``, both starting at 0; no autograd."""

    def __init__(self, decay: float):
        self.decay = decay
        self.value: torch.Tensor | float = 0.0
        self.rho = 0.0

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> torch.Tensor:
        self.value = trace_step(self.value, x, self.decay)
        self.rho = trace_step(self.rho, 1.0, self.decay)
        return self.value


def presynaptic_trace(x_seq: torch.Tensor, decay: float) -> torch.Tensor:
    """``[T, ...]`` -> ``â[t] = λ·â[t−1] + x[t]``, same shape."""
    trace = Trace(decay)
    return torch.stack([trace.update(x) for x in x_seq])


def _conv(layer, x, weight, bias):
    return layer._conv_forward(x, weight, bias)


# op(layer, input, weight, bias): the layer's own computation with the given weight and bias
PARAMETRIC_OPS: dict[type, ParametricOp] = {
    nn.Linear: lambda layer, x, weight, bias: F.linear(x, weight, bias),
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
}


def parametric_op(layer: nn.Module) -> Optional[ParametricOp]:
    return next((PARAMETRIC_OPS[c] for c in type(layer).__mro__ if c in PARAMETRIC_OPS), None)


def leaf_layers(body: nn.Module) -> list[nn.Module]:
    return [m for m in body.modules() if not any(m.children())]


def next_lif(body: nn.Module) -> dict[nn.Module, Optional[LIF]]:
    """Every non-LIF leaf layer of ``body`` -> the LIF its output drives (None for the readout)."""
    following: dict[nn.Module, Optional[LIF]] = {}
    lif = None
    for m in reversed(leaf_layers(body)):
        if isinstance(m, LIF):
            lif = m
        else:
            following[m] = lif
    return following


def input_layers(body: nn.Module) -> list[nn.Module]:
    """The conv/linear layers registered before the first LIF: the ones that see the raw input."""
    before = []
    for m in leaf_layers(body):
        if isinstance(m, LIF):
            break
        before.append(m)
    return [m for m in before if parametric_op(m) is not None]
