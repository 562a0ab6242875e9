"""BatchNorm recalibration (issue 20 point 3; docs/spec/rate_backprop.md §4.6): after it, the running
statistics are those of the evaluated multi-step forward, whatever layout trained the net; the
trainer runs it for the per-step methods only and it never changes the weights."""
import copy
import dataclasses

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Subset

from snnkit.checkpoint import load_checkpoint
from snnkit.config import resolve_config
from snnkit.data import encode, load_dataset
from snnkit.errors import ConfigError
from snnkit.methods import build_method
from snnkit.methods.base import METHODS, RunShape
from snnkit.models import ModelSpec, build_model
from snnkit.neuron import NeuronParams
from snnkit.training import train
from snnkit.training.batchnorm import recalibrate_batchnorm
from snnkit.training.progress import EpochProgress

T, B = 3, 16
# every registered method, and BPTT's single-step layout (an option, not a name)
LAYOUTS = [(name, {}) for name in METHODS.names()] + [("bptt", {"layout": "single"})]
IDS = [name + "".join(f"-{v}" for v in options.values()) for name, options in LAYOUTS]


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("digits_convnet", 10, 1, NeuronParams(), width=0.25)).double()


@pytest.fixture(scope="module")
def batches():
    x, y = load_dataset("digits").train.tensors
    x = x.double()
    return [(x[i:i + B], y[i:i + B]) for i in range(0, 3 * B, B)]


def batchnorms(net):
    return [m for m in net.modules() if isinstance(m, _BatchNorm)]


def running(net):
    return [(bn.running_mean.clone(), bn.running_var.clone()) for bn in batchnorms(net)]


def train_forward(name, options, net, batches):
    """One training iteration of the method per batch, with a step that only zeroes the gradients:
    BN's running statistics move the way the method moves them, the weights stay."""
    method = build_method(name, T, options)
    method.check(net)
    method.adopt(method.plan(net, RunShape(tuple(batches[0][0].shape[1:]), (B,), B * len(batches), "cpu")))
    net.train()
    for x, y in batches:
        method.train_step(net, encode(x, T, "static"), y, lambda: net.zero_grad(set_to_none=True))
    return method


def pooled_moments(net, batches):
    """Per BN, the mean over batches of the batch mean and unbiased variance of its [T·B] input in
    the multi-step forward where every BN normalises with its batch statistics."""
    net = copy.deepcopy(net).eval()
    seen = {bn: [] for bn in batchnorms(net)}
    for bn in seen:
        bn.train()
        bn.register_forward_pre_hook(lambda m, args: seen[m].append(args[0]))
    with torch.no_grad():
        for x, _ in batches:
            net.run_multistep(encode(x, T, "static"))
    dims = lambda a: [0, *range(2, a.dim())]  # noqa: E731
    return [(torch.stack([a.mean(dims(a)) for a in seen[bn]]).mean(0),
             torch.stack([a.var(dims(a), unbiased=True) for a in seen[bn]]).mean(0)) for bn in seen]


@pytest.mark.parametrize("name,options", LAYOUTS, ids=IDS)
def test_recalibrated_statistics_are_the_pooled_moments_of_the_multistep_forward(name, options, batches):
    net = tiny_net()
    train_forward(name, options, net, batches[:1])
    momenta = [bn.momentum for bn in batchnorms(net)]
    assert recalibrate_batchnorm(net, batches, 2, T, "static") == 2
    for (mean, var), (want_mean, want_var) in zip(running(net), pooled_moments(net, batches[:2])):
        torch.testing.assert_close(mean, want_mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var, want_var, rtol=1e-10, atol=1e-12)
    assert [bn.momentum for bn in batchnorms(net)] == momenta
    assert all(int(bn.num_batches_tracked) == 2 for bn in batchnorms(net))
    assert not net.training and not any(m.training for m in net.modules())


@pytest.mark.parametrize("name,options", LAYOUTS, ids=IDS)
def test_a_method_says_whether_its_training_forward_normalises_per_step(name, options, batches):
    """The trainer recalibrates exactly the methods whose iteration makes T running updates of BN
    (one per step) rather than one over T·B."""
    net = tiny_net()
    method = train_forward(name, options, net, batches[:1])
    updates = {int(bn.num_batches_tracked) for bn in batchnorms(net)}
    assert updates in ({1}, {T})
    assert method.per_step_statistics == (updates == {T})


@pytest.mark.parametrize("name,options", LAYOUTS, ids=IDS)
def test_after_recalibration_the_evaluated_net_does_not_depend_on_the_training_layout(name, options, batches):
    """Same weights, BN estimates left by different training layouts: after recalibration, the same
    running statistics and the same evaluated logits as after BPTT's multi-step layout."""
    reference, net = tiny_net(), tiny_net()
    train_forward("bptt", {}, reference, batches)
    method = train_forward(name, options, net, batches)
    if method.per_step_statistics:  # without recalibration the estimates differ
        assert not all(torch.allclose(a, b) for (a, _), (b, _) in zip(running(net), running(reference)))
    for n in (reference, net):
        recalibrate_batchnorm(n, batches, len(batches), T, "static")
    for (mean, var), (want_mean, want_var) in zip(running(net), running(reference)):
        torch.testing.assert_close(mean, want_mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var, want_var, rtol=1e-10, atol=1e-12)
    x = encode(batches[0][0], T, "static")
    with torch.no_grad():
        torch.testing.assert_close(net(x).logits_seq, reference(x).logits_seq, rtol=1e-9, atol=1e-10)


# --- in the trainer ------------------------------------------------------------------------------
QUIET = EpochProgress(enabled=False)


@pytest.fixture(scope="module")
def data():
    digits = load_dataset("digits")
    return dataclasses.replace(digits, train=Subset(digits.train, range(320)), test=Subset(digits.test, range(128)))


def run(tmp_path, data, name, *extra):
    cfg = resolve_config(None, ["optim.epochs=2", "model.width=0.125", "method.T=2", "data.batch_size=64",
                                "run.device=cpu", f"run.out_dir={tmp_path}", f"run.name={name}", *extra])
    train(cfg, QUIET, data)
    return load_checkpoint(tmp_path / name)["state_dict"]


@pytest.mark.parametrize("method", ["rate_s", "rate_m", "bptt"])
def test_recalibration_replaces_the_running_statistics_of_every_method_and_never_the_weights(tmp_path, data, method):
    """Multi-step methods too: their estimate is the evaluated forward's, but an EMA that lags the weights."""
    on = run(tmp_path, data, "recalibrated", f"method.name={method}", "run.bn_recalibration_batches=2")
    off = run(tmp_path, data, "plain", f"method.name={method}", "run.bn_recalibration_batches=0")
    assert on.keys() == off.keys()
    for key, value in on.items():
        if "running_" in key:
            assert not torch.equal(value, off[key]), key
        elif "num_batches_tracked" in key:
            assert int(value) == 2, key  # the batches of the last estimate
        else:
            assert torch.equal(value, off[key]), key


@pytest.mark.parametrize("value,message", [("-1", "must be a whole number of batches, 0 or more (0: off), got -1"),
                                           ("1.5", "expects int, got 1.5")])
def test_the_batch_count_is_refused_in_one_line(value, message):
    with pytest.raises(ConfigError) as e:
        resolve_config(None, [f"run.bn_recalibration_batches={value}"])
    assert str(e.value) == f"run.bn_recalibration_batches {message}"
