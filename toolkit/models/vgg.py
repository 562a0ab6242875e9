"""Spiking VGGs (rate_backprop.md §5): conv3×3 (with bias)–BN–LIF, "A" is AvgPool 2×2."""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from . import register_model
from .blocks import conv_bn_lif, scaled

LAYOUTS = {
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512],
}


def vgg_features(layout: list, in_channels: int, neuron: NeuronParams, width: float) -> list[nn.Module]:
    layers, cin = [], in_channels
    for item in layout:
        if item == "A":
            layers.append(nn.AvgPool2d(2))
        else:
            cout = scaled(item, width)
            layers.append(conv_bn_lif(cin, cout, neuron, bias=True))
            cin = cout
    return layers


@register_model("vgg11")
def vgg11(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    return nn.Sequential(
        *vgg_features(LAYOUTS["vgg11"], in_channels, neuron, width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(scaled(512, width), num_classes),
    )
