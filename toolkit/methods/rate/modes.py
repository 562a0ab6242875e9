"""The rate method's neuron modes (docs/spec/rate_backprop.md §2.1, §2.2), installed on the LIF
layers by :func:`snnkit.spiking.neuron_mode` like any other mode.

- :class:`MultiStepSpikePass` (rate_M) and :class:`SingleStepSpikePass` (rate_S): the spike pass,
  no autograd; each layer keeps its rate r and eligibility g.
- :class:`RatePass`: the rate pass; each layer returns r with Jacobian diag(g).
"""
from __future__ import annotations

from typing import Optional

import torch

from ...spiking import LIF, Mode, MultiStep, SingleStep
from .fast import FastSpikePass, Record


class MultiStepSpikePass(MultiStep):
    """rate_M's spike pass in one layer: all T steps per call; r and g come from ``recorder``
    (a :class:`~.fast.MultistepRecorder`, or any function of the reference's signature)."""

    def __init__(self, T: int, recorder: Record):
        super().__init__(T)
        self.recorder = recorder
        self.rate: Optional[torch.Tensor] = None
        self.eligibility: Optional[torch.Tensor] = None

    def run(self, lif: LIF, x_seq: torch.Tensor) -> torch.Tensor:
        s_seq, self.rate, self.eligibility = self.recorder(x_seq, lif.neuron, lif.surrogate)
        return s_seq

    def recorded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, g), each shaped like one step's activation."""
        if self.rate is None:
            raise RuntimeError("the spike pass recorded no steps")
        return self.rate, self.eligibility


class SingleStepSpikePass(SingleStep):
    """rate_S's spike pass in one layer: one step per call; the fast pass keeps the potential and
    accumulates r and g."""

    def __init__(self):
        super().__init__()
        self.spass: Optional[FastSpikePass] = None

    def step(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        if self.spass is None:
            self.spass = FastSpikePass(lif.neuron, lif.surrogate)
        return self.spass.step(x)

    def recorded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, g), each shaped like one step's activation."""
        if self.spass is None:
            raise RuntimeError("the spike pass recorded no steps")
        return self.spass.result()


class _RateValue(torch.autograd.Function):
    """``r + g⊙c − stopgrad(g⊙c)`` (docs/spec/rate_backprop.md §2.2) without its cost: the value is r itself
    (autograd hands out a view, no copy) and backward multiplies by g, the only tensor saved."""

    @staticmethod
    def forward(ctx, c: torch.Tensor, rate: torch.Tensor, eligibility: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(eligibility)
        return rate

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (eligibility,) = ctx.saved_tensors
        return grad * eligibility, None, None


class RatePass(Mode):
    """The rate pass: value r from the spike pass, Jacobian diag(g) with respect to the current."""

    def __init__(self, rate: torch.Tensor, eligibility: torch.Tensor):
        super().__init__()
        self.rate, self.eligibility = rate, eligibility

    def __call__(self, lif: LIF, c: torch.Tensor) -> torch.Tensor:
        if c.shape != self.rate.shape:
            raise RuntimeError(f"rate pass got {tuple(c.shape)}, spike pass saw {tuple(self.rate.shape)}")
        return _RateValue.apply(c, self.rate, self.eligibility)
