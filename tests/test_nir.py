"""NIR export: every registered model is written (hard reset) or refused in one line; the LIF
parameters follow the stated forward-Euler mapping; and a consumer nobody here wrote (snnTorch's
``import_from_nir``) runs the file for T steps with snnkit's per-layer spike counts."""
from __future__ import annotations

import json
import shutil

import nir
import numpy as np
import pytest
import torch

from deploy_helpers import model_and_checkpoint
from snnkit.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.graph import one_step
from snnkit.deploy.nir_export import DT, NirUnsupported
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
    for node in lifs.values():  # λ = 0.5, V_th = 1, v_reset = 0: τ = 2·dt, r = 2
        np.testing.assert_allclose(node.tau, 2 * DT, rtol=1e-6)
        np.testing.assert_allclose(node.r, 2.0, rtol=1e-6)
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


def snntorch_counts(path, x: torch.Tensor, layer_names: list[str], T: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the NIR file in snnTorch, one sample at a time (NIR shapes have no batch dimension) for
    T steps: (per-layer spike counts [B, L], time-averaged output [B, classes])."""
    import snntorch
    from snntorch.import_nir import import_from_nir
    from snntorch.utils import reset

    net = import_from_nir(nir.read(path))
    lifs = {n: m for n, m in net.named_modules() if isinstance(m, snntorch.Leaky)}
    columns = [lifs[name.replace(".", "_")] for name in layer_names]  # nirtorch's module names
    counts, outputs = np.zeros((len(x), len(columns))), []
    for b, sample in enumerate(x):
        reset(net)
        hooks = [m.register_forward_hook(lambda m, i, s, j=j, b=b: counts.__setitem__((b, j), counts[b, j] + float(s.sum())))
                 for j, m in enumerate(columns)]
        state, steps = None, []
        with torch.no_grad():
            for _ in range(T):
                y, state = net(sample, state)
                steps.append(y)
        for h in hooks:
            h.remove()
        outputs.append(torch.stack(steps).mean(0).numpy())
    return counts.astype(np.int64), np.stack(outputs)


@torch.no_grad()
def snnkit_one_step_at_a_time(net, x: torch.Tensor, T: int) -> tuple[np.ndarray, np.ndarray]:
    """snnkit's folded network (the streaming graph's module) fed as the consumer is fed: one
    sample, one step per call; a convolution can round differently with another batch size, and a
    neuron exactly at the threshold then flips."""
    step = one_step(net)
    logits, counts = [], []
    for sample in x:
        states = [torch.zeros(1, *s) for s in step.state_shapes(tuple(sample.shape))]
        ys, total = [], 0
        for _ in range(T):
            y, c, *states = step(sample[None], *states)
            ys.append(y)
            total = total + c
        logits.append(torch.stack(ys).mean(0))
        counts.append(total)
    return torch.cat(logits).numpy(), torch.cat(counts).numpy()


def assert_round_trip(run_dir, x: torch.Tensor) -> None:
    """snnTorch on the exported file gives the spike counts and logits of snnkit's folded network."""
    ckpt = load_checkpoint(run_dir)
    net = model_from_checkpoint(ckpt)
    path = export_checkpoint(run_dir, form="nir").path
    counts, logits = snntorch_counts(path, x, net.layer_names(), ckpt["T"])
    ref_logits, ref_counts = snnkit_one_step_at_a_time(net, x, ckpt["T"])
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
    assert (counts.sum(0) > 0).all(), "every layer should fire, or the check is empty"


def test_snntorch_runs_the_digits_graph_spike_for_spike(tmp_path):
    atomic_save(hard_reset_checkpoint("digits_convnet"), tmp_path / "checkpoint.pt")
    assert_round_trip(tmp_path, torch.randn(4, 1, 8, 8))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODELS.names()) - set(MAX_POOLED) - {"digits_convnet"}))
def test_snntorch_runs_every_exportable_model_spike_for_spike(tmp_path, name):
    ckpt = hard_reset_checkpoint(name)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    assert_round_trip(tmp_path, torch.randn(2, *ckpt["data"]["input_shape"]))


@pytest.mark.slow
def test_snntorch_runs_a_trained_hard_reset_digits_model_on_the_test_set(trained_digits, tmp_path):
    from snnkit.deploy.evaluate import evaluation_batches

    run = tmp_path / "run"
    shutil.copytree(trained_digits("hard"), run)  # the NIR file is written beside the checkpoint
    x = torch.cat([x for x, _ in evaluation_batches(load_checkpoint(run), None, 512)])  # 360 samples
    assert_round_trip(run, x)
