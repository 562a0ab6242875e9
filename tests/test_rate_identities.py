"""The identities of docs/spec/rate_backprop.md §4 that rate_M and rate_S must satisfy."""
import copy

import pytest
import torch
import torch.nn.functional as F

from snnkit.methods import METHODS, build_method
from snnkit.methods.rate.batchnorm import batchnorm_layers, spike_statistics
from snnkit.models import ModelSpec, build_model
from snnkit.methods.rate.eligibility import lif_multistep_record
from snnkit.neuron import NeuronParams, lif_multistep
from snnkit.spiking import spiking_layers

RESET_MODES = [(reset, detach) for reset in ("soft", "hard", "subtract_next") for detach in (True, False)]


def digits_net(dtype=torch.float32, **neuron):
    return build_model(ModelSpec("digits_convnet", 10, 1, NeuronParams(**neuron), width=0.5)).to(dtype).train()


def batch(T, B=16, dtype=torch.float32, static=True):
    x = torch.randn(B, 1, 8, 8, dtype=dtype) * 1.5
    x_seq = x.expand(T, *x.shape) if static else torch.randn(T, B, 1, 8, 8, dtype=dtype) * 1.5
    return x_seq, torch.randint(0, 10, (B,))


def grads(net, method, x_seq, y, **options):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # methods that draw random steps (sltt_k) draw the same ones
    build_method(method, x_seq.shape[0], options).train_step(net, x_seq, y, step=lambda: None)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("model", ["digits_convnet", "resnet18"])
def test_1_rate_pass_logits_equal_time_averaged_spike_logits(model):
    shape = (1, 8, 8) if model == "digits_convnet" else (3, 16, 16)
    net = build_model(ModelSpec(model, 10, shape[0], width=0.125 if model == "resnet18" else 0.5)).double().train()
    x_seq = torch.randn(4, 8, *shape, dtype=torch.float64).mul(2)  # different frames per step
    rate_m = build_method("rate_m", 4)
    spikes = rate_m.spike_pass(net, x_seq)
    logits = rate_m.rate_pass(net, x_seq, spikes)
    assert spikes.logits_seq.abs().sum() > 0 and logits.dtype == spikes.logits_seq.dtype == torch.float64
    # float64, the same sums in another order: ≲ n·2⁻⁵³·Σ|terms| ~ 1e-13 here, far below 1e-9
    assert (logits - spikes.logits_seq.mean(0)).abs().max() <= 1e-9 * spikes.logits_seq.abs().max()


@pytest.mark.parametrize("method", ["rate_m", "rate_s"])
@pytest.mark.parametrize("divide_grad_by_T", [False, True])
def test_2_classifier_gradient_is_bptts_by_default_and_over_T_with_the_reference_option(method, divide_grad_by_T):
    T = 4
    net = digits_net(torch.float64)
    x_seq, y = batch(T, dtype=torch.float64)
    head = "body.6.weight"
    bptt = "single" if method == "rate_s" else "multi"  # the same BN statistics: per step, or over T·B
    g_bptt = grads(net, "bptt", x_seq, y, layout=bptt)[head]
    g_rate = grads(net, method, x_seq, y, divide_grad_by_T=divide_grad_by_T)[head]
    scale = T if divide_grad_by_T else 1
    assert g_bptt.dtype == g_rate.dtype == torch.float64
    ratio = g_bptt.norm() / g_rate.norm()
    cosine = F.cosine_similarity(g_bptt.flatten(), g_rate.flatten(), dim=0)
    # float64: the identity holds to the rounding of two backward passes (≲ 1e-12 relative), so 1e-9
    assert ratio.item() == pytest.approx(scale, rel=1e-9)
    assert cosine.item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(g_bptt, scale * g_rate, rtol=0, atol=1e-9 * float(g_bptt.abs().max()))


def test_3_at_T1_rate_m_equals_bptt_and_rate_s_equals_rate_m():
    net = digits_net(torch.float64)
    x_seq, y = batch(1, dtype=torch.float64)
    bptt, rate_m, rate_s = (grads(net, m, x_seq, y) for m in ("bptt", "rate_m", "rate_s"))
    for name in bptt:  # float64: ≲ 1e-12 relative from the order of the sums, far below 1e-8
        assert torch.allclose(rate_m[name], bptt[name], atol=1e-10, rtol=1e-8), name
        assert torch.allclose(rate_s[name], rate_m[name], atol=1e-10, rtol=1e-8), name


@pytest.mark.parametrize("reset,detach", RESET_MODES)
@pytest.mark.parametrize("v_reset", [0.0, -0.3])
def test_4_bptt_input_gradient_under_constant_current_is_e_times_g(reset, detach, v_reset):
    T = 6
    p = NeuronParams(reset=reset, detach_reset=detach, v_reset=v_reset)
    c = (torch.rand(200, dtype=torch.float64) * 1.6 - 0.1).requires_grad_()
    e = torch.randn(200, dtype=torch.float64)
    s = lif_multistep(c.expand(T, -1), p, p.make_surrogate().spike)
    s.backward((e / T).expand(T, -1))
    _, r, g = lif_multistep_record(c.detach().expand(T, -1), p, p.make_surrogate())
    assert 0 < r.mean() < 1
    assert torch.allclose(c.grad, e * g, atol=1e-12, rtol=1e-10)  # float64, T = 6 steps: ≲ 1e-14


@pytest.mark.parametrize("method", METHODS.names())
def test_5_state_is_clean_after_an_iteration(method):
    net = digits_net()
    x_seq, y = batch(3, static=False)
    first, second = grads(net, method, x_seq, y), grads(net, method, x_seq, y)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert torch.is_grad_enabled()
    assert all(layer.layer_mode is None for layer in spiking_layers(net.body))
    for bn in batchnorm_layers(net.body):
        assert not bn._forward_pre_hooks and not bn._forward_hooks and "forward" not in vars(bn)


@pytest.mark.parametrize("method,updates", [("rate_m", 1), ("rate_s", 4)])
def test_6_running_bn_statistics(method, updates):
    T, B = 4, 16
    net = digits_net(torch.float64)
    x_seq, y = batch(T, B, dtype=torch.float64, static=False)
    conv, bn = net.body[0][0], net.body[0][1]
    reference = copy.deepcopy(bn)
    with torch.no_grad():
        a = conv(x_seq.flatten(0, 1)).unflatten(0, (T, B))
        if method == "rate_m":
            reference(a.flatten(0, 1))  # one update with the statistics over T·B
        else:
            for a_t in a:  # T updates with per-step statistics
                reference(a_t)
    build_method(method, T).train_step(net, x_seq, y, step=lambda: None)
    # float64 means and variances of ≤ 1024 values each: ≲ 1e-13 of their scale, far below 1e-9
    assert torch.allclose(bn.running_mean, reference.running_mean, rtol=0, atol=1e-9)
    assert torch.allclose(bn.running_var, reference.running_var, rtol=0, atol=1e-9)
    assert all(int(b.num_batches_tracked) == updates for b in batchnorm_layers(net.body))


def test_rate_s_statistics_average_means_and_inverse_deviations():
    eps = 1e-5
    records = [(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 4.0])),
               (torch.tensor([2.0, 3.0]), torch.tensor([0.25, 1.0]))]
    mean, var = spike_statistics(records, eps)
    inv = (torch.rsqrt(torch.tensor([1.0, 4.0]) + eps) + torch.rsqrt(torch.tensor([0.25, 1.0]) + eps)) / 2
    assert torch.allclose(mean, torch.tensor([1.0, 2.0]))
    assert torch.allclose(torch.rsqrt(var + eps), inv)


def test_rate_s_spike_pass_matches_bptt_single_step_forward():
    net = digits_net()
    x_seq, y = batch(3, static=False)
    logits_seq, _ = net.run_singlestep(x_seq)
    spikes = build_method("rate_s", 3).spike_pass(net, x_seq)
    assert torch.equal(spikes.logits_seq, logits_seq)
