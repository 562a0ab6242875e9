"""Operation counts read off the graph: every spike-fed layer of every registered model equals
SpikingJelly's synaptic-op counter; padding, stride, pooling, SEW residual additions and
pre-activation blocks by hand; an analog layer costs MACs as often as the graph computes it."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from deploy_helpers import T, exact_input, model_and_checkpoint
from snnkit.deploy.costs import ANALOG, COUNTS, SPIKES, adaptive_sum_pool, topology
from snnkit.deploy.efficiency import efficiency_report
from snnkit.deploy.graph import deployable
from snnkit.deploy.report import chart
from snnkit.errors import SnnkitError
from snnkit.models import MODELS
from snnkit.models.imagenet_resnet import PreActBlock, SEWBlock
from snnkit.neuron import NeuronParams
from snnkit.spiking import LIF, SpikingNet

NEURON = NeuronParams()


def run(body: nn.Module, x: torch.Tensor, computed_once=()):
    """Count ``body`` on the static input ``x`` [B, ...] at T steps -> (topology, report, spikes of
    each LIF layer [T·B, ...] by name)."""
    net = SpikingNet(body).eval()
    topo = topology(net, tuple(x.shape[1:]))
    spikes = {}
    hooks = [m.register_forward_hook(lambda m, i, out, n=n: spikes.__setitem__(n, out))
             for n, m in body.named_modules() if isinstance(m, LIF)]
    with torch.no_grad(), topo.tally(body, T) as tally:
        net(x.unsqueeze(0).repeat(T, *(1,) * x.dim()))
    for h in hooks:
        h.remove()
    return topo, efficiency_report(topo, tally, computed_once, "test", "hand"), spikes


def layer(report: dict, name: str) -> dict:
    return next(r for r in report["synaptic_layers"] if r["name"] == name)


def fans(n: int, kernel: int = 3, stride: int = 1, pad: int = 1) -> torch.Tensor:
    """Outputs of a 1-D convolution reading input position i, by enumerating its windows."""
    out = (n + 2 * pad - kernel) // stride + 1
    return torch.tensor([sum(o * stride - pad <= i < o * stride - pad + kernel for o in range(out))
                         for i in range(n)], dtype=torch.float64)


def by_hand(spikes: torch.Tensor, fan_h: torch.Tensor, fan_w: torch.Tensor, cout: int, batch: int) -> float:
    """Σ over steps, samples, channels and positions of spikes × synapses they drive, per sample."""
    return float((spikes.double() * torch.outer(fan_h, fan_w)).sum()) * cout / batch


def firing_at(positions: list[tuple[int, int]], size: int = 4) -> torch.Tensor:
    """One sample [1, 1, size, size] whose current 1 = V_th fires a leading LIF at ``positions`` every step."""
    x = torch.zeros(1, 1, size, size)
    for p in positions:
        x[0, 0][p] = 1.0
    return x


@pytest.mark.parametrize("name", MODELS.names())
def test_spike_fed_layers_equal_spikingjelly_synop_counter(name):
    """SynOpCounter counts a conv/matmul whose input is binary: the synapses each spike drives,
    padding excluded. Every layer we find fed by spikes must agree exactly; an analog-fed one is
    not binary there, so SpikingJelly counts nothing."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    net, ckpt = model_and_checkpoint(name)
    shape, batch = tuple(ckpt["data"]["input_shape"]), 3
    topo = topology(net, shape)
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]), topo.tally(net.body, T) as tally:
        net(exact_input(batch, shape).unsqueeze(0).repeat(T, 1, 1, 1, 1))
    theirs = {scope.removeprefix("SpikingNet.body."): sum(ops.values()) for scope, ops in counter.get_counts().items()}
    ours = topo.accumulates(tally)
    for s in topo.synaptic:
        if s.fed_by == SPIKES:
            assert ours[s.name] * batch == theirs[s.name] > 0, s.label
        elif s.fed_by == ANALOG:
            assert theirs.get(s.name, 0) == 0, s.label


def test_padding_excludes_missing_synapses():
    """3×3 conv, padding 1, 2 output channels on 4×4: a corner spike drives 4 positions × 2
    channels, an edge spike 6 × 2, an interior one 9 × 2, at each of the T steps."""
    body = nn.Sequential(LIF(NEURON), nn.Conv2d(1, 2, 3, padding=1))
    _, report, _ = run(body, firing_at([(0, 0), (0, 2), (1, 1)]))
    conv = layer(report, "1")
    assert (conv["fed_by"], conv["sources"]) == (SPIKES, ("lif1 (0)",))
    assert conv["acs_per_sample"] == T * 2 * (4 + 6 + 9)
    assert conv["ann_macs"] == 2 * 10 * 10  # real synapses: per axis 2 + 3 + 3 + 2 outputs read each input


def test_stride_counts_the_windows_a_position_falls_in():
    """3×3 conv, stride 2, padding 1 on 4×4 -> 2×2: rows 0..3 fall in 1, 2, 1, 1 windows."""
    assert fans(4, stride=2).tolist() == [1, 2, 1, 1]
    body = nn.Sequential(LIF(NEURON), nn.Conv2d(1, 3, 3, stride=2, padding=1))
    _, report, _ = run(body, firing_at([(0, 0), (1, 1), (3, 3), (1, 2)]))
    assert layer(report, "1")["acs_per_sample"] == T * 3 * (1 + 4 + 1 + 2)


@pytest.mark.parametrize("pool, fed_by, source, units", [
    (nn.AvgPool2d(2), COUNTS, "lif1 (0)", 2 + 1),  # a count of 2 costs twice the fan-out, not a quarter
    (nn.MaxPool2d(2), SPIKES, "maxpool1 (1)", 1 + 1),  # max pooling selects: one spike per window
], ids=["average", "max"])
def test_pooling_into_a_conv(pool, fed_by, source, units):
    """Spikes at (0, 0) and (1, 1) share the first 2×2 window, (3, 2) is alone in another; each
    pooled position drives 4 positions × 2 channels of the 3×3 conv on the 2×2 map."""
    body = nn.Sequential(LIF(NEURON), pool, nn.Conv2d(1, 2, 3, padding=1))
    _, report, _ = run(body, firing_at([(0, 0), (1, 1), (3, 2)]))
    conv = layer(report, "2")
    assert (conv["fed_by"], conv["sources"]) == (fed_by, (source,))
    assert conv["acs_per_sample"] == T * units * 4 * 2


def test_global_average_pooling_into_the_classifier():
    body = nn.Sequential(LIF(NEURON), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 5))
    _, report, _ = run(body, firing_at([(0, 0), (1, 1), (3, 2)]))
    assert layer(report, "3")["acs_per_sample"] == T * 3 * 5


def test_adaptive_sum_pool_sums_uneven_windows():
    x = torch.randn(2, 3, 5, 7)
    pool = nn.AdaptiveAvgPool2d((3, 2))
    rows, cols = [(0, 2), (1, 4), (3, 5)], [(0, 4), (3, 7)]  # PyTorch's windows: ⌊i·n/o⌋ .. ⌈(i+1)·n/o⌉
    expected = torch.stack([torch.stack([x[..., r0:r1, c0:c1].sum((-2, -1)) for c0, c1 in cols], -1)
                            for r0, r1 in rows], -2)
    torch.testing.assert_close(adaptive_sum_pool(pool, x), expected)


def test_sew_residual_addition_counts_both_spike_trains():
    """LIF -> SEW block (identity shortcut) -> conv: the conv reads s_in + s_residual (0, 1 or 2)."""
    torch.manual_seed(0)
    body = nn.Sequential(LIF(NEURON), SEWBlock(2, 2, 1, NEURON), nn.Conv2d(2, 3, 3, padding=1))
    with torch.no_grad():
        for m in body[1].modules():
            if isinstance(m, nn.Conv2d):
                m.weight.uniform_(0.0, 0.2)  # excitatory, so that both trains fire, together and alone
    batch = 5
    topo, report, spikes = run(body, 2 * torch.rand(batch, 2, 6, 6))
    conv = layer(report, "2")
    assert (conv["fed_by"], conv["sources"]) == (COUNTS, ("lif1 (0)", "lif3 (1.residual.1.2)"))
    total = spikes["0"] + spikes["1.residual.1.2"]
    assert (total == 2).any() and (total == 1).any()
    # float64: integer counts summed exactly, a few roundings on each side (≲ 1e-15), far below 1e-12
    assert conv["acs_per_sample"] == pytest.approx(by_hand(total, fans(6), fans(6), 3, batch), rel=1e-12)
    assert layer(report, "1.residual.0.0")["acs_per_sample"] == pytest.approx(
        by_hand(spikes["0"], fans(6), fans(6), 2, batch), rel=1e-12)


def test_preactivation_block_spike_fed_convs_and_analog_stream():
    """conv stem -> PreActBlock(2 -> 4, stride 2) -> flatten -> linear. The residual convs read
    spikes; the 1×1 shortcut reads the analog stem output and the classifier the analog sum, so
    both cost one MAC per synapse at every step."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), PreActBlock(2, 4, 2, NEURON), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 3))
    batch = 4
    topo, report, spikes = run(body, 3 * torch.rand(batch, 1, 4, 4))
    fed = {s.name: s.fed_by for s in topo.synaptic}
    assert fed == {"0": ANALOG, "1.residual.1": SPIKES, "1.residual.4": SPIKES, "1.shortcut.0": ANALOG, "3": ANALOG}
    # float64: integer counts summed exactly, a few roundings on each side (≲ 1e-15), far below 1e-12
    assert layer(report, "1.residual.1")["acs_per_sample"] == pytest.approx(
        by_hand(spikes["1.residual.0"], fans(4, stride=2), fans(4, stride=2), 4, batch), rel=1e-12)
    assert layer(report, "1.residual.4")["acs_per_sample"] == pytest.approx(
        by_hand(spikes["1.residual.3"], fans(2), fans(2), 4, batch), rel=1e-12)
    analog = [layer(report, n) for n in ("0", "1.shortcut.0", "3")]
    assert [(r["macs_per_sample"], r["ann_macs"]) for r in analog] == [(T * 200, 200), (T * 32, 32), (T * 48, 48)]
    e_ac, e_mac = 0.9, 4.6
    energy = report["energy"]["fp32"]
    # float64 sums of two products: ≲ 1e-15 relative, far below approx's 1e-6
    assert energy["snn_pj"] == pytest.approx(e_ac * report["acs_per_sample"] + e_mac * report["macs_per_sample"])
    assert energy["ann_pj"] == pytest.approx(e_mac * report["ann_macs_per_sample"])
    assert report["neuron_updates_per_sample"] == T * (2 * 4 * 4 + 4 * 2 * 2)


def test_an_analog_layer_the_graph_computes_once_costs_its_macs_once():
    body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), LIF(NEURON), nn.Flatten(), nn.Linear(32, 3))
    x = torch.rand(2, 1, 4, 4)
    _, every_step, _ = run(body, x)
    _, once, _ = run(body, x, computed_once=("0",))
    assert (layer(every_step, "0")["runs_per_sample"], layer(once, "0")["runs_per_sample"]) == (T, 1)
    assert layer(every_step, "0")["macs_per_sample"] == T * layer(once, "0")["macs_per_sample"] == T * 200
    assert layer(once, "3")["acs_per_sample"] == layer(every_step, "3")["acs_per_sample"]


@pytest.mark.parametrize("kind", ["static", "event"])
@pytest.mark.parametrize("name", MODELS.names())
def test_the_graph_runs_each_analog_layer_as_often_as_it_says(name, kind):
    """``computed_once`` is what the counting trusts: every analog-fed layer of the deployable
    graph must process B rows if it is listed there and T·B rows otherwise."""
    net, ckpt = model_and_checkpoint(name)
    shape, batch = tuple(ckpt["data"]["input_shape"]), 2
    graph = deployable(net, T, kind)
    analog = [s.name for s in topology(net, shape).synaptic if s.fed_by == ANALOG]
    rows: dict[str, int] = {}
    hooks = [graph.body.get_submodule(n).register_forward_hook(
        lambda m, i, out, n=n: rows.__setitem__(n, rows.get(n, 0) + out.shape[0])) for n in analog]
    x = exact_input(batch, shape)
    with torch.no_grad():
        graph(x if kind == "static" else x.unsqueeze(0).repeat(T, 1, 1, 1, 1))
    for h in hooks:
        h.remove()
    assert rows == {n: batch * (1 if n in graph.computed_once else T) for n in analog}


def test_an_unknown_operation_on_spikes_is_charged_as_analog_and_logged(caplog):
    body = nn.Sequential(LIF(NEURON), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
    with caplog.at_level(logging.WARNING, logger="snnkit.deploy"):
        topo = topology(SpikingNet(body), (1, 4, 4))
    assert [s.fed_by for s in topo.synaptic] == [ANALOG]
    assert caplog.messages == ["_1: snnkit does not know how ReLU acts on spikes; the values after it are treated "
                               "as analog (charged multiply-accumulates)"]


def test_a_spiking_layer_called_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lif, self.fc = LIF(NEURON), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.lif(self.lif(x)))

    with pytest.raises(SnnkitError, match=r"^module lif runs twice in one step; operations are counted per "
                                          r"module, so give each call its own module$"):
        topology(SpikingNet(Twice()), (4,))


def test_the_picture_keeps_accumulates_and_macs_apart():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), PreActBlock(2, 4, 2, NEURON), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 3))
    _, report, _ = run(body, 3 * torch.rand(4, 1, 4, 4))
    fig = chart(report)
    rate_ax, ac_ax, energy_ax = fig.axes
    assert fig._suptitle.get_text().startswith("test on hand, PyTorch checkpoint, T = 4: energy per sample SNN ")
    assert [t.get_text() for t in ac_ax.get_yticklabels()] == [r["label"] for r in report["synaptic_layers"]]
    widths = [p.get_width() for p in ac_ax.patches]
    assert widths == [r["acs_per_sample"] for r in report["synaptic_layers"]]
    assert [w for w, r in zip(widths, report["synaptic_layers"]) if r["fed_by"] == ANALOG] == [0.0, 0.0, 0.0]
    assert ac_ax.get_xlabel() == "accumulates per sample" and energy_ax.get_xscale() == "log"
    snn, ann = (np.asarray(c.get_offsets())[:, 0] for c in energy_ax.collections[1:])
    # the plotted float64 numbers, or one product of them (≲ 1e-16 relative), far below assert_allclose's 1e-7
    np.testing.assert_allclose(snn, [r["energy_pj"]["fp32"] for r in report["synaptic_layers"]])
    np.testing.assert_allclose(ann, [4.6 * r["ann_macs"] for r in report["synaptic_layers"]])


def test_the_int8_graphs_picture_says_so_prices_int8_and_shows_both_points_of_every_row():
    """An analog-fed layer computed once costs the SNN what it costs the ANN: both points stay visible."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), LIF(NEURON), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    _, report, _ = run(body, 3 * torch.rand(4, 1, 4, 4))
    fig = chart(report, "int8")
    energy_ax = fig.axes[2]
    assert fig._suptitle.get_text().startswith("test on hand, int8 graph, T = 4: energy per sample SNN ")
    assert "int8, 45 nm" in energy_ax.get_xlabel()
    snn, ann = (np.asarray(c.get_offsets()) for c in energy_ax.collections[1:])
    # the plotted float64 numbers, or one product of them (≲ 1e-16 relative), far below assert_allclose's 1e-7
    np.testing.assert_allclose(snn[:, 0], [r["energy_pj"]["int8"] for r in report["synaptic_layers"]])
    np.testing.assert_allclose(ann[:, 0], [0.23 * r["ann_macs"] for r in report["synaptic_layers"]])
    assert (snn[:, 1] < ann[:, 1]).all()  # the SNN point above, the ANN point below, on every row
    rows = report["synaptic_layers"]
    kept = chart(report, "int8", (rows[0]["name"],))  # the analog-fed layer left in float32: priced fp32
    snn, ann = (np.asarray(c.get_offsets())[:, 0] for c in kept.axes[2].collections[1:])
    np.testing.assert_allclose(snn, [rows[0]["energy_pj"]["fp32"]] + [r["energy_pj"]["int8"] for r in rows[1:]])
    np.testing.assert_allclose(ann, [4.6 * rows[0]["ann_macs"]] + [0.23 * r["ann_macs"] for r in rows[1:]])
    assert f"{sum(snn) / 1e6:.3g} µJ vs ANN {sum(ann) / 1e6:.3g} µJ" in kept._suptitle.get_text()
    assert "int8, 1 layer(s) fp32, 45 nm" in kept.axes[2].get_xlabel()
