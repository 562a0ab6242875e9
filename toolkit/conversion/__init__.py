"""Bring your own model: a SpikingJelly or snnTorch network as a snnkit :class:`~snnkit.spiking.SpikingNet`
that computes the same spikes, and its weights back as the original model's ``state_dict``.

``convert(model)`` checks every layer and every operation of ``model``'s forward against a type
table before anything runs (see :mod:`.body`) and maps each neuron exactly (see :mod:`.neurons`);
what cannot be converted exactly raises :class:`~snnkit.errors.ConversionError` naming the module.
Weights move across unchanged (the converted network holds copies, under the keys
:func:`to_original_state_dict` maps back).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..spiking import SpikingNet
from .body import convert_body, to_original_state_dict as _body_state_dict

__all__ = ["convert", "to_original_state_dict"]


def convert(model: nn.Module) -> SpikingNet:
    """``model`` (any step mode; left untouched) as a snnkit network on ``[T, B, ...]`` input."""
    return SpikingNet(convert_body(model))


def to_original_state_dict(net: SpikingNet, original: nn.Module) -> dict[str, Any]:
    """``net``'s weights as a state_dict that ``original`` (the kind of model ``net`` was converted
    from) loads with ``load_state_dict``."""
    return _body_state_dict(net.body, original)
