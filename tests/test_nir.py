"""NIR export: every registered model is written (hard reset) or refused in one line; the LIF
parameters follow the stated forward-Euler mapping; and two consumers nobody here wrote (snnTorch's
and SpikingJelly's ``import_from_nir``) run the file for T steps with snnkit's spikes, every
difference judged by the parity verdict's rounding-bound rule."""
from __future__ import annotations

import json
import shutil

import nir
import numpy as np
import pytest
import torch

from deploy_helpers import model_and_checkpoint, observed_from
from snnkit.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.graph import deployable
from snnkit.deploy.nir_export import DT, NirUnsupported
from snnkit.deploy.parity import Observed, verify
from snnkit.models import MODELS

MAX_POOLED = {"sew_resnet34": "1", "preact_resnet34": "2"}  # the layer NIR has no node for


def hard_reset_checkpoint(name: str, decay: float = 0.2, tie_free: bool = True) -> dict:
    """A test checkpoint with hard reset. ``tie_free``: weights off the dyadic grid, so no membrane
    lands exactly on the threshold (where NIR's v > V_th and snnkit's u ≥ V_th differ)."""
    _, ckpt = model_and_checkpoint(name)
    ckpt["model"]["neuron"].update(reset="hard", decay=decay)
    if tie_free:
        for key, w in ckpt["state_dict"].items():
            if key.endswith("weight") and w.dim() > 1:
                w.mul_(1 + 0.01 * torch.rand_like(w))
    return ckpt


def test_subtract_next_is_refused_in_one_sentence(tmp_path):
    """NIR resets to v_reset; snnTorch's subtract (snnkit's subtract_next) has no NIR form."""
    _, ckpt = model_and_checkpoint("digits_convnet")
    ckpt["model"]["neuron"].update(reset="subtract_next")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(NirUnsupported, match=r"^NIR's LIF resets to v_reset after a spike and cannot express "
                                             r"snnkit's subtract_next reset \(snnTorch's subtract\); use the hard reset"):
        export_checkpoint(tmp_path, form="nir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_is_written_with_the_stated_lif_mapping_or_refused(tmp_path, name):
    ckpt = hard_reset_checkpoint(name, decay=0.5)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    if name in MAX_POOLED:
        with pytest.raises(NirUnsupported, match=rf"^layer {MAX_POOLED[name]} \(MaxPool2d\) has no NIR equivalent"):
            export_checkpoint(tmp_path, form="nir")
        assert not (tmp_path / "model.nir").exists()
        return
    result = export_checkpoint(tmp_path, form="nir")
    graph = nir.read(result.path)  # type-checks every edge
    net = model_from_checkpoint(ckpt)
    lifs = {k: v for k, v in graph.nodes.items() if isinstance(v, nir.LIF)}
    assert sorted(lifs) == sorted(net.layer_names()) and result.layers == len(lifs)
    for node in lifs.values():  # λ = 0.5, V_th = 1, v_reset = 0: τ = dt/0.5 = 2·dt and r = τ/dt = 2, both exact
        assert (node.tau == np.float32(2 * DT)).all() and (node.r == 2).all()
        assert (node.v_leak == 0).all() and (node.v_threshold == 1).all() and (node.v_reset == 0).all()
    kinds = {type(v).__name__ for v in graph.nodes.values()}
    assert kinds <= {"Input", "Output", "Conv2d", "Affine", "AvgPool2d", "Flatten", "LIF"}
    assert "BatchNorm" not in str(graph.nodes) and json.loads(graph.metadata["dt"]) == DT
    assert json.loads(graph.metadata["layer_names"]) == net.layer_names()
    assert json.loads(graph.metadata["format"]) == "nir" and json.loads(graph.metadata["checkpoint"])["file"] == \
        "checkpoint.pt"  # the checkpoint by name and SHA-256, as every form records it


def test_digits_graph_is_twelve_nodes_in_a_chain(tmp_path):
    atomic_save(hard_reset_checkpoint("digits_convnet"), tmp_path / "checkpoint.pt")
    graph = nir.read(export_checkpoint(tmp_path, form="nir").path)
    assert graph.edges == [("input", "0.0"), ("0.0", "0.2"), ("0.2", "1.0"), ("1.0", "1.2"), ("1.2", "2"),
                           ("2", "3.0"), ("3.0", "3.2"), ("3.2", "4"), ("4", "5"), ("5", "6"), ("6", "output")]


def snntorch_model(path):
    """snnTorch's import: a step ``(sample, state) -> (output, state)`` on unbatched samples, and its
    neurons by module name."""
    import snntorch
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    net = import_from_nir(nir.read(path))

    def step(sample, state):
        if state is None:
            reset(net)
        return net(sample, state)
    return step, {n: m for n, m in net.named_modules() if isinstance(m, snntorch.Leaky)}


def spikingjelly_model(path):
    """SpikingJelly 2.0's import (``nir_exchange.import_from_nir``), fed a batch of one."""
    from spikingjelly.activation_based.nir_exchange import from_nir

    net = from_nir.import_from_nir(path, dt=DT)
    return (lambda sample, state: net(sample[None], state),
            {n: m for n, m in net.named_modules() if isinstance(m, from_nir._NIRStatefulModule)})


CONSUMERS = {"snntorch": snntorch_model, "spikingjelly": spikingjelly_model}


@torch.no_grad()
def consumer_run(consumer: str, path, x: torch.Tensor, layer_names: list[str], T: int) -> tuple[dict, torch.Tensor]:
    """Run the NIR file in a consumer, one sample at a time (NIR shapes have no batch dimension) for
    T steps: (each layer's spikes [B, T, neurons], the time-averaged output [B, classes])."""
    step, lifs = CONSUMERS[consumer](path)
    columns = [lifs[name.replace(".", "_")] for name in layer_names]  # nirtorch's module names
    seen: list[list[torch.Tensor]] = [[] for _ in columns]
    hooks = [m.register_forward_hook(lambda m, i, s, j=j: seen[j].append(s[0] if isinstance(s, tuple) else s))
             for j, m in enumerate(columns)]
    outputs = []
    for sample in x:
        state, ys = None, []
        for _ in range(T):
            y, state = step(sample, state)
            ys.append(y.reshape(-1))
        outputs.append(torch.stack(ys).mean(0))
    for h in hooks:
        h.remove()
    return {name: torch.stack(s).reshape(len(x), T, -1) for name, s in zip(layer_names, seen)}, torch.stack(outputs)


def consumer_verdict(consumer: str, run_dir, x: torch.Tensor):
    """The consumer's spikes and outputs judged against snnkit's network by the parity rule: a spike
    that differs is explained only where snnkit's (float64) membrane is within its float32 rounding
    bound of the threshold, or its input already differed."""
    ckpt = load_checkpoint(run_dir)
    net = model_from_checkpoint(ckpt)
    path = export_checkpoint(run_dir, form="nir", force=True).path  # once per consumer
    T = ckpt["T"]
    spikes, logits = consumer_run(consumer, path, x, net.layer_names(), T)
    twin = deployable(net, T, "static", probes=True)
    own = observed_from(twin, x)  # the membranes: snnkit's float32 ones, honest by the same rule
    spikes = {n: s.transpose(0, 1).reshape(own.spikes[n].shape).to(own.spikes[n].dtype) for n, s in spikes.items()}
    counts = torch.stack([spikes[n].flatten(2).sum((0, 2)) for n in net.layer_names()], 1).to(torch.int64)
    verdict = verify(twin, x, Observed(logits, counts, own.membranes, spikes)).verdict
    assert (counts.sum(0) > 0).all(), "every layer should fire, or the check is empty"
    return verdict


def assert_round_trip(run_dir, x: torch.Tensor) -> None:
    """snnTorch and SpikingJelly on the exported file give snnkit's spikes and logits, or differ
    only where the parity rule explains it."""
    for consumer in CONSUMERS:
        verdict = consumer_verdict(consumer, run_dir, x)
        assert verdict.passed, f"{consumer}: {verdict.first_unexplained.describe()}"


def test_snntorch_and_spikingjelly_run_the_digits_graph(tmp_path):
    atomic_save(hard_reset_checkpoint("digits_convnet"), tmp_path / "checkpoint.pt")
    assert_round_trip(tmp_path, torch.randn(4, 1, 8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODELS.names()) - set(MAX_POOLED) - {"digits_convnet"}))
def test_snntorch_and_spikingjelly_run_every_exportable_model(tmp_path, name):
    ckpt = hard_reset_checkpoint(name)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    assert_round_trip(tmp_path, torch.randn(2, *ckpt["data"]["input_shape"]))


@pytest.mark.slow
def test_snntorch_and_spikingjelly_run_a_trained_hard_reset_digits_model_on_the_test_set(trained_digits, tmp_path):
    from snnkit.deploy.evaluate import evaluation_batches

    run = tmp_path / "run"
    shutil.copytree(trained_digits("hard"), run)  # the NIR file is written beside the checkpoint
    x = torch.cat([x for x, _ in evaluation_batches(load_checkpoint(run), None, 512)])  # 360 samples
    assert_round_trip(run, x)
