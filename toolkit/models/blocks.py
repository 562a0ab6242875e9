"""Building blocks shared by the architectures."""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from ..spiking import LIF


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=bias), nn.BatchNorm2d(cout)]


def conv_bn_lif(cin: int, cout: int, neuron: NeuronParams, kernel: int = 3, stride: int = 1,
                bias: bool = False) -> nn.Sequential:
    return nn.Sequential(*conv_bn(cin, cout, kernel, stride, bias), LIF(neuron))
