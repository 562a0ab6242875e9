"""The LIF functions against hand-computed recurrences, the module against the functions, the
surrogate against autograd, and SpikingJelly's fused LIF against the reference loop."""
import pytest
import torch

from snnkit.methods.rate.eligibility import lif_multistep_record
from snnkit.neuron import NeuronParams, lif_multistep, lif_step
from snnkit.spiking import LIF, MultiStep, SingleStep, neuron_mode, spikingjelly_multistep
from snnkit.surrogate import heaviside, make_surrogate, sigmoid_grad

RESET_MODES = [("soft", True), ("soft", False), ("hard", True), ("hard", False)]


def test_heaviside_fires_at_threshold():
    assert heaviside(torch.tensor([-1e-7, 0.0, 1e-7])).tolist() == [0.0, 1.0, 1.0]


def test_soft_reset_recurrence_by_hand():
    # λ = 0.2, V_th = 1, x = 0.9 every step:
    # u1 = 0.9 (no spike), u2 = 0.18 + 0.9 = 1.08 (spike, v = 0.08), u3 = 0.016 + 0.9 = 0.916,
    # u4 = 0.1832 + 0.9 = 1.0832 (spike)
    p = NeuronParams()
    v = torch.zeros(1, dtype=torch.float64)
    us, ss = [], []
    for _ in range(4):
        s, v, u = lif_step(v, torch.tensor([0.9], dtype=torch.float64), p)
        us.append(u.item())
        ss.append(s.item())
    assert ss == [0, 1, 0, 1]
    assert us == pytest.approx([0.9, 1.08, 0.916, 1.0832], abs=1e-12)
    assert v.item() == pytest.approx(0.0832, abs=1e-12)


def test_hard_reset_recurrence_by_hand():
    p = NeuronParams(reset="hard", v_reset=-0.5)
    x = torch.full((4, 1), 0.9, dtype=torch.float64)
    # u1 = 0.9; u2 = 1.08 -> spike, v = -0.5; u3 = -0.1 + 0.9 = 0.8; u4 = 0.16 + 0.9 = 1.06 -> spike
    assert lif_multistep(x, p).flatten().tolist() == [0, 1, 0, 1]
    s, v, u = lif_step(torch.tensor([0.5]), torch.tensor([0.98]), p)
    assert (s.item(), v.item()) == (1.0, -0.5) and u.item() == pytest.approx(1.08)


def test_subtract_next_recurrence_by_hand():
    # snnTorch's subtract: u_t = λ·u_{t−1} + x_t − V_sub·s_{t−1}, V_sub after the decay; λ = 0.5,
    # V_th = 1, V_sub = 0.75, x = 0.8: u1 = 0.8; u2 = 0.4 + 0.8 = 1.2 (spike); u3 = 0.6 + 0.8 − 0.75
    # = 0.65; u4 = 0.325 + 0.8 = 1.125 (spike). The state is u itself.
    p = NeuronParams(decay=0.5, reset="subtract_next", v_subtract=0.75)
    x = torch.full((4, 1), 0.8, dtype=torch.float64)
    assert lif_multistep(x, p).flatten().tolist() == [0, 1, 0, 1]
    v, us = 0.0, []
    for x_t in x:
        s, v, u = lif_step(v, x_t, p)
        assert torch.equal(v, u)
        us.append(u.item())
    assert us == pytest.approx([0.8, 1.2, 0.65, 1.125], abs=1e-12)
    assert NeuronParams(reset="subtract_next", v_threshold=0.5).subtracted == 0.5  # V_sub defaults to V_th


def test_subtract_next_reset_gradient_flows_unless_detached():
    """∂u_2/∂u_1 = λ − V_sub·σ'(u_1 − V_th) with the reset attached, λ when detached."""
    for detach, expected in ((True, 0.5), (False, 0.5 - 0.75 * 1.0)):  # σ'(0) = 1 at α = 4
        p = NeuronParams(decay=0.5, reset="subtract_next", v_subtract=0.75, detach_reset=detach)
        x1 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        _, v, _ = lif_step(0.0, x1, p, p.make_surrogate().spike)
        _, _, u2 = lif_step(v, torch.zeros(1, dtype=torch.float64), p, p.make_surrogate().spike)
        (grad,) = torch.autograd.grad(u2.sum(), x1)
        assert grad.item() == pytest.approx(expected, abs=1e-12)


def test_eligibility_by_hand_soft_detached():
    # g = (1/T) Σ σ'(u_t − 1)·ρ_t with ρ_t = 1 + λ + … + λ^{t−1}
    p = NeuronParams()
    sur = p.make_surrogate()
    x = torch.tensor([[0.9], [0.9], [0.9]], dtype=torch.float64)
    s, r, g = lif_multistep_record(x, p, sur)
    u = torch.tensor([0.9, 1.08, 0.916], dtype=torch.float64)
    rho = torch.tensor([1.0, 1.2, 1.24], dtype=torch.float64)
    expected = (sigmoid_grad(u - 1.0, 4.0) * rho).mean()
    assert r.item() == pytest.approx(1 / 3)
    assert g.item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("make_mode,split", [(lambda T: MultiStep(T), False), (lambda T: SingleStep(), True)])
def test_module_matches_functions(make_mode, split):
    p = NeuronParams(decay=0.5)
    layer = LIF(p)
    x = torch.randn(5, 3, 7) * 2
    with neuron_mode(layer, lambda _: make_mode(5)) as modes:
        out = torch.stack([layer(xt) for xt in x]) if split else layer(x.flatten(0, 1)).unflatten(0, (5, 3))
    expected = lif_multistep(x, p)
    assert torch.equal(out, expected)
    assert torch.equal(modes[0].spike_counts, expected.sum(dim=(0, 2)))
    assert layer.layer_mode is None


def test_layer_outside_a_mode_says_what_to_do():
    with pytest.raises(RuntimeError, match="call the SpikingNet"):
        LIF(NeuronParams())(torch.zeros(2))


def test_surrogate_gradient_matches_autograd_of_its_primitive():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64, requires_grad=True)
    torch.sigmoid(4.0 * x).sum().backward()
    assert torch.allclose(sigmoid_grad(x.detach(), 4.0), x.grad, atol=1e-14)
    assert sigmoid_grad(torch.zeros(1), 4.0).item() == pytest.approx(1.0)  # peak α/4 = 1


def test_surrogate_spike_forward_is_heaviside_backward_is_formula():
    sur = make_surrogate("sigmoid", 2.0)
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    y = sur.spike(x)
    assert torch.equal(y, heaviside(x.detach()))
    y.sum().backward()
    assert torch.allclose(x.grad, sigmoid_grad(x.detach(), 2.0))


@pytest.mark.parametrize("reset,detach", RESET_MODES)
def test_spikingjelly_fused_lif_agrees_with_reference(reset, detach):
    p = NeuronParams(reset=reset, detach_reset=detach)
    x = (torch.randn(6, 4, 32, dtype=torch.float64) * 1.5).requires_grad_()  # float64: the gradients' only
    g = torch.randn(6, 4, 32, dtype=torch.float64)  # difference is rounding, far below 1e-12
    s_sj = spikingjelly_multistep(x, p)
    (grad_sj,) = torch.autograd.grad((s_sj * g).sum(), x)
    s_ref = lif_multistep(x, p, p.make_surrogate().spike)
    (grad_ref,) = torch.autograd.grad((s_ref * g).sum(), x)
    assert torch.equal(s_sj, s_ref)
    torch.testing.assert_close(grad_sj, grad_ref, rtol=0, atol=1e-12)


def test_invalid_neuron_parameters_name_the_choices():
    with pytest.raises(ValueError, match="neuron.reset must be one of"):
        NeuronParams(reset="medium")
    with pytest.raises(ValueError, match=r"neuron.decay must be in \[0, 1\]"):
        NeuronParams(decay=1.5)
    with pytest.raises(ValueError, match="neuron.v_subtract is the positive amount reset=subtract_next subtracts"):
        NeuronParams(v_subtract=0.5)
