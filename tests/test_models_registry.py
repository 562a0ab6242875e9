"""Every registered model with every registered method, on tiny widths; the new architectures'
layouts (docs/spec/rate_backprop.md §5); and the rate_M identity (§4.1) for each model."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from snnkit.errors import ConfigError
from snnkit.methods import METHODS, build_method
from snnkit.models import MODELS, ModelSpec, build_model
from snnkit.spiking import spiking_layers

# name -> (input shape of one step, kind, classes) for the tests; every registered model needs one
INPUTS = {
    "digits_convnet": ((1, 8, 8), "static", 10),
    "mnist_convnet": ((1, 28, 28), "static", 10),
    "resnet18": ((3, 32, 32), "static", 10),
    "resnet19": ((3, 32, 32), "static", 10),
    "vgg11": ((3, 32, 32), "static", 10),
    "vgg13": ((3, 32, 32), "static", 100),
    "vggsnn": ((2, 48, 48), "event", 10),
    "sew_resnet34": ((3, 32, 32), "static", 1000),
    "preact_resnet34": ((3, 32, 32), "static", 1000),
}
T, B, WIDTH = 2, 2, 0.125


def tiny(name: str) -> nn.Module:
    shape, _, classes = INPUTS[name]
    return build_model(ModelSpec(name, classes, shape[0], width=WIDTH))


def inputs(name: str, kind: str | None = None) -> torch.Tensor:
    """``[T, B, C, H, W]``: a static image repeated T times, or event-like counts varying in time."""
    shape, default_kind, _ = INPUTS[name]
    if (kind or default_kind) == "static":
        return torch.randn(B, *shape).expand(T, B, *shape)
    return torch.poisson(torch.full((T, B, *shape), 0.5))


def test_every_registered_model_has_test_inputs():
    assert sorted(INPUTS) == MODELS.names()


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("name", MODELS.names())
def test_train_step_gives_a_finite_loss_and_gradients_down_to_the_first_layer(name, method):
    net = tiny(name).train()
    trainer_method = build_method(method, T)
    try:
        trainer_method.check(net)
    except ConfigError as e:  # a method that cannot train a layer says so at start-up, naming it
        assert "cannot train layer" in str(e) and "MaxPool2d" in str(e)
        return
    y = torch.arange(B) % INPUTS[name][2]
    steps = []
    out = trainer_method.train_step(net, inputs(name), y, lambda: steps.append(1))
    assert len(steps) in (1, T) and math.isfinite(out.loss) and out.logits.shape == (B, INPUTS[name][2])
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    first = next(m for m in net.body.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS.names())
def test_rate_m_rate_pass_logits_equal_the_time_averaged_spike_logits(name):
    # float64, so that the two passes' only difference, rounding, is far below the tolerance
    net, method, x_seq = tiny(name).train().double(), build_method("rate_m", T), inputs(name).double()
    with torch.no_grad():  # at init a LIF after a Linear (resnet19's head) stays silent; make it fire
        for linear in (m for m in net.modules() if isinstance(m, nn.Linear)):
            linear.weight.mul_(10)
    spikes = method.spike_pass(net, x_seq)
    assert all(m.spike_counts.sum() > 0 for m in spikes.modes)  # every layer fires: not trivially equal
    logits = method.rate_pass(net, x_seq, spikes)
    torch.testing.assert_close(logits, spikes.logits_seq.mean(0), atol=1e-10, rtol=0)


def test_sew_resnet34_identity_holds_even_when_the_max_pooled_spikes_vary_in_time():
    net = tiny("sew_resnet34").train().double()
    method, x_seq = build_method("rate_m", T), inputs("sew_resnet34", "event").double()
    spikes = method.spike_pass(net, x_seq)
    torch.testing.assert_close(method.rate_pass(net, x_seq, spikes), spikes.logits_seq.mean(0), atol=1e-10, rtol=0)


def test_preact_resnet34_max_pool_is_approximate_for_time_varying_input():
    """Its stem has no LIF, so the pool sees the analog input: exact for static images (above),
    but the max of the time average differs from the average of the max when the input varies."""
    net, method, x_seq = tiny("preact_resnet34").train(), build_method("rate_m", T), inputs("preact_resnet34", "event")
    spikes = method.spike_pass(net, x_seq)
    gap = (method.rate_pass(net, x_seq, spikes) - spikes.logits_seq.mean(0)).abs().max()
    assert gap > 1e-3


def counts(body: nn.Module) -> dict[str, int]:
    kinds = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "linear": nn.Linear, "maxpool": nn.MaxPool2d,
             "avgpool": nn.AvgPool2d}
    return {k: sum(isinstance(m, t) for m in body.modules()) for k, t in kinds.items()} | \
        {"lif": len(spiking_layers(body))}


def test_vgg13_and_vggsnn_layouts():
    vgg13 = build_model(ModelSpec("vgg13", 10, 3)).body
    assert counts(vgg13) == {"conv": 10, "bn": 10, "linear": 1, "maxpool": 0, "avgpool": 4, "lif": 10}
    assert [m.out_channels for m in vgg13.modules() if isinstance(m, nn.Conv2d)] == \
        [64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    vggsnn = build_model(ModelSpec("vggsnn", 10, 2)).body
    assert counts(vggsnn) == {"conv": 8, "bn": 8, "linear": 1, "maxpool": 0, "avgpool": 4, "lif": 8}
    assert (vggsnn[-1].in_features, vggsnn[-1].out_features) == (4608, 10)
    assert all(m.bias is not None for m in vggsnn.modules() if isinstance(m, nn.Conv2d))


def test_resnet34s_have_torchvisions_resnet34_weights_and_their_own_spiking_layout():
    from torchvision.models import resnet34

    reference = sum(p.numel() for p in resnet34(num_classes=1000).parameters())
    for name, lif in (("sew_resnet34", 1 + 2 * 16 + 3), ("preact_resnet34", 2 * 16)):
        body = build_model(ModelSpec(name, 1000, 3)).body
        assert sum(p.numel() for p in body.parameters()) == reference
        assert counts(body) == {"conv": 36, "bn": 36, "linear": 1, "maxpool": 1, "avgpool": 0, "lif": lif}
    stem = build_model(ModelSpec("preact_resnet34", 1000, 3)).body
    assert [type(m) for m in stem[:3]] == [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d]  # no LIF in the stem
    assert stem[0].kernel_size == (7, 7) and stem[0].stride == (2, 2)
