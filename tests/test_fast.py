"""The fast spike pass gives the reference's spikes (bit for bit), rates and eligibilities."""
import pytest
import torch
from torch import nn

from snnkit.methods import build_method
from snnkit.methods.rate import fast, modes
from snnkit.methods.rate.eligibility import RateRecorder, lif_multistep_record
from snnkit.methods.rate.fast import FastSpikePass, MultistepRecorder, fast_multistep_record
from snnkit.methods.rate.modes import MultiStepSpikePass, SingleStepSpikePass
from snnkit.models import ModelSpec, build_model
from snnkit.neuron import NeuronParams, lif_step
from snnkit.spiking import LIF, SpikingNet
from snnkit.surrogate import Surrogate, sigmoid_grad
from spike_pass_bound import assert_rate_and_eligibility, assert_spike_pass

NEURONS = [
    NeuronParams(reset=reset, detach_reset=detach, v_reset=v_reset)
    for reset, v_reset in (("soft", 0.0), ("hard", 0.0), ("hard", -0.3), ("subtract_next", 0.0))
    for detach in (True, False)
]


def neuron_id(p):
    return f"{p.reset}-vr{p.v_reset}-{'detached' if p.detach_reset else 'attached'}"


def currents(T, dtype=torch.float32):
    """Currents spread around the threshold, so that rates range over (0, 1)."""
    return (torch.randn(T, 3, 5, 7, dtype=dtype) * 0.8 + 0.6)


@pytest.mark.parametrize("p", NEURONS, ids=neuron_id)
@pytest.mark.parametrize("T", [1, 2, 5, 16])
def test_multistep_matches_reference(p, T):
    x = currents(T)
    out = fast_multistep_record(x, p, p.make_surrogate())
    assert 0 < float(out[0].mean()) < 1
    assert_spike_pass(out, x, p, p.make_surrogate())
    assert_spike_pass(lif_multistep_record(x, p, p.make_surrogate()), x, p, p.make_surrogate())


@pytest.mark.parametrize("p", NEURONS, ids=neuron_id)
def test_multistep_matches_reference_float64(p):
    x = currents(8, torch.float64)
    assert_spike_pass(fast_multistep_record(x, p, p.make_surrogate()), x, p, p.make_surrogate())


def test_soft_detached_eligibility_is_hand_computed():
    """One neuron, λ = 0.5, constant current 0.6: u = 0.6, 0.9, 1.05 (fires), 0.625."""
    p = NeuronParams(decay=0.5)
    x = torch.full((4, 1), 0.6, dtype=torch.float64)
    s, r, g = fast_multistep_record(x, p, p.make_surrogate())
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    u = torch.tensor([0.6, 0.9, 1.05, 0.625], dtype=torch.float64)
    rho = torch.tensor([1.0, 1.5, 1.75, 1.875], dtype=torch.float64)
    # float64 on both sides, a few roundings of 2⁻⁵³ on O(1) values: ≤ 1e-15, far below 1e-12
    torch.testing.assert_close(g, (sigmoid_grad(u - 1.0, 4.0) * rho).mean().view(1), rtol=1e-12, atol=0)
    assert float(r) == 0.25


class Triangle(Surrogate):
    """A surrogate the fused sigmoid path does not know: exercises the generic path."""

    name = "triangle"

    def grad(self, x):
        return (1.0 - x.abs()).clamp_min(0.0) * self.alpha


@pytest.mark.parametrize("p", NEURONS[:2], ids=neuron_id)
def test_generic_surrogate_matches_reference(p):
    x = currents(6)
    assert_spike_pass(fast_multistep_record(x, p, Triangle(1.5)), x, p, Triangle(1.5))
    assert_spike_pass(lif_multistep_record(x, p, Triangle(1.5)), x, p, Triangle(1.5))


def test_step_writes_into_out_and_rejects_empty_result():
    p = NeuronParams()
    spass = FastSpikePass(p, p.make_surrogate())
    with pytest.raises(RuntimeError, match="recorded no steps"):
        spass.result()
    out = torch.empty(3, 4)
    assert spass.step(torch.full((3, 4), 2.0), out=out) is out
    assert torch.equal(out, torch.ones(3, 4))


def tiny_net(p):
    torch.manual_seed(1)
    return SpikingNet(nn.Sequential(nn.Linear(6, 16), LIF(p), nn.Linear(16, 12), LIF(p), nn.Linear(12, 3)))


def layer_inputs(net, x_seq):
    """The [T, B, ...] current reaching each LIF layer in the multi-step layout."""
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(i[0].unflatten(0, (x_seq.shape[0], -1))))
               for m in net.body if isinstance(m, LIF)]
    with torch.no_grad():
        net.run_multistep(x_seq)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("p", NEURONS, ids=neuron_id)
@pytest.mark.parametrize("layout", ["multi", "single"])
def test_net_spike_pass_matches_reference(p, layout):
    """Both call sites (MultiStep and SingleStep recording) record the reference's r and g."""
    net = tiny_net(p)
    x_seq = torch.randn(4, 5, 6)
    with torch.no_grad():
        if layout == "multi":
            _, spike_modes = net.run_multistep(x_seq, lambda T: MultiStepSpikePass(T, MultistepRecorder()))
        else:
            _, spike_modes = net.run_singlestep(x_seq, SingleStepSpikePass)
    for mode, x in zip(spike_modes, layer_inputs(net, x_seq)):
        assert_rate_and_eligibility(*mode.recorded(), x, p, p.make_surrogate())


@pytest.mark.parametrize("method", ["rate_m", "rate_s"])
def test_rate_gradients_unchanged_by_fast_pass(method, monkeypatch):
    """A whole rate iteration with the fast pass gives the reference pass's gradients. In float64
    the passes give the same spikes and r, and g within ~1e-13 relative (spike_pass_bound); the
    gradients are linear in each of the 3 layers' g, so they agree to ~1e-12 of their largest
    entry, three orders below the 1e-9 checked."""
    def grads():
        torch.manual_seed(2)
        net = build_model(ModelSpec("digits_convnet", 10, 1, width=0.25)).double()
        x_seq = torch.rand(3, 8, 1, 8, 8, dtype=torch.float64).expand(3, 8, 1, 8, 8)
        y = torch.arange(8) % 10
        build_method(method, 3).train_step(net, x_seq, y, lambda: None)
        return [p.grad.clone() for p in net.parameters()]

    with_fast_pass = grads()
    monkeypatch.setattr(fast, "fast_multistep_record", lif_multistep_record)
    monkeypatch.setattr(modes, "FastSpikePass", ReferenceStepper)
    for a, b in zip(with_fast_pass, grads()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9 * float(b.abs().max()))


class ReferenceStepper:
    """The pure-function step and recorder behind FastSpikePass's interface."""

    def __init__(self, p, surrogate):
        self.p, self.v, self.rec = p, 0.0, RateRecorder(p, surrogate)

    def step(self, x):
        s, self.v, u = lif_step(self.v, x, self.p)
        self.rec.update(u, s)
        return s

    def result(self):
        return self.rec.result()


@pytest.mark.slow  # a few seconds of inductor compilation per neuron
@pytest.mark.parametrize("p", [p for p in NEURONS if p.v_reset != 0.0 or p.reset == "soft"], ids=neuron_id)
def test_compiled_pass_matches_reference(p):
    x = currents(4)
    assert_spike_pass(MultistepRecorder("on")(x, p, p.make_surrogate()), x, p, p.make_surrogate())


@pytest.mark.parametrize("neuron_steps, shapes, device, compiler, compiles", [
    (8192 * 4 * 1437 * 30, 6, "cpu", True, False),  # the 30-epoch digits recipe: < 1 s to save
    (139264 * 8 * 50000 * 100, 34, "cpu", True, True),  # resnet18 w0.25 on CIFAR, 100 epochs
    (139264 * 8 * 50000 * 100, 34, "cpu", False, False),  # no C++ compiler
    (139264 * 8 * 50000 * 100, 34, "cuda", True, False),  # CUDA runs the Triton kernel
    (10**12, 1, "cpu", True, True),  # 1e12 neuron-steps save ~585 s, more than one cold compile
    (10**11, 3, "cpu", True, False),  # ~58.5 s to save, less than 3 cold compiles (84 s)
])
def test_auto_compiles_when_the_run_repays_a_cold_compile_of_every_shape(neuron_steps, shapes, device,
                                                                         compiler, compiles):
    assert fast.compile_pays_off(neuron_steps, shapes, device, compiler) is compiles


def test_the_recorder_takes_a_decision_not_auto():
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        MultistepRecorder("auto")


def test_off_never_compiles_and_a_failed_compile_falls_back_to_eager(monkeypatch, caplog):
    p, x = NeuronParams(), currents(4)
    off = MultistepRecorder("off")
    off(x, p, p.make_surrogate())
    assert not off.compiled

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(fast.torch, "compile", broken)
    on = MultistepRecorder("on")
    assert_spike_pass(on(x, p, p.make_surrogate()), x, p, p.make_surrogate())
    assert on.compile == "off" and "no C++ compiler" in caplog.text


def test_compile_option_is_checked():
    with pytest.raises(ValueError, match="method.compile must be one of auto, on, off, got 'yes'"):
        build_method("rate_m", 2, {"compile": "yes"})
