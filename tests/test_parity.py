"""Parity that explains every differing spike: it passes every registered model at every T, input
kind and onnxruntime optimisation level, as an unrolled graph and as a streaming graph driven for T
calls, and fails a graph whose weights, steps or decay differ."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from deploy_helpers import DEFAULT_SHAPE, SHAPES, exact_input, model_and_checkpoint, observed_from
from snnkit.checkpoint import atomic_save, model_from_checkpoint
from snnkit.deploy.costs import topology
from snnkit.deploy.evaluate import check_graph, evaluate
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.graph import TimeUnrolled, deployable
from snnkit.deploy.parity import MODULES, PROBABLE, Bound, gamma, sum_error, verify
from snnkit.deploy.runtime import load_onnx
from snnkit.deploy.writer import check_forward
from snnkit.models import MODELS
from snnkit.spiking import LIF, SpikingNet, spiking_layers

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
BATCH = 3


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Exported files, shared across tests: a file is stateless, so each (model, T, kind) is built
    once and exported once per form. Returns ``get(name, T, kind, form) -> (net, path)``; the net is
    only read."""
    runs: dict[tuple, tuple[SpikingNet, Path]] = {}
    files: dict[tuple, Path] = {}

    def get(name: str, T: int, kind: str, form: str = "unrolled", reset: str = "soft") -> tuple[SpikingNet, Path]:
        if (name, T, kind, reset) not in runs:
            torch.manual_seed(0)
            net, ckpt = model_and_checkpoint(name, exact=False, kind=kind)
            if reset != "soft":
                ckpt["model"]["neuron"]["reset"] = reset
                net = model_from_checkpoint(ckpt)
            ckpt["T"] = T
            run = tmp_path_factory.mktemp(f"{name}-{T}-{kind}-{reset}")
            atomic_save(ckpt, run / "checkpoint.pt")
            runs[name, T, kind, reset] = net, run
        net, run = runs[name, T, kind, reset]
        if (name, T, kind, form, reset) not in files:
            files[name, T, kind, form, reset] = export_checkpoint(run, form=form).path
        return net, files[name, T, kind, form, reset]

    return get


def inputs(name: str, T: int, kind: str, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES.get(name, DEFAULT_SHAPE)
    return torch.randn(BATCH, *shape, generator=g) if kind == "static" else torch.randn(T, BATCH, *shape, generator=g)


def judge(net: SpikingNet, path: Path, T: int, kind: str, x: torch.Tensor, level: str = "all"):
    """The graph at ``path`` checked on ``x`` against its twin."""
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    model = load_onnx(path, ["CPUExecutionProvider"], options)
    twin = deployable(net, T, kind, probes=True)
    labels = torch.zeros(BATCH, dtype=torch.long)
    batch = x if kind == "static" else x.transpose(0, 1)  # the loader's layout: event [B, T, ...]
    return check_graph(model, twin, [(batch, labels)], neurons=1)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", ["static", pytest.param("event", marks=pytest.mark.slow)])
@pytest.mark.parametrize("T", [pytest.param(1, marks=pytest.mark.slow), 4, pytest.param(8, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_passes_parity_at_every_T_input_kind_and_optimisation_level(exports, name, T, kind, level):
    net, path = exports(name, T, kind)
    checked = judge(net, path, T, kind, inputs(name, T, kind), level)
    twin, graph, verdict = checked.twin, checked.graph, checked.verdict
    assert verdict.passed, verdict.first_unexplained.describe()
    assert verdict.spikes_compared == BATCH * T * sum(topology(net, SHAPES.get(name, DEFAULT_SHAPE)).neurons)
    assert (graph.spike_counts.sum(0) > 0).all(), "every layer should fire, or the check is empty"
    np.testing.assert_array_equal(twin.logits.argmax(1), graph.logits.argmax(1))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("reset,form", [("hard", "unrolled"), ("subtract_next", "unrolled"),
                                        ("subtract_next", "streaming")])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_passes_parity_with_the_other_resets(exports, name, reset, form, level):
    """The hard reset, and subtract_next (snnTorch's subtract: its state is the unreset potential)."""
    net, path = exports(name, 4, "static", form, reset=reset)
    assert all(m.neuron.reset == reset for m in net.modules() if isinstance(m, LIF))
    checked = judge(net, path, 4, "static", inputs(name, 4, "static"), level)
    assert checked.verdict.passed, checked.verdict.first_unexplained.describe()
    assert (checked.graph.spike_counts.sum(0) > 0).all(), "every layer should fire, or the check is empty"


@pytest.mark.parametrize("kind", ["static", pytest.param("event", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_passes_parity_as_a_streaming_graph_driven_T_calls(exports, name, kind):
    net, path = exports(name, 4, kind, "streaming")
    checked = judge(net, path, 4, kind, inputs(name, 4, kind))
    assert checked.verdict.passed, checked.verdict.first_unexplained.describe()
    assert checked.verdict.spikes_compared == BATCH * 4 * sum(topology(net, SHAPES.get(name, DEFAULT_SHAPE)).neurons)
    assert checked.graph.step_logits.shape == (4, BATCH, 10)
    # graph.logits is torch's float32 mean over the T steps, this one NumPy's: T − 1 roundings of partial
    # sums ≤ Σ|terms| on each side (dividing by T = 4 is exact), so ≤ T·eps·mean|step logits| apart
    steps = checked.graph.step_logits
    bound = len(steps) * np.finfo(np.float32).eps * np.abs(steps).mean(0)
    assert (np.abs(steps.mean(0) - checked.graph.logits) <= bound).all()
    np.testing.assert_array_equal(checked.twin.logits.argmax(1), checked.graph.logits.argmax(1))


def edited(path: Path, out: Path, edit) -> Path:
    model = onnx.load(path)
    edit(model)
    onnx.save(model, out)
    return out


def weights_of(model: onnx.ModelProto, which: str) -> onnx.TensorProto:
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    node = {"first conv": convs[0], "middle conv": convs[len(convs) // 2],
            "classifier": [n for n in model.graph.node if n.op_type == "Gemm"][-1]}[which]
    return next(i for i in model.graph.initializer if i.name == node.input[1])


def scaled(which: str, factor: float):
    def edit(model: onnx.ModelProto) -> None:
        w = weights_of(model, which)
        w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * np.float32(factor), w.name))
    return edit


def conv_bias_raised(which: int, delta: float, channel: Optional[int] = None):
    """Adds ``delta`` to one channel (or every channel) of the bias of a conv (-1: the middle one)."""
    def edit(model: onnx.ModelProto) -> None:
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        node = convs[len(convs) // 2 if which < 0 else which]
        b = next(i for i in model.graph.initializer if i.name == node.input[2])
        array = onnx.numpy_helper.to_array(b).copy()
        array[slice(None) if channel is None else channel] += np.float32(delta)
        b.CopyFrom(onnx.numpy_helper.from_array(array, b.name))
    return edit


def conv_weights_scaled(which: int, factor: float):
    def edit(model: onnx.ModelProto) -> None:
        node = [n for n in model.graph.node if n.op_type == "Conv"][which]
        w = next(i for i in model.graph.initializer if i.name == node.input[1])
        w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * np.float32(factor), w.name))
    return edit


def one_nan(model: onnx.ModelProto) -> None:
    w = weights_of(model, "middle conv")
    array = onnx.numpy_helper.to_array(w).copy()
    array.flat[0] = np.nan
    w.CopyFrom(onnx.numpy_helper.from_array(array, w.name))


TAMPERS = {"first conv ×1.01": scaled("first conv", 1.01), "middle conv ×1.01": scaled("middle conv", 1.01),
           "classifier ×1.01": scaled("classifier", 1.01), "one NaN weight": one_nan}


@pytest.mark.parametrize("form", ["unrolled", "streaming"])
@pytest.mark.parametrize("tamper", TAMPERS)
@pytest.mark.parametrize("name", MODELS.names())
def test_a_graph_with_altered_weights_fails(exports, tmp_path, name, tamper, form):
    net, path = exports(name, 4, "static", form)
    bad = edited(path, tmp_path / "bad.onnx", TAMPERS[tamper])
    verdict = judge(net, bad, 4, "static", inputs(name, 4, "static")).verdict
    assert not verdict.passed
    expected = {"classifier ×1.01": "logits", "one NaN weight": "weights"}.get(tamper, "membrane")
    assert verdict.first_unexplained.what == expected


@pytest.mark.parametrize("name", MODELS.names())
def test_a_graph_with_another_decay_or_fewer_steps_fails(exports, name):
    net, _ = exports(name, 4, "static")
    slower = copy.deepcopy(net)
    for lif in spiking_layers(slower.body):
        lif.neuron = replace(lif.neuron, decay=0.5)
    x = inputs(name, 4, "static")
    for form in ("unrolled", "streaming"):
        verdict = judge(slower, exports(name, 4, "static", form)[1], 4, "static", x).verdict
        assert not verdict.passed and verdict.first_unexplained.step == 1  # step 0 does not see the decay
    _, short = exports(name, 1, "static")
    verdict = judge(net, short, 4, "static", x).verdict
    assert not verdict.passed
    assert verdict.first_unexplained.describe() == f"the graph runs 1 steps in {net.layer_names()[0]} but claims T = 4"


@pytest.fixture
def at_threshold() -> tuple[TimeUnrolled, TimeUnrolled, torch.Tensor]:
    """(twin, graph, x): digits_convnet where one first-layer neuron's current is exactly V_th = 1
    (it fires, H(0) = 1), and a 'graph' whose bias is one ulp lower there, as another summation
    order may round: that neuron does not fire at step 0, and a later layer's spikes change with it.
    Channel 0 sums nonnegative dyadic terms below 1, so every partial sum is exact and both values
    hold whatever order a kernel adds in."""
    net, _ = model_and_checkpoint("digits_convnet")
    x = exact_input(3, (1, 8, 8)).abs()
    twin = deployable(net, 4, "static", probes=True)
    conv = twin.body.get_submodule("0.0")
    with torch.no_grad():
        conv.weight[0].abs_()
        conv.bias[0] = 0.0
        synapses = twin(x)[2][0, 0].flatten()  # sample 0, channel 0, step 0: exact
        for i in ((synapses > 0) & (synapses <= 0.5)).nonzero().flatten().tolist():
            conv.bias[0] = 1.0 - synapses[i]  # in [0.5, 1): its ulp is 2⁻²⁴
            graph = copy.deepcopy(twin)
            graph.body.get_submodule("0.0").bias[0] -= 2.0 ** -24
            if not torch.equal(twin(x)[1][:, 1:], graph(x)[1][:, 1:]):  # the flip reaches a later layer
                break
        assert twin(x)[2][0, 0].flatten()[i] == 1.0 and graph(x)[3][0, 0].flatten()[i] == 0.0
    return twin, graph, x


def test_a_flip_one_ulp_from_the_threshold_is_explained_and_so_is_its_cascade(at_threshold):
    twin, graph, x = at_threshold
    verdict = verify(twin, x, observed_from(graph, x)).verdict
    assert verdict.passed, verdict.first_unexplained.describe()
    assert verdict.rounding_flips == 1 and verdict.cascade_flips > 0
    assert (verdict.first_explained.layer, verdict.first_explained.step) == ("0.2", 0)


def test_the_verdict_adds_up_over_samples(at_threshold):
    twin, graph, x = at_threshold
    whole = verify(twin, x, observed_from(graph, x)).verdict
    parts = [verify(twin, x[i:i + 1], observed_from(graph, x[i:i + 1])).verdict for i in range(len(x))]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert whole == merged and whole.explained > 0 and parts[1].explained == parts[2].explained == 0


@torch.no_grad()
def test_rounding_bounds_by_hand():
    fc = nn.Linear(2, 1)
    fc.weight.copy_(torch.tensor([[1.0, -2.0]]))
    fc.bias.fill_(0.5)
    y = MODULES[nn.Linear](fc, Bound.exact(torch.tensor([[3.0, 4.0]])))
    assert float(y.value) == -4.5 and float(y.cascade) == 0
    assert float(y.rounding) == pytest.approx(gamma(3) * (3 + 8 + 0.5))  # 2 products + bias, one side
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    conv.weight.fill_(-1.0)
    flips = torch.zeros(1, 1, 3, 3)
    flips[0, 0, 0, 0] = 1.0  # one spike differed in the corner
    y = MODULES[nn.Conv2d](conv, Bound(torch.ones(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), flips))
    # padding is not a synapse: a corner output sums 4 inputs, the centre 9
    assert y.rounding[0, 0, 0, 0] == pytest.approx(gamma(10) * (4 + 1)) and y.rounding[0, 0, 1, 1] == pytest.approx(gamma(10) * 10)
    assert y.cascade[0, 0].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]  # the flip reaches its neighbours


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("form", ["unrolled", "streaming"])
def test_the_trained_digits_model_passes_parity(trained_digits, tmp_path, form, level):
    run = trained_digits()
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    model = load_onnx(export_checkpoint(run, tmp_path / "m.onnx", form=form).path, ["CPUExecutionProvider"], options)
    result = evaluate(run, model=model)
    assert result.parity.passed, result.parity.verdict.first_unexplained.describe()
    assert result.parity.verdict.spikes_compared == 360 * 4 * (32 * 64 + 64 * 64 + 128 * 16)
    assert result.accuracy > 0.8 and result.parity.outputs.prediction_agreement > 0.99


def test_a_long_sum_is_held_to_the_probabilistic_bound():
    """Past λ² terms the bound grows as √n, not n: a 3×3 conv over 64 channels is 577 terms."""
    assert sum_error(10) == gamma(10)
    assert sum_error(577) == pytest.approx(PROBABLE * 577 ** 0.5 * 2.0 ** -24) and sum_error(577) < gamma(577) / 4


@pytest.mark.parametrize("name", ["resnet19", "vgg13"])
def test_one_bias_channel_raised_by_1e_4_fails(exports, tmp_path, name):
    """4,076 (resnet19) and 753 (vgg13) spikes moved over 8 samples and the worst-case bound passed it."""
    net, path = exports(name, 4, "static")
    bad = edited(path, tmp_path / "bad.onnx", conv_bias_raised(-1, 1e-4, channel=0))
    verdict = judge(net, bad, 4, "static", inputs(name, 4, "static")).verdict
    assert not verdict.passed and verdict.first_unexplained.what == "membrane"


TRAINED_CORRUPTIONS = {"third conv bias +1e-4": conv_bias_raised(2, 1e-4), "third conv bias +3e-5": conv_bias_raised(2, 3e-5),
                       "third conv weights ×(1+3e-5)": conv_weights_scaled(2, 1 + 3e-5)}


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("corruption", TRAINED_CORRUPTIONS)
def test_a_small_corruption_of_the_trained_digits_graph_fails(trained_digits, tmp_path, corruption, level):
    """A few dozen spikes over the test set move; each was called rounding or cascade by a bound
    two orders looser than honest rounding."""
    run = trained_digits()
    bad = edited(export_checkpoint(run, tmp_path / "m.onnx").path, tmp_path / "bad.onnx", TRAINED_CORRUPTIONS[corruption])
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    verdict = evaluate(run, model=load_onnx(bad, ["CPUExecutionProvider"], options)).parity.verdict
    assert not verdict.passed and verdict.first_unexplained.layer == "3.2"


@pytest.mark.parametrize("name", ["digits_convnet", "resnet18"])
def test_the_graph_has_at_most_half_the_nodes_it_had(exports, name):
    """334 (digits) and 1674 (resnet18) nodes at T = 4 before onnxslim and the once-per-sample stem."""
    _, path = exports(name, 4, "static")
    assert len(onnx.load(path).graph.node) <= {"digits_convnet": 334, "resnet18": 1674}[name] // 2


def test_the_check_after_export_fails_on_an_altered_file(exports, tmp_path):
    net, path = exports("digits_convnet", 4, "static")
    x = inputs("digits_convnet", 4, "static")
    graph = deployable(net, 4, "static", probes=True)
    for tamper in ("middle conv ×1.01", "one NaN weight"):
        with pytest.raises(RuntimeError, match="onnxruntime disagrees with PyTorch right after export"):
            check_forward(edited(path, tmp_path / "bad.onnx", TAMPERS[tamper]), graph, x)
