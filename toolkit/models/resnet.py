"""Spiking ResNets for CIFAR, laid out as the reference code (docs/spec/rate_backprop.md §5)."""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from ..spiking import LIF
from . import register_model
from .blocks import conv_bn, conv_bn_lif, scaled


class BasicBlock(nn.Module):
    """conv–BN–LIF–conv–BN, plus the shortcut (identity or conv1×1–BN), then LIF on the sum."""

    def __init__(self, cin: int, cout: int, stride: int, neuron: NeuronParams):
        super().__init__()
        self.residual = nn.Sequential(conv_bn_lif(cin, cout, neuron, stride=stride), *conv_bn(cout, cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Sequential(*conv_bn(cin, cout, kernel=1, stride=stride)))
        self.spike = LIF(neuron)

    def forward(self, x):
        return self.spike(self.residual(x) + self.shortcut(x))


def stages(block: type[nn.Module], cin: int, widths: list[int], depths: list[int], strides: list[int],
           neuron: NeuronParams) -> nn.Sequential:
    """Stages of ``block(cin, cout, stride, neuron)``; the first block of a stage takes its stride."""
    blocks = []
    for cout, depth, stride in zip(widths, depths, strides):
        for i in range(depth):
            blocks.append(block(cin, cout, stride if i == 0 else 1, neuron))
            cin = cout
    return nn.Sequential(*blocks)


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    w = [scaled(c, width) for c in (64, 128, 256, 512)]
    return nn.Sequential(
        conv_bn_lif(in_channels, w[0], neuron),
        stages(BasicBlock, w[0], w, [2, 2, 2, 2], [1, 2, 2, 2], neuron),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(w[3], num_classes),
    )


@register_model("resnet19")
def resnet19(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    w = [scaled(c, width) for c in (128, 256, 512)]
    hidden = scaled(256, width)
    return nn.Sequential(
        conv_bn_lif(in_channels, w[0], neuron),
        stages(BasicBlock, w[0], w, [3, 3, 2], [1, 2, 2], neuron),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(w[2], hidden), LIF(neuron),
        nn.Linear(hidden, num_classes),
    )
