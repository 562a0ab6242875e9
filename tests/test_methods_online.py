"""OTTT, SLTT and SAF: the identities of docs/spec/methods.md, constant memory in T, clean state,
start-up checks."""
import copy
import math

import pytest
import torch
from torch import nn

from snnkit.config import resolve_config
from snnkit.data import encode, load_dataset
from snnkit.errors import ConfigError
from snnkit.methods import METHODS, build_method
from snnkit.methods.layers import Trace, presynaptic_trace
from snnkit.models import ModelSpec, build_model
from snnkit.neuron import RESETS, NeuronParams
from snnkit.spiking import LIF, SpikingNet, has_mode
from snnkit.training import Trainer

ONLINE = ["ottt_a", "ottt_o", "sltt", "sltt_k", "saf_e", "saf_f"]
every_reset = pytest.mark.parametrize("reset", sorted(RESETS))  # each identity holds under every reset


def tiny_net(dtype=torch.float32, **neuron) -> SpikingNet:
    net = build_model(ModelSpec("digits_convnet", 10, 1, NeuronParams(**neuron), width=0.25))
    return net.to(dtype).train()


@pytest.fixture
def batch():
    x, y = load_dataset("digits").train.tensors
    return x[:16], y[:16]


class GradLog:
    """A ``step`` that records the gradients it is called with, then zeroes them (weights unchanged)."""

    def __init__(self, net: nn.Module):
        self.net, self.grads = net, []

    def __call__(self):
        self.grads.append({n: p.grad.clone() for n, p in self.net.named_parameters() if p.grad is not None})
        self.net.zero_grad(set_to_none=True)

    def total(self) -> dict[str, torch.Tensor]:
        return {n: sum(g[n] for g in self.grads) for n in self.grads[0]}


def run(name, net, x, y, T=4, dtype=torch.float32, **options):
    log = GradLog(net)
    out = build_method(name, T, options).train_step(net, encode(x.to(dtype), T, "static"), y, log)
    return out, log


def assert_grads_equal(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], atol=atol, rtol=0, msg=n)


def test_the_one_presynaptic_trace_is_the_discounted_sum_of_its_inputs():
    """methods.layers' trace, shared by OTTT, SAF and the causal scaling: â[t] = Σ_k λ^(t−k)·x[k]
    and ρ[t] = Σ_{k<t} λ^k."""
    x, decay = torch.rand(5, 3, 4, dtype=torch.float64), 0.3
    expected = torch.stack([sum(decay ** (t - k) * x[k] for k in range(t + 1)) for t in range(5)])
    torch.testing.assert_close(presynaptic_trace(x, decay), expected)
    trace = Trace(decay)
    for t in range(5):
        torch.testing.assert_close(trace.update(x[t]), expected[t])
        assert math.isclose(trace.rho, sum(decay ** k for k in range(t + 1)))


@every_reset
def test_sltt_equals_ottt_with_trace_decay_zero(batch, reset):
    net = tiny_net(torch.float64, reset=reset)
    _, sltt = run("sltt", copy.deepcopy(net), *batch, dtype=torch.float64)
    _, ottt = run("ottt_a", copy.deepcopy(net), *batch, dtype=torch.float64, trace_decay=0.0)
    _, traced = run("ottt_a", copy.deepcopy(net), *batch, dtype=torch.float64)
    assert_grads_equal(sltt.total(), ottt.total(), atol=1e-12)
    first = "body.0.0.weight"
    assert not torch.allclose(sltt.total()[first], traced.total()[first])  # the trace matters


def test_saf_e_equals_ottt_o_exactly(batch):  # SAF trains soft reset only; it rejects the others (below)
    net = tiny_net(torch.float64)
    saf_net, ottt_net = copy.deepcopy(net), copy.deepcopy(net)
    saf_out, saf = run("saf_e", saf_net, *batch, dtype=torch.float64)
    ottt_out, ottt = run("ottt_o", ottt_net, *batch, dtype=torch.float64)
    assert len(saf.grads) == len(ottt.grads) == 4  # one optimiser step per time step
    for g_saf, g_ottt in zip(saf.grads, ottt.grads):
        assert_grads_equal(g_saf, g_ottt, atol=1e-12)
    torch.testing.assert_close(saf_out.logits, ottt_out.logits, atol=1e-12, rtol=0)
    assert saf_out.firing_rate == ottt_out.firing_rate
    for a, b in zip(saf_net.buffers(), ottt_net.buffers()):  # BN running statistics
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@every_reset
def test_ottt_readout_gradient_equals_bptt_with_per_step_loss(batch, reset):
    net = tiny_net(torch.float64, reset=reset)
    _, ottt = run("ottt_a", copy.deepcopy(net), *batch, dtype=torch.float64)
    _, bptt = run("bptt", copy.deepcopy(net), *batch, dtype=torch.float64, layout="single", loss="ce_mse")
    g_ottt, g_bptt = ottt.total(), bptt.total()
    for n in ("body.6.weight", "body.6.bias"):  # the linear readout
        torch.testing.assert_close(g_ottt[n], g_bptt[n], atol=1e-12, rtol=0)
    assert not torch.allclose(g_ottt["body.0.0.weight"], g_bptt["body.0.0.weight"])  # hidden layers differ


def test_saf_forward_is_the_lif_network(batch):  # SAF trains soft reset only; it rejects the others (below)
    net = tiny_net(torch.float64)
    x_seq = encode(batch[0].to(torch.float64), 4, "static")
    out, _ = run("saf_f", copy.deepcopy(net), *batch, dtype=torch.float64)
    with torch.no_grad():
        logits_seq, _ = copy.deepcopy(net).run_singlestep(x_seq)
    torch.testing.assert_close(out.logits, logits_seq.mean(0), atol=1e-12, rtol=0)


@every_reset
def test_sltt_k_with_k_equal_t_is_sltt(batch, reset):
    net = tiny_net(torch.float64, reset=reset)
    _, sltt = run("sltt", copy.deepcopy(net), *batch, dtype=torch.float64)
    _, sltt_k = run("sltt_k", copy.deepcopy(net), *batch, dtype=torch.float64, K=4)
    assert_grads_equal(sltt.total(), sltt_k.total(), atol=1e-12)
    with pytest.raises(ConfigError, match="method.K = 5 exceeds method.T = 4; set method.K <= T"):
        build_method("sltt_k", 4, {"K": 5})


class SavedTensors:
    """Counts the tensors autograd keeps for backward (and their bytes), at the peak."""

    def __init__(self):
        self.live = self.bytes = self.peak = self.peak_bytes = 0

    def pack(self, t):
        self.live += 1
        self.bytes += t.numel() * t.element_size()
        self.peak, self.peak_bytes = max(self.peak, self.live), max(self.peak_bytes, self.bytes)
        return _Packed(t, self)

    @staticmethod
    def unpack(packed):
        return packed.tensor


class _Packed:
    def __init__(self, tensor, counter):
        self.tensor, self.counter = tensor, counter

    def __del__(self):
        self.counter.live -= 1
        self.counter.bytes -= self.tensor.numel() * self.tensor.element_size()


def peak_saved(name: str, T: int, batch) -> tuple[int, int]:
    counter = SavedTensors()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        run(name, tiny_net(), *batch, T=T)
    return counter.peak, counter.peak_bytes


@pytest.mark.parametrize("name", ONLINE)
def test_online_memory_is_constant_in_T(name, batch):
    assert peak_saved(name, 2, batch) == peak_saved(name, 8, batch)


def test_bptt_memory_grows_with_T(batch):  # the counter sees what the test above rules out
    (count2, bytes2), (count8, bytes8) = peak_saved("bptt", 2, batch), peak_saved("bptt", 8, batch)
    assert bytes8 >= 3 * bytes2 and count8 >= count2


def leftover_state(net: SpikingNet) -> list:
    return [m for m, plain in zip(net.modules(), tiny_net().modules())
            if "forward" in vars(m) or m._forward_hooks or m._forward_pre_hooks
            or has_mode(m) or type(m) is not type(plain)]


@pytest.mark.parametrize("name, options", [(n, {}) for n in METHODS.names()]
                         + [("bptt", {"grad_scale": "causal"}), ("rate_s", {"grad_scale": "causal"})])
def test_state_is_clean_after_an_iteration(name, options, batch):
    net = tiny_net()
    grads = []
    for _ in range(2):
        torch.manual_seed(1)  # sltt_k draws its steps from the global generator
        _, log = run(name, net, *batch, **options)
        grads.append(log.total())
        assert leftover_state(net) == []
        assert torch.is_grad_enabled()
    assert_grads_equal(*grads, atol=0)


def test_state_is_clean_after_an_error(batch):
    net = tiny_net()

    def failing_step():
        raise RuntimeError("boom")

    for name in ONLINE:
        with pytest.raises(RuntimeError, match="boom"):
            build_method(name, 2).train_step(net, encode(batch[0], 2, "static"), batch[1], failing_step)
        assert leftover_state(net) == []


def test_saf_rejects_what_it_cannot_train_at_start_up(tmp_path):
    pooled = SpikingNet(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), LIF(NeuronParams()), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 4, 3, padding=1), LIF(NeuronParams()), nn.Flatten(),
                                      nn.Linear(64, 10)))
    with pytest.raises(ConfigError) as e:
        build_method("saf_e", 4).check(pooled)
    assert str(e.value) == ("SAF cannot train layer 2 (MaxPool2d): SAF accumulates inputs over time, so every "
                            "layer before the last LIF must be conv, linear, BatchNorm or average pooling; "
                            "train with ottt_o or sltt instead")
    build_method("ottt_o", 4).check(pooled)  # the trace-based methods take the pooled spikes' trace
    for reset in sorted(set(RESETS) - {"soft"}):
        cfg = resolve_config(None, ["method.name=saf_f", f"neuron.reset={reset}", "optim.epochs=1"])
        with pytest.raises(ConfigError, match="SAF needs soft reset and one decay for every LIF layer"):
            Trainer(cfg, tmp_path)


@pytest.mark.parametrize("name", ONLINE)
def test_online_methods_lower_the_loss_on_digits(name):
    torch.set_num_threads(1)
    x, y = load_dataset("digits").train.tensors
    net = tiny_net()
    method = build_method(name, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step():
        opt.step()
        opt.zero_grad(set_to_none=True)

    losses = []
    for _ in range(100):
        idx = torch.randint(0, len(y), (32,))
        losses.append(method.train_step(net, encode(x[idx], 2, "static"), y[idx], step).loss)
    assert sum(losses[-15:]) < 0.5 * sum(losses[:15])


def test_cli_stops_an_unsupported_run_at_start_up_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from snnkit.cli.main import app

    result = CliRunner().invoke(app, ["train", "--method", "saf_e", "--set", "neuron.reset=hard",
                                      "--set", f"run.out_dir={tmp_path}"])
    assert result.exit_code == 2
    assert "SAF needs soft reset" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # stopped before any run directory or runs/latest was written


def first_conv_grad(name, net, x, y, **options):
    """``run`` with the error g[t] at the first conv's output recorded at every step."""
    errors = []
    conv = net.body[0][0]

    def record(module, inputs, out):
        if out.requires_grad:  # the steps that run with autograd
            out.register_hook(errors.append)

    hook = conv.register_forward_hook(record)
    _, log = run(name, net, x, y, dtype=torch.float64, **options)
    hook.remove()
    return log.total(), errors


def weight_grad_of(conv, inputs, errors):
    """Σ_t g[t] ⊗ input[t] for a conv: the weight gradient of ``inputs`` at the recorded errors."""
    w = conv.weight.detach().requires_grad_()
    return sum(torch.autograd.grad((conv._conv_forward(i, w, None) * g).sum(), w)[0] for i, g in zip(inputs, errors))


@pytest.mark.parametrize("name", ["ottt_a", "ottt_o"])
def test_ottt_first_layer_raw_takes_the_raw_inputs_gradient_and_trace_stays_the_default(name, batch):
    """first_layer=raw (SpikingJelly's OTTTLIFNode, the OTTT authors' code): the first conv's ∇W is
    Σ_t g[t] ⊗ x[t]; the default is Σ_t g[t] ⊗ â[t] of the raw input; nothing else changes."""
    net = tiny_net(torch.float64)
    x, y = batch
    x_seq = encode(x.to(torch.float64), 4, "static")
    raw, raw_errors = first_conv_grad(name, copy.deepcopy(net), x, y, first_layer="raw")
    traced, traced_errors = first_conv_grad(name, copy.deepcopy(net), x, y)  # the default
    conv, first = net.body[0][0], "body.0.0.weight"
    assert len(raw_errors) == len(traced_errors) == 4
    torch.testing.assert_close(raw[first], weight_grad_of(conv, x_seq, raw_errors), atol=1e-12, rtol=0)
    torch.testing.assert_close(traced[first], weight_grad_of(conv, presynaptic_trace(x_seq, net.body[0][2].neuron.decay),
                                                             traced_errors), atol=1e-12, rtol=0)
    assert not torch.allclose(raw[first], traced[first])  # the rule matters
    assert_grads_equal({n: g for n, g in raw.items() if n != first}, {n: g for n, g in traced.items() if n != first},
                       atol=1e-12)


def test_first_layer_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="method.first_layer must be one of trace, raw"):
        build_method("ottt_a", 4, {"first_layer": "spike"})
