"""Every registered model with every registered method: finite loss, gradients reach the first layer."""
import pytest
import torch

from snnkit.methods import METHODS, build_method
from snnkit.models import MODELS, ModelSpec, build_model

INPUT = {"digits_convnet": (1, 8, 8), "vggsnn": (2, 48, 48)}  # vggsnn flattens a 3×3 map: 48×48 in
DEFAULT_INPUT = (3, 16, 16)


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("model", MODELS.names())
def test_every_model_trains_with_every_method(model, method):
    shape = INPUT.get(model, DEFAULT_INPUT)
    net = build_model(ModelSpec(model, 5, shape[0], width=0.125)).train()
    x_seq = torch.randn(2, 4, *shape).mul(3)
    y = torch.randint(0, 5, (4,))
    out = build_method(method, 2).train_step(net, x_seq, y, step=lambda: None)
    assert torch.isfinite(torch.tensor(out.loss))
    assert out.logits.shape == (4, 5)
    first = next(net.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    assert 0.0 <= out.firing_rate <= 1.0


@pytest.mark.parametrize("model", MODELS.names())
def test_spike_counts_have_one_column_per_spiking_layer(model):
    shape = INPUT.get(model, DEFAULT_INPUT)
    net = build_model(ModelSpec(model, 5, shape[0], width=0.125)).eval()
    with torch.no_grad():
        out = net(torch.randn(3, 2, *shape))
    assert out.logits_seq.shape == (3, 2, 5)
    assert out.spike_counts.shape == (2, len(net.layer_names()))
