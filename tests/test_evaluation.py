"""The one PyTorch evaluator (snnkit.evaluation): what it returns is the network's own multi-step
forward, batch by batch in loader order, and the trainer's held-out metrics are read from it."""
import pytest
import torch

from snnkit.data import encode
from snnkit.evaluation import evaluate_network
from snnkit.models import ModelSpec, build_model
from snnkit.spiking import firing_rate
from snnkit.training.trainer import evaluate

T = 3


@pytest.fixture
def net():
    return build_model(ModelSpec("digits_convnet", 10, 1, width=0.25)).double().eval()


@pytest.fixture
def batches():
    g = torch.Generator().manual_seed(0)
    return [(4 * torch.rand(b, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(10, (b,), generator=g))
            for b in (5, 5, 3)]


def test_outputs_are_each_batchs_forward_in_loader_order(net, batches):
    out = evaluate_network(net, batches, T, "static")
    refs = [net(encode(x, T, "static")) for x, _ in batches]
    torch.testing.assert_close(out.logits, torch.cat([r.logits for r in refs]))
    assert torch.equal(out.spike_counts, torch.cat([r.spike_counts for r in refs]))
    assert torch.equal(out.labels, torch.cat([y for _, y in batches]))
    assert out.samples == 13 and out.accuracy == pytest.approx(float((out.logits.argmax(1) == out.labels).double().mean()))
    assert out.spike_counts.sum() > 0  # the firing rate below is not 0 = 0


def test_the_firing_rate_is_the_one_of_all_samples_at_once(net, batches):
    out = evaluate_network(net, batches, T, "static")
    _, modes = net.run_multistep(encode(torch.cat([x for x, _ in batches]), T, "static"))
    assert out.firing_rate == pytest.approx(firing_rate(modes), rel=1e-12)


def test_the_trainers_metrics_are_the_evaluators(net, batches):
    out = evaluate_network(net, batches, T, "static")
    metrics = evaluate(net, batches, T, "static", torch.device("cpu"))
    assert metrics["acc"] == pytest.approx(out.accuracy)
    assert metrics["loss"] == pytest.approx(torch.nn.functional.cross_entropy(out.logits, out.labels).item())
    assert metrics["firing_rate"] == pytest.approx(out.firing_rate)


def test_an_empty_loader_gives_zeros_not_an_error(net):
    assert evaluate(net, [], T, "static", torch.device("cpu")) == {"loss": 0.0, "acc": 0.0, "firing_rate": 0.0}
