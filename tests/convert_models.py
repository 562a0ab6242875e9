"""Foreign models for the conversion tests, small enough for CPU: SpikingJelly's zoo entries (at the
widths the zoo allows) and the neuron kinds snnkit maps, a snnTorch convnet, and models that must be
refused. The functions are also named by ``model.name`` (``tests/convert_models.py:function``)."""
from functools import partial

import snntorch as snn
from snntorch import surrogate as snn_surrogate
import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from spikingjelly.activation_based.model import ms_resnet, parametric_lif_net, sew_resnet, spiking_resnet, spiking_vgg
from torch import nn

# SpikingJelly neuron kinds: every convention snnkit maps (decay_input, soft/hard reset, v_reset ≠ 0,
# detach_reset, the two surrogates, IF).
NEURONS = {
    "lif": partial(neuron.LIFNode, tau=2.0),
    "lif_soft_detach_atan": partial(neuron.LIFNode, tau=2.0, v_reset=None, detach_reset=True,
                                    surrogate_function=surrogate.ATan()),
    "lif_no_decay_input": partial(neuron.LIFNode, tau=1.25, decay_input=False, v_reset=None, detach_reset=True),
    "lif_reset_minus_half": partial(neuron.LIFNode, tau=4.0, v_reset=-0.5, v_threshold=0.75,
                                    surrogate_function=surrogate.Sigmoid(alpha=2.0)),
    "if_soft": partial(neuron.IFNode, v_reset=None),
    "if_hard_atan": partial(neuron.IFNode, surrogate_function=surrogate.ATan(alpha=3.0)),
}


def zero_dropout(model: nn.Module) -> nn.Module:
    """SpikingJelly's Dropout keeps one mask over all steps, which snnkit refuses unless p = 0."""
    for m in model.modules():
        if isinstance(m, layer.Dropout):
            m.p = 0.0
    return model


def spiking_resnet18(spiking_neuron=NEURONS["lif"]) -> nn.Module:
    return spiking_resnet.spiking_resnet18(spiking_neuron=spiking_neuron, num_classes=10)


def sew_resnet18(spiking_neuron=NEURONS["lif"], cnf: str = "ADD") -> nn.Module:
    return sew_resnet.sew_resnet18(cnf=cnf, spiking_neuron=spiking_neuron, num_classes=10)


def spiking_vgg11_bn(spiking_neuron=NEURONS["lif"]) -> nn.Module:
    """The zoo's VGG-11-BN feature stack; its fixed 25088→4096→4096 classifier (120M weights) is
    replaced by a small one of the same kinds of layer, so the test fits a CPU."""
    model = spiking_vgg.spiking_vgg11_bn(spiking_neuron=spiking_neuron, num_classes=10)
    model.classifier = nn.Sequential(layer.Linear(512 * 7 * 7, 32), spiking_neuron(), layer.Linear(32, 10))
    return model


# parametric_lif_net's networks by name, with the one sample's shape each takes
PLIF_NETS = {"FashionMNISTNet": (1, 28, 28), "MNISTNet": (1, 28, 28), "NMNISTNet": (2, 34, 34),
             "CIFAR10Net": (3, 32, 32), "CIFAR10DVSNet": (2, 128, 128), "DVSGestureNet": (2, 128, 128)}


def plif_net(spiking_neuron=NEURONS["lif"], net: str = "FashionMNISTNet") -> nn.Module:
    """One of parametric_lif_net's networks at 4 channels, with fixed-τ neurons, dropout off."""
    return zero_dropout(getattr(parametric_lif_net, net)(channels=4, spiking_neuron=spiking_neuron))


def snntorch_convnet(beta: float = 0.5, reset_mechanism: str = "zero", surrogate_fn: str = "atan",
                     sharpness: float = 2.0) -> nn.Module:
    """snnTorch's usual convnet: Leaky layers (init_hidden) in an nn.Sequential, average pooling;
    ``surrogate_fn`` is snnTorch's ``atan`` (alpha) or ``sigmoid`` (slope) at ``sharpness``. (snnTorch's
    own sigmoid backward, ``exp(−slope·u)/(exp(−slope·u) + 1)²``, overflows float32 to NaN at its
    default slope 25 where u < −3.5: keep the slope small.)"""
    grad = getattr(snn_surrogate, surrogate_fn)(**{"atan": {"alpha": sharpness}, "sigmoid": {"slope": sharpness}}[
        surrogate_fn])
    leaky = partial(snn.Leaky, beta=beta, init_hidden=True, reset_mechanism=reset_mechanism, spike_grad=grad)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), leaky(), nn.AvgPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), leaky(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10), leaky())


def sj_avgpool_net(num_classes: int = 10) -> nn.Module:
    """A SpikingJelly network with hard-reset IF neurons and average pooling only: NIR can hold it."""
    return nn.Sequential(layer.Conv2d(3, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.IFNode(),
                         layer.AvgPool2d(2), layer.Flatten(), layer.Linear(8 * 8 * 8, num_classes), neuron.IFNode())


def upsampling_pool_net(window: int = 8, out: int = 6, num_classes: int = 10) -> nn.Module:
    """Average pooling by ``window``, then an adaptive pool that enlarges the map to ``out``×``out``
    (at 16×16 input: 2×2 to 6×6 by default, a replication; 4×4 to 7×7 with window 4, which is not)."""
    return nn.Sequential(layer.Conv2d(3, 8, 3, padding=1), layer.BatchNorm2d(8), neuron.IFNode(),
                         layer.AvgPool2d(window), layer.AdaptiveAvgPool2d(out), layer.Flatten(),
                         layer.Linear(8 * out * out, num_classes), neuron.IFNode())


# --- models snnkit must refuse -----------------------------------------------------------------

class SpikeAttention(nn.Module):
    """Attention between spike tensors: a product of two activations."""

    def __init__(self):
        super().__init__()
        self.q, self.k = layer.Linear(16, 16), layer.Linear(16, 16)
        self.sq, self.sk = neuron.LIFNode(), neuron.LIFNode()

    def forward(self, x):
        return self.sq(self.q(x)) @ self.sk(self.k(x)).transpose(-1, -2)


def attention() -> nn.Module:
    return nn.Sequential(layer.Flatten(), layer.Linear(3 * 16 * 16, 16), SpikeAttention())


def sew_iand() -> nn.Module:
    return sew_resnet18(NEURONS["lif"], cnf="IAND")


def sew_and() -> nn.Module:
    return sew_resnet18(NEURONS["lif"], cnf="AND")


def plif() -> nn.Module:
    return plif_net(neuron.ParametricLIFNode)


def dropout() -> nn.Module:
    return parametric_lif_net.FashionMNISTNet(channels=4, spiking_neuron=NEURONS["lif"])


def snntorch_no_reset() -> nn.Module:
    return snntorch_convnet(reset_mechanism="none")


def snntorch_learn_beta() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10),
                         snn.Leaky(beta=0.5, learn_beta=True, init_hidden=True, reset_mechanism="zero"))


def snntorch_synaptic() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10),
                         snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True, reset_mechanism="zero"))


def ms_resnet18() -> nn.Module:
    """The zoo's MS-ResNet: its forward repeats a static input over T when it sees 4 axes."""
    return ms_resnet.ms_resnet18(num_classes=10, spiking_neuron=NEURONS["lif"])


def unknown_neuron() -> nn.Module:
    return nn.Sequential(layer.Flatten(), layer.Linear(3 * 16 * 16, 10), neuron.QIFNode())


def stateful_layer() -> nn.Module:
    return nn.Sequential(layer.Flatten(), layer.Linear(3 * 16 * 16, 10), neuron.LIFNode(), layer.SynapseFilter())


def ann2snn_module() -> nn.Module:
    from spikingjelly.activation_based.ann2snn.modules import VoltageScaler

    return nn.Sequential(layer.Flatten(), VoltageScaler(2.0), layer.Linear(3 * 16 * 16, 10), neuron.IFNode())


def other_surrogate() -> nn.Module:
    return nn.Sequential(layer.Flatten(), layer.Linear(3 * 16 * 16, 10),
                         neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic()))


def not_a_module() -> int:
    return 3


def sj_tensor() -> torch.Tensor:
    return torch.zeros(1)
