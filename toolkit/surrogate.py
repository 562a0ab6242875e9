"""Surrogate gradients: the formula as a free function, a thin autograd Function, a small handle.

The forward of every surrogate spike is the Heaviside step with H(0) = 1; only the backward differs.
Evaluation and export call :func:`heaviside` directly.
"""
from __future__ import annotations

import torch

from .registry import Registry


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """H(x) with H(0) = 1, in the dtype of ``x``."""
    return (x >= 0).to(x.dtype)


def sigmoid_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """d/dx sig(alpha x) = alpha sig(alpha x)(1 - sig(alpha x)); peak alpha/4."""
    sig = torch.sigmoid(alpha * x)
    return alpha * sig * (1.0 - sig)


class _SigmoidSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * sigmoid_grad(x, ctx.alpha), None


class Surrogate:
    """Handle holding the surrogate's parameter: ``spike(x)`` fires, ``grad(x)`` is H' replaced."""

    name = "base"

    def __init__(self, alpha: float):
        self.alpha = float(alpha)

    def spike(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha})"


SURROGATES: Registry[type[Surrogate]] = Registry("surrogate")


@SURROGATES.register("sigmoid")
class Sigmoid(Surrogate):
    name = "sigmoid"

    def spike(self, x: torch.Tensor) -> torch.Tensor:
        return _SigmoidSpike.apply(x, self.alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return sigmoid_grad(x, self.alpha)


def make_surrogate(name: str, alpha: float) -> Surrogate:
    return SURROGATES.get(name)(alpha)
