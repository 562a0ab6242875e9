"""ResNet-34s for ImageNet (docs/spec/rate_backprop.md §5): SEW-ResNet-34 and a pre-activation ResNet-34.

Both use the ImageNet stem, conv7×7/2 then max pooling 3×3/2, stages [3, 4, 6, 3] of widths
64/128/256/512, and global average pooling into the classifier. Convolutions carry no bias (every
one feeds a BatchNorm, which removes it exactly; the reference code keeps a redundant one).

Max pooling in the rate pass is an approximation: the rate methods apply it to the time-averaged
input, while the spiking network takes the maximum at each step, and the maximum of averages is not
the average of maxima when the arg-max moves over time. The gradient then flows to the arg-max of
the average. Where it matters for each model is said in its builder.
"""
from __future__ import annotations

from torch import nn

from ..neuron import NeuronParams
from ..spiking import LIF
from . import register_model
from .blocks import conv_bn, conv_bn_lif, scaled
from .resnet import stages

DEPTHS, STRIDES = [3, 4, 6, 3], [1, 2, 2, 2]


class SEWBlock(nn.Module):
    """Spike-element-wise block with ADD: (conv–BN–LIF)×2 plus the shortcut, identity or
    conv1×1–BN–LIF; the sum of the two spike trains is passed on as is (values 0, 1, 2)."""

    def __init__(self, cin: int, cout: int, stride: int, neuron: NeuronParams):
        super().__init__()
        self.residual = nn.Sequential(conv_bn_lif(cin, cout, neuron, stride=stride),
                                      conv_bn_lif(cout, cout, neuron))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn_lif(cin, cout, neuron, kernel=1, stride=stride))

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


class PreActBlock(nn.Module):
    """LIF–conv–BN–LIF–conv–BN added to an analog residual stream (identity, or conv1×1–BN)."""

    def __init__(self, cin: int, cout: int, stride: int, neuron: NeuronParams):
        super().__init__()
        self.residual = nn.Sequential(LIF(neuron), *conv_bn(cin, cout, stride=stride),
                                      LIF(neuron), *conv_bn(cout, cout))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Sequential(*conv_bn(cin, cout, kernel=1, stride=stride)))

    def forward(self, x):
        return self.residual(x) + self.shortcut(x)


def head(channels: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]


@register_model("sew_resnet34")
def sew_resnet34(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    """Stem conv–BN–LIF–maxpool. The pool acts on spikes, and its output reaches stage 1 through the
    identity shortcuts, so in the rate pass stage 1's currents (and their gradient) are approximate;
    from stage 2 on every path passes a LIF layer, whose value is the recorded rate, so the rate-pass
    logits still equal the spiking network's time-averaged logits (rate_M)."""
    w = [scaled(c, width) for c in (64, 128, 256, 512)]
    return nn.Sequential(
        conv_bn_lif(in_channels, w[0], neuron, kernel=7, stride=2),
        nn.MaxPool2d(3, stride=2, padding=1),
        stages(SEWBlock, w[0], w, DEPTHS, STRIDES, neuron),
        *head(w[3], num_classes),
    )


@register_model("preact_resnet34")
def preact_resnet34(num_classes: int, in_channels: int, neuron: NeuronParams, width: float = 1.0) -> nn.Module:
    """Stem conv–BN–maxpool with no LIF, so the pool acts on the analog stem output: for static
    images it is the same at every step and the pool is exact (rate-pass logits equal the
    time-averaged logits, rate_M); for event input it is the approximation above. The residual
    stream stays analog and the classifier reads it (not spikes); it is linear in the recorded rates
    because rate_M's BatchNorm is affine with the spike-pass statistics."""
    w = [scaled(c, width) for c in (64, 128, 256, 512)]
    return nn.Sequential(
        *conv_bn(in_channels, w[0], kernel=7, stride=2),
        nn.MaxPool2d(3, stride=2, padding=1),
        stages(PreActBlock, w[0], w, DEPTHS, STRIDES, neuron),
        *head(w[3], num_classes),
    )
