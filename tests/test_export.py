"""Export: every registered model becomes a checked, time-unrolled ONNX graph that agrees with
PyTorch spike for spike; BN folding; metadata; import hygiene."""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from deploy_helpers import DEFAULT_SHAPE, EXACT_IN_FLOAT32, SHAPES, T, exact_input, model_and_checkpoint, observed_from
from snnkit.checkpoint import atomic_save
from snnkit.config import config_from_dict
from snnkit.deploy.evaluate import check_graph
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.graph import TimeUnrolled, deployable, fold_batchnorm
from snnkit.deploy.metadata import META_KEYS
from snnkit.deploy.parity import verify
from snnkit.deploy.runtime import load_onnx
from snnkit.errors import SnnkitError
from snnkit.models import MODELS
from snnkit.spiking import spiking_layers


@pytest.fixture
def exported(tmp_path, request):
    """(net, checkpoint, ExportResult) for the model named by the test's parameter."""
    net, ckpt = model_and_checkpoint(request.param)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    return net, ckpt, export_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "m.onnx")


def hooked_counts(net, x_seq: torch.Tensor) -> torch.Tensor:
    """[B, L] spikes per sample per LIF layer, summed from the layers' outputs by forward hooks
    (independent of the modes' own counting)."""
    T, B = x_seq.shape[:2]
    counts = []
    hooks = [lif.register_forward_hook(lambda m, i, out: counts.append(out.unflatten(0, (T, B)).flatten(2).sum((0, 2))))
             for lif in spiking_layers(net.body)]
    with torch.no_grad():
        net(x_seq)
    for h in hooks:
        h.remove()
    return torch.stack(counts, 1)


@pytest.mark.parametrize("exported", MODELS.names(), indirect=True)
@pytest.mark.parametrize("batch", [1, 7])
def test_every_model_exports_and_matches_pytorch_spike_for_spike(exported, batch):
    net, ckpt, result = exported
    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "GreaterOrEqual" in ops and "BatchNormalization" not in ops
    assert {n.domain for n in model.graph.node} <= {""}  # standard ops only, no custom domain
    x = exact_input(batch, tuple(ckpt["data"]["input_shape"]))
    graph = load_onnx(result.path)
    logits, counts = graph.run(x.numpy())
    x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    with torch.no_grad():
        ref = net(x_seq)
    assert logits.shape == (batch, 10) and counts.shape == (batch, len(net.layer_names()))
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(ref.spike_counts.numpy(), hooked_counts(net, x_seq).numpy())  # one computation
    # onnxruntime's every membrane, spike and logit within its float32 rounding bound of the twin
    # run in float64 (the parity verdict); where every sum is exact, nothing may differ at all
    verdict = check_graph(graph, deployable(net, T, "static", probes=True), [(x, torch.zeros(batch))], 1).verdict
    assert verdict.passed, verdict.first_unexplained.describe()
    if ckpt["model"]["name"] in EXACT_IN_FLOAT32:
        np.testing.assert_array_equal(counts, ref.spike_counts.numpy())
        np.testing.assert_array_equal(logits, ref.logits.numpy())
    assert (counts.sum(0) > 0).all(), "every layer should fire in this test, or the check is empty"


@pytest.mark.parametrize("name", MODELS.names())
def test_folding_batchnorm_leaves_eval_outputs_unchanged(name):
    net, _ = model_and_checkpoint(name)
    folded = fold_batchnorm(net.body)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = exact_input(3, SHAPES.get(name, DEFAULT_SHAPE))
    with torch.no_grad():
        ref = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1))
        logits, counts = deployable(net, T, "static")(x)
    # every spike and the logits judged against the folded twin run in float64, each with its
    # float32 rounding bound (the parity verdict): a flip is explained only within its bound of V_th
    unfolded = TimeUnrolled(copy.deepcopy(net.body).eval(), T, "static", probes=True)
    verdict = verify(deployable(net, T, "static", probes=True), x, observed_from(unfolded, x)).verdict
    assert verdict.passed, verdict.first_unexplained.describe()
    if name in EXACT_IN_FLOAT32:  # every sum exact on both sides: nothing may differ at all
        assert torch.equal(counts, ref.spike_counts.long()) and torch.equal(logits, ref.logits)


def test_folded_conv_equals_conv_then_batchnorm_for_real_valued_statistics():
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3.0)
        bn.weight.normal_()
        bn.bias.normal_()
    seq = nn.Sequential(conv, bn).eval().double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():  # in float64 both sides are within 28·2⁻⁵³ of exact on these O(10) values
        torch.testing.assert_close(fold_batchnorm(seq)(x), seq(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("exported", ["digits_convnet"], indirect=True)
def test_metadata_describes_the_model(exported):
    net, ckpt, result = exported
    meta = load_onnx(result.path).meta
    assert meta["T"] == T and meta["opset"] == 18 and meta["input_kind"] == "static" and meta["format"] == "unrolled"
    assert meta["layer_names"] == net.layer_names() == ["0.2", "1.2", "3.2"]
    assert meta["input_shape"] == [1, 8, 8] and meta["class_names"] == ckpt["data"]["class_names"]
    assert meta["neuron"] == ckpt["model"]["neuron"] and meta["dataset"] == "digits"
    assert len(meta["config_hash"]) == 16 and meta["snnkit_version"]
    # the checkpoint by name and content, never by an absolute path
    checkpoint = result.path.parent / "checkpoint.pt"
    assert meta["checkpoint"] == {"file": "checkpoint.pt", "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
                                  "bytes": checkpoint.stat().st_size, "relative": "checkpoint.pt"}
    props = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert set(props) == set(META_KEYS) and not any(str(result.path.parent) in v for v in props.values())
    assert meta["computed_once"] == ["0.0", "0.1"]  # the first conv (and its folded BN) once per sample
    # digits_convnet at width 0.125: 4, 8, 16 channels; a 3×3 conv with padding 1 on 8×8 has
    # (2 + 6·3 + 2)² real (input, output) position pairs per channel pair
    synaptic = meta["topology"]["synaptic"]
    assert [(s["label"], s["fed_by"], s["synapses"]) for s in synaptic] == [
        ("conv1 (0.0)", "analog", 22**2 * 1 * 4), ("conv2 (1.0)", "spikes", 22**2 * 4 * 8),
        ("conv3 (3.0)", "spike counts", 10**2 * 8 * 16), ("linear1 (6)", "spike counts", 64 * 10)]
    assert (result.T, result.layers, result.opset) == (T, 3, 18)


def test_export_emits_no_warnings_and_rejects_unsafe_opsets(tmp_path):
    _, ckpt = model_and_checkpoint("digits_convnet")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(tmp_path, tmp_path / "m.onnx", opset=17)
    assert [str(w.message) for w in caught] == []
    with pytest.raises(SnnkitError, match=r"--opset 21 is not supported; choose one of 17\.\.20"):
        export_checkpoint(tmp_path, tmp_path / "m.onnx", opset=21)


def test_deploy_never_imports_training_code(tmp_path):
    _, ckpt = model_and_checkpoint("digits_convnet")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    code = (
        "import sys, json\n"
        "import snnkit.deploy.export, snnkit.deploy.evaluate, snnkit.deploy.report, snnkit.cli.export, snnkit.cli.eval\n"
        "import snnkit.deploy.quantize, snnkit.deploy.nir_export\n"
        f"snnkit.deploy.export.export_checkpoint({str(tmp_path)!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith("
        "('snnkit.methods', 'snnkit.training', 'snnkit.config')))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_importing_deploy_loads_the_core_but_not_the_rate_method():
    """The core (neuron, spiking, surrogate) knows no method: importing every deploy module in a
    fresh interpreter loads the LIF layer and nothing of snnkit.methods (the rate spike pass)."""
    code = ("import importlib, json, pkgutil, sys\n"
            "import snnkit.deploy\n"
            "for m in pkgutil.iter_modules(snnkit.deploy.__path__):\n"
            "    importlib.import_module('snnkit.deploy.' + m.name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('snnkit.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"snnkit.spiking", "snnkit.neuron", "snnkit.deploy.export"} <= set(loaded)
    assert [m for m in loaded if m.startswith("snnkit.methods")] == []


def test_the_onnx_config_hash_is_the_training_configs_digest(tmp_path):
    """One hash (snnkit.digest): the exported file names the config as results.json does."""
    cfg = config_from_dict({"method": {"name": "rate_m", "T": T}, "optim": {"lr": 0.05}})
    _, ckpt = model_and_checkpoint("digits_convnet")
    ckpt["config"] = cfg.to_dict()
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    meta = load_onnx(export_checkpoint(tmp_path, tmp_path / "m.onnx").path).meta
    other = config_from_dict({"method": {"name": "rate_m", "T": T}, "optim": {"lr": 0.1}})
    assert meta["config_hash"] == cfg.digest() != other.digest()


def test_event_data_goes_in_time_major_with_a_dynamic_batch(tmp_path):
    net, ckpt = model_and_checkpoint("digits_convnet")
    assert "digits_convnet" in EXACT_IN_FLOAT32
    ckpt["data"]["kind"] = "event"
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    model = load_onnx(export_checkpoint(tmp_path).path)
    assert model.meta["input_layout"] == "[T, B, C, H, W]"
    for batch in (1, 5):
        x_seq = torch.stack([exact_input(batch, (1, 8, 8)) for _ in range(T)])  # a different frame per step
        logits, counts = model.run(x_seq.numpy())
        with torch.no_grad():
            ref = net(x_seq)
        np.testing.assert_array_equal(counts, ref.spike_counts.numpy())
        np.testing.assert_array_equal(logits, ref.logits.numpy())  # dyadic weights and input: every sum exact
    with pytest.raises(SnnkitError, match=r"--T 2 does not fit event data, which gives one frame per step: "
                                          r"this model's data has 4 frames per sample, so export it at T = 4"):
        export_checkpoint(tmp_path, tmp_path / "t2.onnx", T=2)



@pytest.mark.parametrize("size,out", [((1, 1), (7, 7)), ((2, 3), (4, 9)), ((3, 3), (6, None)), ((1, 1), 5)])
def test_an_enlarging_adaptive_pool_that_replicates_is_written_as_a_replication(size, out):
    """Each output side a multiple of the input's: every window is one input cell, so the ONNX graph
    (no AveragePool, which the exporter cannot size) equals the pool exactly."""
    import onnxruntime as ort

    from snnkit.deploy.writer import ReplicatingPool, replicating_pools, trace

    pool = nn.Sequential(nn.AdaptiveAvgPool2d(out), nn.Flatten())  # a layer after it sees the pool's output
    x = torch.randn(2, 3, *size)
    assert isinstance(replicating_pools(pool, (x,))[0], ReplicatingPool)
    assert type(pool[0]) is nn.AdaptiveAvgPool2d  # a copy: the model itself is untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no tracer warning: the factors are plain integers
        graph = trace(pool, (x,), 17, {"input": 0}, ["output"])
    assert "AveragePool" not in {n.op_type for n in graph.graph.node}
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (x, torch.randn(5, 3, *size)):  # the batch stays dynamic
        (y,) = session.run(None, {"input": batch.numpy()})
        np.testing.assert_array_equal(y, pool(batch).numpy())


def test_an_adaptive_pool_that_does_not_replicate_is_left_to_the_exporter():
    from snnkit.deploy.writer import ExportUnsupported, trace

    with pytest.raises(ExportUnsupported, match="adaptive_avg_pool2d"):
        trace(nn.AdaptiveAvgPool2d(7), (torch.randn(2, 3, 4, 4),), 17, {"input": 0}, ["output"])
