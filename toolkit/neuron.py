"""The discrete LIF neuron, written once as pure functions (see the spec, docs/spec/rate_backprop.md §1).

    charge: u_t = λ·v_{t-1} + x_t                     (subtract_next: − V_sub·H(v_{t−1} − V_th))
    fire:   s_t = H(u_t − V_th)            (H(0) = 1; the surrogate replaces H' in backward)
    reset:  soft v_t = u_t − V_th·s_t  |  hard v_t = u_t·(1 − s_t) + v_reset·s_t  |  subtract_next v_t = u_t

The soft reset subtracts V_th before the next step's decay; ``subtract_next`` (snnTorch's
``reset_mechanism="subtract"``) keeps v_t = u_t and subtracts V_sub from the next charge, after
its decay: u_t = λ·u_{t−1} + x_t − V_sub·s_{t−1}, with s_{t−1} = H(v_{t−1} − V_th) recomputed from
the state, so the state stays one tensor (as snnTorch recomputes its reset from its membrane).

Training, every method, export and the docs all use these functions (the rate method's
eligibility, built on them, lives with the method: :mod:`snnkit.methods.rate.eligibility`).
Tensors are time-major: a sequence is ``[T, B, ...]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from .surrogate import SURROGATES, Surrogate, heaviside, make_surrogate

SpikeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NeuronParams:
    """LIF parameters; the defaults are the paper's recipe."""

    decay: float = 0.2  # λ, the fraction of potential retained per step; 1: integrate-and-fire (no leak)
    v_threshold: float = 1.0
    reset: str = "soft"  # "soft", "hard" or "subtract_next"
    v_reset: float = 0.0  # used by the hard reset only
    v_subtract: Optional[float] = None  # V_sub of subtract_next; None: v_threshold
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
        if self.v_subtract is not None and (self.reset != "subtract_next" or not self.v_subtract > 0):
            raise ValueError(f"neuron.v_subtract is the positive amount reset=subtract_next subtracts, got "
                             f"{self.v_subtract} with reset={self.reset}; leave it unset (null)")
        if not self.alpha > 0:
            raise ValueError(f"neuron.alpha (the surrogate's sharpness) must be positive, got {self.alpha}")
        SURROGATES.get(self.surrogate)

    @property
    def subtracted(self) -> float:
        """V_sub: what ``subtract_next`` takes from the charge after a spike."""
        return self.v_threshold if self.v_subtract is None else self.v_subtract

    def make_surrogate(self) -> Surrogate:
        return make_surrogate(self.surrogate, self.alpha)

    def as_dict(self) -> dict:
        return asdict(self)


def charge(v: torch.Tensor | float, x: torch.Tensor, p: NeuronParams, spike_fn: SpikeFn = heaviside) -> torch.Tensor:
    u = p.decay * v + x
    if p.reset != "subtract_next" or not isinstance(v, torch.Tensor):  # a scalar v_0 = 0 has not fired
        return u
    return u - p.subtracted * detached(fire(v, p.v_threshold, spike_fn), p)


def fire(u: torch.Tensor, v_threshold: float, spike_fn: SpikeFn = heaviside) -> torch.Tensor:
    return spike_fn(u - v_threshold)


def soft_reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return u - p.v_threshold * s


def hard_reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return u * (1.0 - s) + p.v_reset * s


def subtract_next_reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return u  # the next charge subtracts


RESETS = {"soft": soft_reset, "hard": hard_reset, "subtract_next": subtract_next_reset}


def detached(s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """The spike as the reset sees it."""
    return s.detach() if p.detach_reset else s


def reset(u: torch.Tensor, s: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    return RESETS[p.reset](u, detached(s, p), p)


def lif_step(
    v: torch.Tensor, x: torch.Tensor, p: NeuronParams, spike_fn: SpikeFn = heaviside
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step: returns (spike s_t, next potential v_t, pre-reset potential u_t)."""
    u = charge(v, x, p, spike_fn)
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
