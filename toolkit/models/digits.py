"""A small conv SNN for the 8×8 digits (the default, embedded dataset)."""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from . import register_model
from .blocks import conv_bn_lif, scaled


@register_model("digits_convnet")
def digits_convnet(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    c1, c2, c3 = (scaled(c, width) for c in (32, 64, 128))
    return nn.Sequential(
        conv_bn_lif(in_channels, c1, neuron),    # 8×8
        conv_bn_lif(c1, c2, neuron),
        nn.AvgPool2d(2),                         # 4×4
        conv_bn_lif(c2, c3, neuron),
        nn.AvgPool2d(2),                         # 2×2
        nn.Flatten(),
        nn.Linear(c3 * 4, num_classes),
    )
