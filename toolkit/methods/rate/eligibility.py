"""The rate method's spike pass by the pure functions: the reference r and g of one LIF layer
(docs/spec/rate_backprop.md §2.1).

    r = (1/T)·Σ_t s_t,   g = (1/T)·Σ_t σ'(u_t − V_th)·ρ_t,   ρ_1 = 1,  ρ_{t+1} = 1 + κ_t·ρ_t

with κ_t = ∂u_{t+1}/∂u_t along the real trajectory. The fast, compiled and Triton passes
(:mod:`.fast`, :mod:`.triton_lif`) are tested against :func:`lif_multistep_record`.
"""
from __future__ import annotations

from typing import Optional

import torch

from ...neuron import NeuronParams, lif_step
from ...surrogate import Surrogate


# kappa_t = ∂u_{t+1}/∂u_t along the real trajectory; sg is σ'(u_t − V_th).
def _kappa_soft(u, s, sg, p):
    return p.decay if p.detach_reset else p.decay * (1.0 - p.v_threshold * sg)


def _kappa_hard(u, s, sg, p):
    if p.detach_reset:
        return p.decay * (1.0 - s)
    return p.decay * ((1.0 - s) + (p.v_reset - u) * sg)


def _kappa_subtract_next(u, s, sg, p):
    return p.decay if p.detach_reset else p.decay - p.subtracted * sg


KAPPAS = {"soft": _kappa_soft, "hard": _kappa_hard, "subtract_next": _kappa_subtract_next}


class RateSums:
    """A layer's spike pass: running sums of s_t and σ'(u_t − V_th)·ρ_t over the steps taken, with
    ρ_1 = 1, ρ_{t+1} = 1 + κ_t·ρ_t; the rate r and eligibility g are their means."""

    def __init__(self, p: NeuronParams, surrogate: Surrogate):
        self.p, self.surrogate = p, surrogate
        self.steps = 0
        self.spike_sum: Optional[torch.Tensor] = None
        self.elig_sum: Optional[torch.Tensor] = None
        self.rho: torch.Tensor | float = 1.0

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, g), each shaped like one step's activation."""
        if self.steps == 0:
            raise RuntimeError("the spike pass recorded no steps")
        return self.spike_sum / self.steps, self.elig_sum / self.steps


class RateRecorder(RateSums):
    """The reference: accumulates r and g from each step's (u_t, s_t) with the pure functions."""

    def update(self, u: torch.Tensor, s: torch.Tensor) -> None:
        sg = self.surrogate.grad(u - self.p.v_threshold)
        contrib = sg * self.rho
        if self.steps == 0:
            self.spike_sum, self.elig_sum = s.clone(), contrib
        else:
            self.spike_sum += s
            self.elig_sum += contrib
        self.rho = 1.0 + KAPPAS[self.p.reset](u, s, sg, self.p) * self.rho
        self.steps += 1


@torch.no_grad()
def lif_multistep_record(
    x_seq: torch.Tensor, p: NeuronParams, surrogate: Surrogate
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The spike pass of one layer: returns (spikes [T, ...], r, g)."""
    rec = RateRecorder(p, surrogate)
    v = torch.zeros_like(x_seq[0])
    spikes = []
    for x in x_seq:
        s, v, u = lif_step(v, x, p)
        rec.update(u, s)
        spikes.append(s)
    return (torch.stack(spikes), *rec.result())
