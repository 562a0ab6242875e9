"""Surrogate gradients: the formula as a free function, a thin autograd Function, a small handle.

The forward of every surrogate spike is the Heaviside step with H(0) = 1; only the backward differs.
Evaluation and export call :func:`heaviside` directly.
"""
from __future__ import annotations

import math

import torch

from .registry import Registry


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """H(x) with H(0) = 1, in the dtype of ``x``."""
    return (x >= 0).to(x.dtype)


def sigmoid_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """d/dx sig(alpha x) = alpha sig(alpha x)(1 - sig(alpha x)); peak alpha/4."""
    sig = torch.sigmoid(alpha * x)
    return alpha * sig * (1.0 - sig)


def atan_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """d/dx (1/π)·arctan(π/2·alpha x) = (alpha/2) / (1 + (π/2·alpha x)²); peak alpha/2 (SpikingJelly's ATan)."""
    ax = (math.pi / 2 * alpha) * x
    return (alpha / 2) / (1 + ax * ax)


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside forward; backward multiplies by ``grad(x, alpha)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float, grad) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha, ctx.grad = alpha, grad
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.grad(x, ctx.alpha), None, None


class Surrogate:
    """Handle holding the surrogate's parameter: ``spike(x)`` fires, ``grad(x)`` is H' replaced."""

    name = "base"

    def __init__(self, alpha: float):
        self.alpha = float(alpha)

    @staticmethod
    def formula(x: torch.Tensor, alpha: float) -> torch.Tensor:
        raise NotImplementedError

    def spike(self, x: torch.Tensor) -> torch.Tensor:
        return _SurrogateSpike.apply(x, self.alpha, self.formula)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return self.formula(x, self.alpha)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha})"


SURROGATES: Registry[type[Surrogate]] = Registry("surrogate")


@SURROGATES.register("sigmoid")
class Sigmoid(Surrogate):
    name = "sigmoid"
    formula = staticmethod(sigmoid_grad)


@SURROGATES.register("atan")
class ATan(Surrogate):
    name = "atan"
    formula = staticmethod(atan_grad)


def make_surrogate(name: str, alpha: float) -> Surrogate:
    return SURROGATES.get(name)(alpha)
