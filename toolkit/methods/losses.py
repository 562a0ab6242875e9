"""Named losses (docs/spec/methods.md). A per-step loss ``ℓ(o[t], y)`` acts on one step's logits ``[B, K]``;
:func:`sequence_loss` averages it over the T steps of ``[T, B, K]`` logits.

- ``mean``:   CE on the time-averaged logits (BPTT's and the rate methods' loss; not per step)
- ``ce_mse``: ``(1 − w)·CE(o[t], y) + w·MSE(o[t], onehot(y))``, w = γ = 0.05 (OTTT, SLTT, SAF)
- ``tet``:    ``(1 − w)·CE(o[t], y) + w·MSE(o[t], 1)``, w = φ = 1e-3 (TET, Deng et al. 2022)
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError

StepLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_mse(o: torch.Tensor, y: torch.Tensor, weight: float = 0.05) -> torch.Tensor:
    onehot = F.one_hot(y, o.shape[-1]).to(o.dtype)
    return (1 - weight) * F.cross_entropy(o, y) + weight * F.mse_loss(o, onehot)


def tet(o: torch.Tensor, y: torch.Tensor, weight: float = 1e-3) -> torch.Tensor:
    return (1 - weight) * F.cross_entropy(o, y) + weight * F.mse_loss(o, torch.ones_like(o))


STEP_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"ce_mse": ce_mse, "tet": tet}
MEAN = "mean"


def check_loss(name: str, per_step_only: bool = False, weight: Optional[float] = None) -> None:
    valid = [*([] if per_step_only else [MEAN]), *STEP_LOSSES]
    if name not in valid:
        raise ConfigError(f"method.loss must be one of {', '.join(valid)}, got {name!r}")
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise ConfigError(f"method.loss_weight must be in [0, 1], got {weight}")


def step_loss(name: str, weight: Optional[float] = None) -> StepLoss:
    """The per-step loss ``name``, with its default weight unless ``weight`` is given."""
    check_loss(name, per_step_only=True)
    fn = STEP_LOSSES[name]
    return fn if weight is None else partial(fn, weight=weight)


def sequence_loss(logits_seq: torch.Tensor, y: torch.Tensor, name: str,
                  weight: Optional[float] = None) -> torch.Tensor:
    """The loss ``name`` on ``[T, B, K]`` logits: ``mean`` is CE of the average, a per-step loss is
    averaged over t."""
    if name == MEAN:
        return F.cross_entropy(logits_seq.mean(0), y)
    fn = step_loss(name, weight)
    return torch.stack([fn(o, y) for o in logits_seq]).mean()
