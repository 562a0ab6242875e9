"""snnkit.conversion: a SpikingJelly or snnTorch model as a snnkit network, checked against the
original over SpikingJelly's zoo entries and every neuron kind snnkit maps.

Spikes are compared step by step, layer by layer. A spike may differ only where the two float
computations of the same membrane (SpikingJelly's ``V + (X − V)/τ`` against snnkit's ``λ·v + x``)
can round to opposite sides of the threshold: at the first such step the potential must be within
a few units of rounding of the threshold (the bound counts each rounding of both formulas), and
the layers after it are not compared (their inputs then differ). With float64 and random inputs
this practically never happens; the judge makes the test independent of it.
"""
import copy
import math
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import convert_models as cm
from snntorch_float64 import in_float64
from snnkit.conversion import convert, to_original_state_dict
from snnkit.conversion.body import ORIGINAL_NAMES, original_key
from snnkit.errors import ConversionError
from snnkit.methods import build_method
from snnkit.neuron import lif_step
from snnkit.spiking import Mode, neuron_mode

T, B = 3, 2
ZOO = {  # builder, one sample's shape: the smallest input each entry takes
    "spiking_resnet18": (cm.spiking_resnet18, (3, 16, 16)),
    "sew_resnet18": (cm.sew_resnet18, (3, 16, 16)),
    "spiking_vgg11_bn": (cm.spiking_vgg11_bn, (3, 32, 32)),
    **{f"parametric_lif_net.{net}": (partial(cm.plif_net, net=net), shape) for net, shape in cm.PLIF_NETS.items()},
}
KINDS = list(cm.NEURONS)
SOME_KINDS = ("lif", "lif_soft_detach_atan", "if_hard_atan")
PLIF_OTHERS = [name for name in ZOO if name.startswith("parametric_lif_net.")][1:]
# the ResNets and VGG with three kinds, Fashion-MNIST's network with every kind, each other
# parametric_lif_net network with a kind of its own
CASES = ([(model, kind) for model in ("spiking_resnet18", "sew_resnet18", "spiking_vgg11_bn") for kind in SOME_KINDS]
         + [("parametric_lif_net.FashionMNISTNet", kind) for kind in KINDS]
         + [(model, KINDS[i % len(KINDS)]) for i, model in enumerate(PLIF_OTHERS)])
FOREIGN_NEURONS = (neuron.LIFNode, neuron.IFNode, snn.Leaky)


def build(model: str, kind: str, dtype=torch.float64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    make, shape = ZOO[model]
    torch.manual_seed(0)
    original = make(cm.NEURONS[kind]).to(dtype)
    x = torch.rand(T, B, *shape, dtype=dtype) * 2
    return original, x, torch.tensor([1, 7])


class Recorder(Mode):
    """The reference LIF loop (Heaviside), keeping each step's (x_t, v_{t−1}, u_t, s_t)."""

    def __init__(self, steps: int):
        super().__init__()
        self.T, self.seen = steps, []

    def __call__(self, lif, x):
        v, spikes = torch.zeros_like(x[: x.shape[0] // self.T]), []
        for x_t in x.unflatten(0, (self.T, -1)):
            s, v_next, u = lif_step(v, x_t, lif.neuron)
            self.seen.append((x_t, v, u, s))
            v = v_next
            spikes.append(s)
        s_seq = torch.stack(spikes)
        self.count(s_seq, self.T)
        return s_seq.flatten(0, 1)


def foreign_spikes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The original's logits [T, B, K] and each neuron layer's spikes [T, B, ...], by path:
    SpikingJelly in multi-step mode, snnTorch one step per call."""
    out: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, path=path: out.setdefault(path, []).append(o))
             for path, m in model.named_modules() if isinstance(m, FOREIGN_NEURONS)]
    try:
        if any(isinstance(m, snn.Leaky) for m in model.modules()):
            for m in model.modules():
                if isinstance(m, snn.Leaky):
                    m.mem = torch.zeros(0)
            logits = torch.stack([model(x_t) for x_t in x])
            return logits, {p: torch.stack(s) for p, s in out.items()}
        functional.set_step_mode(model, "m")
        functional.reset_net(model)
        logits = model(x)
        return logits, {p: s[0] for p, s in out.items()}
    finally:
        for h in hooks:
            h.remove()


def readout_bound(readout: nn.Linear, p: torch.Tensor, pooled: int) -> torch.Tensor:
    """How far two float computations of the readout ``W·p + b`` from the same spikes can differ,
    where each entry of ``p`` averages ``pooled`` spikes (1: no pool). Each computation is within
    γ_pooled + γ_{n+1} ≈ (pooled + n + 1)·u of the exact value, relative to |W|·|p| + |b| (n the
    fan-in, u = eps/2), in whatever order it sums; two of them differ by at most twice that."""
    eps = torch.finfo(p.dtype).eps
    return (pooled + readout.in_features + 1) * eps * (p.abs() @ readout.weight.abs().T + readout.bias.abs())


def assert_same_spikes(original: nn.Module, net, x: torch.Tensor) -> None:
    logits_ref, spikes_ref = foreign_spikes(original, x)
    readouts = []
    hooks = [m.register_forward_hook(lambda m, i, o: readouts.append((m, i[0], o)))
             for m in net.body.modules() if isinstance(m, nn.Linear)]
    try:
        with neuron_mode(net.body, lambda _: Recorder(x.shape[0])) as modes:
            logits = net.body(x.flatten(0, 1)).unflatten(0, (x.shape[0], -1))
    finally:
        for h in hooks:
            h.remove()
    eps = torch.finfo(x.dtype).eps
    fired = 0.0
    for name, lif, mode in zip(net.layer_names(), [m for m in net.body.modules() if hasattr(m, "neuron")], modes):
        p = lif.neuron
        for t, (x_t, v, u, s) in enumerate(mode.seen):
            differ = s != spikes_ref[name][t]
            if differ.any():  # the first flip: it must be rounding at the threshold, and what follows differs
                bound = 8 * eps * (p.decay * v.abs() + x_t.abs() + p.v_threshold)
                assert bool(((u - p.v_threshold).abs() <= bound)[differ].all()), \
                    f"{name} step {t}: a spike differs away from the threshold"
                return
            fired += float(s.sum())
    assert fired > 0, "the test input made no spike"
    votes = [m.voting_size for m in original.modules() if isinstance(m, layer.VotingLayer)]
    last_spikes = torch.stack([s for _, _, _, s in modes[-1].seen])
    if last_spikes.shape == logits.shape and torch.equal(last_spikes, logits):  # a network that ends in a LIF
        assert torch.equal(logits, logits_ref), "same spikes: the logits, spikes themselves, must be the same"
        return
    if not votes:  # the last LIF, then at most a pool and a flatten, then the readout gives the logits
        readout, p, out = readouts[-1]
        assert torch.equal(out.unflatten(0, logits.shape[:2]), logits), "the last Linear must give the logits"
        pooled = modes[-1].seen[-1][3][0].numel() // readout.in_features
        bound = readout_bound(readout, p, pooled).unflatten(0, logits.shape[:2])
        assert bool(((logits - logits_ref).abs() <= bound).all()), "same spikes: the logits must agree to rounding"
        return
    # a VotingLayer averages groups of `size` spikes by dividing their sum; snnkit's fixed readout
    # sums them times the rounded 1/size: `size` roundings of non-negative terms and one of the weight
    bound = (votes[-1] + 1) * eps * logits_ref.abs()
    assert bool(((logits - logits_ref).abs() <= bound).all()), "same spikes: the votes must agree to rounding"


@pytest.mark.parametrize("model,kind", CASES)
def test_spikes_equal_the_original_spike_for_spike(model, kind):
    original, x, _ = build(model, kind)
    net = convert(original)
    with torch.no_grad():
        assert_same_spikes(original, net, x)


def snnkit_grads(net, run, x, y) -> dict[str, torch.Tensor]:
    logits_seq, _ = run(x)
    F.cross_entropy(logits_seq.mean(0), y).backward()
    names = getattr(net.body, ORIGINAL_NAMES)
    return {original_key(k, names): p.grad for k, p in net.body.named_parameters() if p.requires_grad}


def foreign_grads(original, x, y) -> dict[str, torch.Tensor]:
    logits, _ = foreign_spikes(original, x)
    F.cross_entropy(logits.mean(0), y).backward()
    return {k: p.grad for k, p in original.named_parameters()}


def assert_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Cosine and norm ratio within 1e-9 of 1 per parameter. The gradients are float64 and differ by
    sums taken in another order and the two membrane formulas' rounding: ~n·2⁻⁵³ relative for the
    n < 10⁵ terms of an entry, ≤ 1e-11, so 1e-9 leaves 100× for cancellation. A gradient that is 0
    in real arithmetic (a conv bias before a train-mode BatchNorm, a layer behind silent neurons) is
    rounding noise on both sides: both must then be below a thousand units of rounding of the
    largest gradient, and their directions are not compared."""
    assert a.keys() == b.keys()
    assert all(g.dtype == torch.float64 for g in [*a.values(), *b.values()]), "compare float64 gradients"
    tol = 1e-9
    zero = 1e3 * max(torch.finfo(g.dtype).eps * float(g.norm()) for g in b.values())
    for k in a:
        if float(b[k].norm()) <= zero:
            assert float(a[k].norm()) <= zero, k
            continue
        cos = float(F.cosine_similarity(a[k].flatten(), b[k].flatten(), dim=0))
        assert cos >= 1 - tol, f"{k}: cosine {cos}"
        assert math.isclose(float(a[k].norm()), float(b[k].norm()), rel_tol=tol), k


@pytest.mark.parametrize("model,kind", CASES)
def test_bptt_gradients_equal_the_originals(model, kind):
    original, x, y = build(model, kind)
    net = convert(original)
    assert_cosine(snnkit_grads(net, net.run_multistep, x, y), foreign_grads(original, x, y))


def assert_rate_m_at_T1_is_bptt(original: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    grads = {}
    x = x.double()  # snnkit against itself: float64 whatever the original's precision
    for method in ("bptt", "rate_m"):
        net = convert(original).double()
        options = {"compile": "off"} if method == "rate_m" else {}
        build_method(method, 1, options).train_step(net, x[:1], y, lambda: None)
        grads[method] = {k: p.grad for k, p in net.named_parameters() if p.requires_grad}
    assert_cosine(grads["rate_m"], grads["bptt"])


@pytest.mark.parametrize("model,kind", CASES)
def test_rate_m_at_T1_equals_bptt(model, kind):
    original, x, y = build(model, kind)
    assert_rate_m_at_T1_is_bptt(original, x, y)


# β (1: no leak), the surrogate, the reset (zero: snnkit's hard; subtract: its subtract_next)
SNNTORCH = [(0.5, "atan", 2.0, "zero"), (0.9, "sigmoid", 4.0, "zero"), (1.0, "atan", 3.0, "zero"),
            (0.5, "atan", 2.0, "subtract"), (0.9, "sigmoid", 4.0, "subtract"), (1.0, "atan", 3.0, "subtract")]


def snntorch_build(beta: float, surrogate_fn: str, sharpness: float, reset: str
                   ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return (cm.snntorch_convnet(beta, reset, surrogate_fn=surrogate_fn, sharpness=sharpness),
            torch.rand(T, B, 3, 16, 16) * 2, torch.tensor([1, 7]))


@pytest.mark.parametrize("beta,surrogate_fn,sharpness,reset", SNNTORCH)
def test_snntorch_leaky_convnet(beta, surrogate_fn, sharpness, reset):
    """snnTorch fires at U > V_th: float32 potentials, where snnkit's threshold is the next float32.
    Its BN sees one step per call: spikes are compared in eval mode, and the gradients with snnkit's
    one-step layout, in float64 (:func:`float64_pair`)."""
    original, x, y = snntorch_build(beta, surrogate_fn, sharpness, reset)
    net = convert(original)
    with torch.no_grad():
        assert_same_spikes(original.eval(), net.eval(), x)
    twin, net = float64_pair(original.train(), net.train())
    assert_cosine(snnkit_grads(net, net.run_singlestep, x.double(), y), foreign_grads(twin, x.double(), y))
    assert_rate_m_at_T1_is_bptt(original, x, y)


def float64_pair(original: nn.Module, net) -> tuple[nn.Module, object]:
    """A float64 copy of the snnTorch original, and its conversion changed in place to float64, so
    that their gradients are judged by the float64 rule: snnTorch with its surrogates keeping the
    dtype (:mod:`snntorch_float64`), snnkit firing at U ≥ V_th. The next float32 above V_th that
    conversion gives makes U ≥ V_th⁺ the same test as U > V_th in float32 (checked above); in
    float64 the two differ only at equality."""
    for lif in (m for m in net.body.modules() if hasattr(m, "neuron")):
        below = float(np.nextafter(np.float32(lif.neuron.v_threshold), np.float32(-math.inf)))
        lif.neuron = replace(lif.neuron, v_threshold=below)
    return in_float64(copy.deepcopy(original)), net.double()


ROUND_TRIPS = {  # a model of each family, its neuron kind, how to build it afresh, its input
    "spiking_resnet18": ("lif", lambda: cm.spiking_resnet18(cm.NEURONS["lif"])),
    "sew_resnet18": ("lif_soft_detach_atan", lambda: cm.sew_resnet18(cm.NEURONS["lif_soft_detach_atan"])),
    "spiking_vgg11_bn": ("if_hard_atan", lambda: cm.spiking_vgg11_bn(cm.NEURONS["if_hard_atan"])),
    "parametric_lif_net.CIFAR10Net": ("lif_reset_minus_half",
                                      lambda: cm.plif_net(cm.NEURONS["lif_reset_minus_half"], "CIFAR10Net")),
}


def trained_and_fresh(model: str) -> tuple[nn.Module, nn.Module, object, torch.Tensor]:
    """The original, a rate_m step of its converted network (weights and BN statistics move on) and
    a freshly built original of the same kind."""
    if model.startswith("snntorch_"):
        reset = model.removeprefix("snntorch_")
        original, x, y = snntorch_build(0.5, "atan", 2.0, reset)
        fresh = cm.snntorch_convnet(reset_mechanism=reset)
    else:
        kind, make = ROUND_TRIPS[model]
        original, x, y = build(model, kind)
        fresh = make().to(torch.float64)
    net = convert(original)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    build_method("rate_m", T, {"compile": "off"}).train_step(net, x, y, optimizer.step)
    return original, fresh, net, x


@pytest.mark.parametrize("model", [*ROUND_TRIPS, "snntorch_zero", "snntorch_subtract"])
def test_round_trip_reloads_into_the_original_and_reproduces_it(model):
    original, fresh, net, x = trained_and_fresh(model)
    fresh.load_state_dict(to_original_state_dict(net, fresh), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                   to_original_state_dict(net, original).values()))
    moved = [k for k, v in original.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])]
    assert moved, "the training step moved no weight: the round trip would not be tested"
    train = not model.startswith("snntorch_")  # batch statistics; snnTorch's BN sees one step per call: its running ones
    with torch.no_grad():
        assert_same_spikes(fresh.train(train), net.train(train), x)


def test_the_original_is_untouched():
    original, x, _ = build("spiking_resnet18", "lif")
    before = {k: v.clone() for k, v in original.state_dict().items()}
    modes = {m.step_mode for m in original.modules() if hasattr(m, "step_mode")}
    convert(original)
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert {m.step_mode for m in original.modules() if hasattr(m, "step_mode")} == modes


def test_neurons_map_with_their_scale():
    """decay_input=True divides the input by τ: snnkit's potential is τ times SpikingJelly's, so the
    threshold is τ·V_th and the surrogate's α is α/τ; a hard reset is measured from V_reset."""
    net = convert(nn.Sequential(nn.Linear(2, 2), cm.NEURONS["lif_reset_minus_half"](),
                                nn.Linear(2, 2), cm.NEURONS["if_soft"](), nn.Linear(2, 2),
                                cm.NEURONS["lif_no_decay_input"]()))
    lifs = [m.neuron for m in net.body.modules() if hasattr(m, "neuron")]
    assert [(p.decay, p.v_threshold, p.reset, p.v_reset, p.alpha, p.surrogate) for p in lifs] == [
        (0.75, 4 * (0.75 + 0.5), "hard", 0.0, 2.0 / 4, "sigmoid"),
        (1.0, 1.0, "soft", 0.0, 4.0, "sigmoid"),
        (1 - 1 / 1.25, 1.0, "soft", 0.0, 4.0, "sigmoid")]
    assert [p.detach_reset for p in lifs] == [False, False, True]


REFUSALS = {
    "sew_iand": "layer1.0 (BasicBlock) multiplies, subtracts or divides activations (as SEW's AND and IAND do), "
                "which is not exact in the rate pass and has no parity bound in export; use additions (SEW's "
                "cnf='ADD')",
    "sew_and": "layer1.0 (BasicBlock) multiplies, subtracts or divides activations",
    "attention": "2 (SpikeAttention) calls transpose, which snnkit does not convert exactly",
    "plif": "conv_fc.2 (ParametricLIFNode) learns its time constant (τ = 1/sigmoid(w)), and snnkit's LIF has a "
            "fixed decay that rate backprop does not differentiate; build the model with LIFNode(tau=...)",
    "dropout": "conv_fc.9 (Dropout) keeps one dropout mask for all T steps, a state snnkit's layers do not have; "
               "set its p to 0 before converting",
    "snntorch_no_reset": "2 (Leaky) resets by 'none', which snnkit does not map; use reset_mechanism='subtract' "
                         "or 'zero'",
    "snntorch_learn_beta": "2 (Leaky) learns its beta, which snnkit's LIF holds fixed; build it with learn_beta=False",
    "snntorch_synaptic": "2 (Synaptic) keeps a state over time steps and is not a neuron snnkit converts exactly",
    "ms_resnet18": "the forward of the model (MSResNet) cannot be traced with torch.fx (TraceError: symbolically "
                   "traced variables cannot be used as inputs to control flow)",
    "unknown_neuron": "2 (QIFNode) keeps a state over time steps and is not a neuron snnkit converts exactly",
    "stateful_layer": "3 (SynapseFilter) keeps a state over time steps and is not a neuron snnkit converts exactly",
    "ann2snn_module": "1 (VoltageScaler) is not a layer snnkit converts exactly",
    "other_surrogate": "2 (LIFNode) uses the surrogate PiecewiseQuadratic; snnkit maps Sigmoid and ATan",
}


@pytest.mark.parametrize("name", REFUSALS)
def test_refusals_name_the_module_before_anything_runs(name):
    """One sentence naming the module's path and type; no layer ever sees a tensor (torch.fx traces
    with proxies)."""
    model = getattr(cm, name)()
    ran = []
    for m in model.modules():
        m.register_forward_pre_hook(lambda m, args: ran.extend(a for a in args if isinstance(a, torch.Tensor)))
    with pytest.raises(ConversionError) as e:
        convert(model)
    assert str(e.value).startswith(REFUSALS[name]) and "\n" not in str(e.value)
    assert ran == []
