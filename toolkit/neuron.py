"""The discrete LIF neuron, written once as pure functions (see the spec, docs/spec/rate_backprop.md §1).

    charge: u_t = λ·v_{t-1} + x_t
    fire:   s_t = H(u_t − V_th)            (H(0) = 1; the surrogate replaces H' in backward)
    reset:  soft v_t = u_t − V_th·s_t  |  hard v_t = u_t·(1 − s_t) + v_reset·s_t

Training, every method, export and the docs all use these functions (the rate method's
eligibility, built on them, lives with the method: :mod:`snnkit.methods.rate.eligibility`).
Tensors are time-major: a sequence is ``[T, B, ...]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .surrogate import SURROGATES, Surrogate, heaviside, make_surrogate

SpikeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NeuronParams:
    """LIF parameters; the defaults are the paper's recipe."""

    decay: float = 0.2  # λ, the fraction of potential retained per step; 1: integrate-and-fire (no leak)
    v_threshold: float = 1.0
    reset: str = "soft"  # "soft" or "hard"
    v_reset: float = 0.0  # used by the hard reset only
    detach_reset: bool = True
    surrogate: str = "sigmoid"
    alpha: float = 4.0

    def __post_init__(self):
        if not 0.0 <= self.decay <= 1.0:
            raise ValueError(f"neuron.decay must be in [0, 1], got {self.decay}")
        if self.v_threshold <= 0:
            raise ValueError(f"neuron.v_threshold must be positive, got {self.v_threshold}")
        if self.reset not in RESETS:
            raise ValueError(f"neuron.reset must be one of {sorted(RESETS)}, got {self.reset!r}")
        if not self.alpha > 0:
            raise ValueError(f"neuron.alpha (the surrogate's sharpness) must be positive, got {self.alpha}")
        SURROGATES.get(self.surrogate)

    def make_surrogate(self) -> Surrogate:
        return make_surrogate(self.surrogate, self.alpha)

    def as_dict(self) -> dict:
        return asdict(self)


def charge(v: torch.Tensor, x: torch.Tensor, decay: float) -> torch.Tensor:
    return decay * v + x


def fire(u: torch.Tensor, v_threshold: float, spike_fn: SpikeFn = heaviside) -> torch.Tensor:
    return spike_fn(u - v_threshold)


def soft_reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return u - p.v_threshold * s


def hard_reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return u * (1.0 - s) + p.v_reset * s


RESETS = {"soft": soft_reset, "hard": hard_reset}


def reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return RESETS[p.reset](u, s.detach() if p.detach_reset else s, p)


def lif_step(
    v: torch.Tensor, x: torch.Tensor, p: NeuronParams, spike_fn: SpikeFn = heaviside
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step: returns (spike s_t, next potential v_t, pre-reset potential u_t)."""
    u = charge(v, x, p.decay)
    s = fire(u, p.v_threshold, spike_fn)
    return s, reset(u, s, p), u


def lif_multistep(
    x_seq: torch.Tensor, p: NeuronParams, spike_fn: SpikeFn = heaviside
) -> torch.Tensor:
    """Reference loop over T for ``x_seq`` of shape ``[T, ...]``, starting from v = 0."""
    v = torch.zeros_like(x_seq[0])
    spikes = []
    for x in x_seq:
        s, v, _ = lif_step(v, x, p, spike_fn)
        spikes.append(s)
    return torch.stack(spikes)
