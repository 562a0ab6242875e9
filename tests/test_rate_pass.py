"""The rate pass's two autograd Functions equal the spec's formulas (docs/spec/rate_backprop.md §2.2) under
autograd, in value and gradient, and save no more for backward than BPTT's layers do."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnkit.methods.rate.batchnorm import channel_stats, straight_through_batchnorm
from snnkit.neuron import NeuronParams
from snnkit.methods.rate.modes import RatePass
from snnkit.spiking import LIF, neuron_mode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import Activation, SavedTensorMeter  # noqa: E402


def formula_bn(bn, mean_spike, var_spike, a):
    """The straight-through BN exactly as the spec writes it, differentiated by autograd."""
    mean_b, var_b = channel_stats(a, False)
    mean = mean_spike + (mean_b - mean_b.detach())
    var = var_spike + (var_b - var_b.detach())
    shape = (1, -1) + (1,) * (a.dim() - 2)
    out = (a - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    return out * bn.weight.view(shape) + bn.bias.view(shape) if bn.affine else out


def bn_and_input(affine, dims):
    torch.manual_seed(3)
    bn = (nn.BatchNorm2d if dims == 4 else nn.BatchNorm1d)(5, affine=affine).double()
    if affine:
        nn.init.uniform_(bn.weight, 0.5, 1.5), nn.init.uniform_(bn.bias, -0.5, 0.5)
    a = torch.randn(6, 5, *([3, 4] if dims == 4 else []), dtype=torch.float64) * 2 + 0.3
    # spike statistics that differ from the batch's in both mean and variance
    return bn, a, a.mean([0, *range(2, dims)]) + 0.2, a.var([0, *range(2, dims)]) * 1.7


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dims", [2, 4])
def test_straight_through_bn_matches_the_formula(affine, dims):
    bn, a, mean_s, var_s = bn_and_input(affine, dims)
    go = torch.randn_like(a)
    results = []
    for run in ("function", "formula"):
        a_, params = a.clone().requires_grad_(), list(bn.parameters())
        if run == "function":
            with straight_through_batchnorm({bn: [(mean_s, var_s)]}):
                out = bn(a_)
        else:
            out = formula_bn(bn, mean_s, var_s, a_)
        grads = torch.autograd.grad(out, [a_, *params], go)
        results.append((out, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_rate_value_is_r_with_jacobian_g():
    r, g = torch.rand(4, 7), torch.rand(4, 7)
    c = torch.randn(4, 7, requires_grad=True)
    layer = LIF(NeuronParams())
    with neuron_mode(layer, lambda _: RatePass(r, g)):
        out = layer(c)
    assert torch.equal(out, r) and out.untyped_storage().data_ptr() == r.untyped_storage().data_ptr()
    (grad,) = torch.autograd.grad(out, c, torch.ones_like(out) * 3)
    assert torch.equal(grad, 3 * g)


def saved_bytes(fn) -> int:
    meter = SavedTensorMeter()
    with meter.measuring():
        fn()
    return meter.peak


def test_rate_pass_saves_what_bptt_at_one_step_saves():
    """conv–BN–LIF–conv: the rate pass keeps a, g and r (the second conv's input) where BPTT keeps a,
    the surrogate's input and the spikes; both keep the image and the weights."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), LIF(NeuronParams()),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False))
    x = torch.randn(8, 2, 6, 6)
    stats = {body[1]: [(torch.zeros(4), torch.ones(4))]}
    r, g = torch.rand(8, 4, 6, 6), torch.rand(8, 4, 6, 6)

    def rate():
        with straight_through_batchnorm(stats), neuron_mode(body, lambda _: RatePass(r, g)):
            body(x).sum()

    def bptt():  # one step from v = 0: the LIF is the surrogate spike of x − V_th
        with neuron_mode(body, lambda _: Activation()):
            body(x).sum()

    assert saved_bytes(rate) <= saved_bytes(bptt)


def test_straight_through_bn_saves_what_batch_norm_saves():
    bn, a, mean_s, var_s = bn_and_input(True, 4)
    a.requires_grad_()
    plain = saved_bytes(lambda: F.batch_norm(a, None, None, bn.weight, bn.bias, True))
    with straight_through_batchnorm({bn: [(mean_s, var_s)]}):
        assert saved_bytes(lambda: bn(a)) <= plain + 4 * 5 * 8  # a and weight; + per-channel vectors
