"""Spike-causal gradient scaling (docs/spec/methods.md) and the named losses."""
import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnkit.config import resolve_config
from snnkit.errors import ConfigError
from snnkit.methods import build_method
from snnkit.methods.causal import causal_factor, coincidence
from snnkit.methods.layers import presynaptic_trace
from snnkit.methods.losses import ce_mse, check_loss, sequence_loss, tet
from snnkit.methods.rate.fast import MultistepRecorder
from snnkit.methods.rate.modes import MultiStepSpikePass
from snnkit.neuron import NeuronParams
from snnkit.spiking import LIF, SpikingNet

T, B = 3, 8


def mlp() -> SpikingNet:
    """Linear(6→5)–LIF–Linear(5→3): the hidden weight is scaled, the readout is not."""
    net = SpikingNet(nn.Sequential(nn.Linear(6, 5), LIF(NeuronParams()), nn.Linear(5, 3))).double()
    with torch.no_grad():
        net.body[0].weight.mul_(3.0)  # enough drive for a mix of spikes and silence
    return net


@pytest.fixture
def data():
    return torch.randn(T, B, 6, dtype=torch.float64), torch.randint(0, 3, (B,))


def grads(name, net, x_seq, y, **options) -> dict[str, torch.Tensor]:
    build_method(name, T, options).train_step(net, x_seq, y, lambda: None)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_causal_factor_by_hand():
    c = torch.tensor([[0.0, 1.0, 2.0], [3.0, 3.0, 3.0]])
    expected = torch.tensor([[0.5, 1.0, 1.5], [1.0, 1.0, 1.0]])  # mean already 1
    torch.testing.assert_close(causal_factor(c, 0.5), expected)
    f = causal_factor(torch.rand(4, 3, 3, 3), 0.3)
    assert f.shape == (4, 3, 3, 3)
    # f/mean(f) of n positive float32 terms, then its mean: ≤ n + 1 + n roundings of terms near 1, relative
    assert abs(float(f.mean()) - 1.0) <= (2 * f.numel() + 1) * torch.finfo(f.dtype).eps
    assert torch.equal(causal_factor(torch.rand(4, 7), 0.0), torch.ones(4, 7))


@pytest.mark.parametrize("layout", ["multi", "single"])
def test_bptt_scaling_uses_post_spikes_times_presynaptic_trace(layout, data):
    x_seq, y = data
    net = mlp()
    plain = grads("bptt", copy.deepcopy(net), x_seq, y, layout=layout)
    scaled = grads("bptt", copy.deepcopy(net), x_seq, y, layout=layout, grad_scale="causal", beta=0.5)
    with torch.no_grad():
        v, post = torch.zeros(B, 5, dtype=torch.float64), []
        for x in x_seq:  # the hidden layer's spikes, by hand
            u = 0.2 * v + net.body[0](x)
            s = (u >= 1.0).double()
            v = u - s
            post.append(s)
        trace = presynaptic_trace(x_seq, 0.2)
        c = torch.einsum("tbo,tbi->oi", torch.stack(post), trace)
    assert 0 < float(torch.stack(post).mean()) < 1
    torch.testing.assert_close(scaled["body.0.weight"], plain["body.0.weight"] * causal_factor(c, 0.5))
    for n in ("body.0.bias", "body.2.weight", "body.2.bias"):
        torch.testing.assert_close(scaled[n], plain[n])


def test_rate_scaling_uses_rates(data):
    x_seq, y = data
    net = mlp()
    plain = grads("rate_m", copy.deepcopy(net), x_seq, y)
    scaled = grads("rate_m", copy.deepcopy(net), x_seq, y, grad_scale="causal", beta=0.8)
    with torch.no_grad():
        _, modes = copy.deepcopy(net).run_multistep(x_seq, partial(MultiStepSpikePass, recorder=MultistepRecorder()))
        rate, _ = modes[0].recorded()
        c = torch.einsum("bo,bi->oi", rate, x_seq.mean(0))
    torch.testing.assert_close(scaled["body.0.weight"], plain["body.0.weight"] * causal_factor(c, 0.8))
    torch.testing.assert_close(scaled["body.2.weight"], plain["body.2.weight"])


@pytest.mark.parametrize("name", ["bptt", "rate_m", "rate_s"])
def test_beta_zero_is_the_unscaled_method(name, data):
    net = mlp()
    plain = grads(name, copy.deepcopy(net), *data)
    scaled = grads(name, copy.deepcopy(net), *data, grad_scale="causal", beta=0.0)
    for n in plain:
        torch.testing.assert_close(scaled[n], plain[n], atol=0, rtol=0)


def test_conv_coincidence_is_the_weight_gradient_operator():
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1).double()
    pre, post = torch.rand(5, 3, 8, 8, dtype=torch.float64), torch.rand(5, 4, 4, 4, dtype=torch.float64)
    expected = torch.nn.grad.conv2d_weight(pre, conv.weight.shape, post, stride=2, padding=1)
    torch.testing.assert_close(coincidence(conv, pre, post), expected)


def test_causal_options_from_the_config():
    cfg = resolve_config(None, ["method.name=bptt", "method.grad_scale=causal", "method.beta=0.25"])
    assert cfg.method.options == {"grad_scale": "causal", "beta": 0.25}
    with pytest.raises(ConfigError, match="method.grad_scale must be one of none, causal, got 'spiky'"):
        resolve_config(None, ["method.name=rate_s", "method.grad_scale=spiky"])
    with pytest.raises(ConfigError, match=r"method.beta must be in \[0, 1\], got 1.5"):
        resolve_config(None, ["method.beta=1.5"])


def test_named_losses_by_hand():
    o, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 3, 1, 1, 2])
    onehot = F.one_hot(y, 4).double()
    torch.testing.assert_close(ce_mse(o, y, 0.0), F.cross_entropy(o, y))
    torch.testing.assert_close(ce_mse(o, y, 0.3), 0.7 * F.cross_entropy(o, y) + 0.3 * ((o - onehot) ** 2).mean())
    torch.testing.assert_close(tet(o, y), 0.999 * F.cross_entropy(o, y) + 1e-3 * ((o - 1) ** 2).mean())
    seq = torch.randn(3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(sequence_loss(seq, y, "mean"), F.cross_entropy(seq.mean(0), y))
    torch.testing.assert_close(sequence_loss(seq, y, "tet", 0.1), sum(tet(o, y, 0.1) for o in seq) / 3)
    with pytest.raises(ConfigError, match="method.loss must be one of ce_mse, tet, got 'mean'"):
        check_loss("mean", per_step_only=True)
    with pytest.raises(ConfigError, match="method.loss_weight applies to a per-step loss"):
        resolve_config(None, ["method.name=bptt", "method.loss_weight=0.1"])
