"""What the trace-based methods share: the parametric ops, each layer's postsynaptic LIF, and
forward replacements scoped to a ``with`` block.

A model body is walked in registration order (the order the architectures call their layers in);
the LIF layer registered next after a conv/linear/BN layer is the one its output drives. Layers
registered after the last LIF form the readout: no membrane follows them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..spiking import LIF

ParametricOp = Callable[[nn.Module, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


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


@contextmanager
def replaced_forwards(forwards: dict[nn.Module, Callable]) -> Iterator[None]:
    """Each module's ``forward`` is replaced for the block and restored on exit, even on error."""
    if any("forward" in vars(m) for m in forwards):
        raise RuntimeError("a layer's forward is already replaced; these blocks cannot be nested")
    for m, forward in forwards.items():
        m.forward = forward
    try:
        yield
    finally:
        for m in forwards:
            del m.forward
