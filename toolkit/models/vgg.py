"""Spiking VGGs (docs/spec/rate_backprop.md §5): conv3×3 (with bias)–BN–LIF, "A" is AvgPool 2×2.

``vgg13`` is not spelled out in §5; its layout is the reference code's VGG13 (ten convolutions,
four pools, then global average pooling, like ``vgg11``).
"""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from . import register_model
from .blocks import conv_bn_lif, scaled

LAYOUTS = {
    "vgg11": [64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512],
    "vgg13": [64, 64, "A", 128, 128, "A", 256, 256, "A", 512, 512, 512, "A", 512],
    "vggsnn": [64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"],
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


def cifar_vgg(layout: str, num_classes: int, in_channels: int, neuron: NeuronParams, width: float) -> nn.Module:
    return nn.Sequential(
        *vgg_features(LAYOUTS[layout], in_channels, neuron, width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(scaled(512, width), num_classes),
    )


@register_model("vgg11")
def vgg11(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    return cifar_vgg("vgg11", num_classes, in_channels, neuron, width)


@register_model("vgg13")
def vgg13(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    return cifar_vgg("vgg13", num_classes, in_channels, neuron, width)


@register_model("vggsnn")
def vggsnn(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    """The DVS network: input 2×48×48 (CIFAR10-DVS frames), four pools to 3×3, flattened into the
    classifier (Linear(4608, classes) at full width), so the input must be 48×48."""
    return nn.Sequential(
        *vgg_features(LAYOUTS["vggsnn"], in_channels, neuron, width),
        nn.Flatten(),  # [N, C, 3, 3] -> [N, 9·C]
        nn.Linear(scaled(512, width) * 3 * 3, num_classes),
    )
