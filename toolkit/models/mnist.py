"""A small conv SNN for 28×28 grey images (MNIST, Fashion-MNIST): the realistic CPU benchmark."""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from . import register_model
from .blocks import conv_bn_lif, scaled


@register_model("mnist_convnet")
def mnist_convnet(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    c1, c2, c3 = (scaled(c, width) for c in (32, 64, 128))
    return nn.Sequential(
        conv_bn_lif(in_channels, c1, neuron),    # 28×28
        nn.AvgPool2d(2),                         # 14×14
        conv_bn_lif(c1, c2, neuron),
        nn.AvgPool2d(2),                         # 7×7
        conv_bn_lif(c2, c3, neuron),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(c3, num_classes),
    )
