"""The int8 graph: spike inputs quantized exactly (scale 1/k, zero point 0, found in the graph
itself), per-channel int8 weights, a small file, and a spike-valued tensor search that is right
on every registered model."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deploy_helpers import exact_input, model_and_checkpoint
from snnkit.checkpoint import atomic_save
from snnkit.data import DATASETS, DataBundle, register_dataset
from snnkit.deploy.costs import ANALOG
from snnkit.deploy.evaluate import evaluate
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.source import Source
from snnkit.deploy.writer import unrolled_graph
from snnkit.deploy import quantize
from snnkit.deploy.quantize import Calibration, exact_overrides, logits, with_fallback
from snnkit.deploy.metadata import FORM_KEYS, META_KEYS
from snnkit.deploy.runtime import load_onnx
from snnkit.deploy.structure import quantized_nodes, spike_grids
from snnkit.errors import DataError, SnnkitError
from snnkit.models import MODELS

POOLS_AND_SUMS = ("AveragePool", "GlobalAveragePool", "Add", "Sum")  # the ops that round a spike tensor


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}


def test_spike_inputs_are_quantized_exactly_and_weights_per_channel(tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "MAX_FLOAT_LAYERS", 0)  # every conv/linear layer in int8
    _, ckpt = model_and_checkpoint("digits_convnet", width=1.0)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    result = export_checkpoint(tmp_path, form="int8")
    model, meta = onnx.load(result.path), load_onnx(result.path).meta
    init, producer = initializers(model), {o: n for n in model.graph.node for o in n.output}
    assert meta["format"] == "int8" and meta["quantization"]["calibration_samples"] == 256
    assert meta["quantization"]["float32_layers"] == [] and meta["opset"] == 19
    assert {p.key for p in model.metadata_props} == {*META_KEYS, *FORM_KEYS["int8"]}
    conv_inputs = {}  # the quantized value feeding each Conv/Gemm: (scale, zero point)
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dq = producer[node.input[0]]
            assert dq.op_type == "DequantizeLinear"
            conv_inputs[node.input[1]] = (float(init[dq.input[1]]), int(init[dq.input[2]]))
            weight_dq = producer[node.input[1]]
            w, scales = init[weight_dq.input[0]], init[weight_dq.input[1]]
            assert w.dtype == np.int8 and scales.shape == (w.shape[0],)  # one scale per output channel
    # digits_convnet: conv 0.0 sees the image (rounded), conv 1.0 the spikes of 0.2 (exact, scale 1),
    # conv 3.0 and the classifier spikes averaged over 2×2 windows (exact, scale 1/4)
    scales = [conv_inputs[k] for k in sorted(conv_inputs)]
    assert scales[1:] == [(1.0, 0), (0.25, 0), (0.25, 0)] and scales[0][0] not in (1.0, 0.25)
    assert result.size_bytes <= 0.35 * meta["quantization"]["float32_bytes"]
    logits, counts = load_onnx(result.path).run(exact_input(5, (1, 8, 8)).numpy())
    assert np.isfinite(logits).all() and counts.shape == (5, 3)


def test_the_int8_form_is_read_off_the_nodes_and_a_label_they_contradict_is_refused(tmp_path, monkeypatch):
    """An int8 graph relabelled float32 (or the reverse, in test_graph_metadata.py) is refused, and so
    is one whose spikes are quantized with a scale that rounds them."""
    monkeypatch.setattr(quantize, "MAX_FLOAT_LAYERS", 0)  # the spikes of the first LIF layer quantized too
    _, ckpt = model_and_checkpoint("digits_convnet")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    path = export_checkpoint(tmp_path, form="int8").path
    assert load_onnx(path).form == "int8"
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    relabelled = tmp_path / "relabelled.onnx"
    onnx.helper.set_model_props(model, {**props, "format": json.dumps("unrolled")})
    onnx.save(model, relabelled)
    with pytest.raises(SnnkitError, match="labelled an snnkit unrolled graph but its nodes are those of the int8 form"):
        load_onnx(relabelled)
    model = onnx.load(path)
    producer = {o: n for n in model.graph.node for o in n.output}
    spike_scale = next(producer[dq.input[0]].input[1] for dq in model.graph.node if dq.op_type == "DequantizeLinear"
                       and dq.output[0] in {n.input[0] for n in model.graph.node if n.op_type == "Conv"}
                       and float(initializers(model)[dq.input[1]]) == 1.0)  # the spikes of the first LIF layer
    scale = next(i for i in model.graph.initializer if i.name == spike_scale)
    scale.CopyFrom(onnx.numpy_helper.from_array(np.array(0.9, np.float32), spike_scale))
    onnx.save(model, tmp_path / "rounded.onnx")
    with pytest.raises(SnnkitError, match="quantizes the spikes .* with a scale that rounds them"):
        load_onnx(tmp_path / "rounded.onnx")


@pytest.mark.parametrize("name", MODELS.names())
def test_tensors_found_to_hold_spikes_lie_on_their_grid(tmp_path, name):
    """Run the simplified float32 graph with every tensor the search calls spike-valued as an extra
    output: each must be an integer multiple of its step in [0, top·step]. And every conv/linear
    layer fed by spikes (as the PyTorch model's topology says) gets an exact override."""
    _, ckpt = model_and_checkpoint(name)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    src = Source.load(tmp_path)
    model = unrolled_graph(src, 18)[0]
    grids = spike_grids(model)
    assert grids, "a spiking network has spike tensors"
    model.graph.output.extend([onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in grids])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(list(grids), {"input": exact_input(2, src.input_shape).numpy()})
    # Spike values are ≥ 0, so each pooling or addition on a spike tensor's path rounds it by at most
    # one float32 unit relative and no cancellation amplifies that: ≤ (such ops in the graph)·eps
    rounding = np.finfo(np.float32).eps * sum(n.op_type in POOLS_AND_SUMS for n in model.graph.node)
    for (tensor, grid), v in zip(grids.items(), values):
        units = v.astype(np.float64) / grid.step
        assert (np.abs(units - np.round(units)) <= rounding * units).all(), tensor
        assert units.min() >= 0 and units.max() <= grid.top * (1 + rounding), tensor
    spike_fed = [s for s in src.topo.synaptic if s.fed_by != ANALOG]
    exact = exact_overrides(model)  # keyed by tensor: a tensor may feed two convs (residual and shortcut)
    assert sum(n.input[0] in exact for n in model.graph.node if n.op_type in ("Conv", "Gemm")) >= len(spike_fed)


def test_calibration_reads_the_training_split_checked_against_the_model(tmp_path):
    _, ckpt = model_and_checkpoint("digits_convnet")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    src = Source.load(tmp_path)
    batches = list(iter(Calibration(src, None, samples=40).get_next, None))
    assert [b["input"].shape for b in batches] == [(32, 1, 8, 8), (8, 1, 8, 8)]
    again = list(iter(Calibration(src, None, samples=40).get_next, None))
    np.testing.assert_array_equal(again[0]["input"], batches[0]["input"])  # a fixed, seeded sample
    other = {**ckpt, "data": {**ckpt["data"], "input_shape": [3, 8, 8]}}
    with pytest.raises(DataError, match="expects \\(3, 8, 8\\) with 10; point --data-root at the data it was trained on"):
        Calibration(replace(src, ckpt=other), None)


def events(root=None) -> DataBundle:
    """Digits-shaped event frames, 4 per sample (the test checkpoints' T)."""
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset((torch.rand(40, 4, 1, 8, 8, generator=g) < 0.3).float(),
                                          torch.randint(0, 10, (40,), generator=g))
    return DataBundle(data, data, (1, 8, 8), [str(i) for i in range(10)], kind="event")


def test_event_input_is_calibrated_and_judged_frame_by_frame(tmp_path):
    if "events_for_int8_tests" not in DATASETS:  # registered here, so that test_datasets never sees it
        register_dataset("events_for_int8_tests")(events)
    _, ckpt = model_and_checkpoint("digits_convnet", dataset="events_for_int8_tests", kind="event")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    batches = Calibration(Source.load(tmp_path), None).inputs  # the 40 samples, time-major
    assert [b.shape for b in batches] == [(4, 32, 1, 8, 8), (4, 8, 1, 8, 8)]
    result = evaluate(onnx=export_checkpoint(tmp_path, form="int8").path)
    assert result.form == "int8" and result.parity.max_accuracy_drop == 0.005
    assert result.parity.verdict.spikes_compared == 40 * 4 * (4 * 64 + 8 * 64 + 16 * 16)


def test_the_float32_fallback_is_the_layer_measured_most_sensitive(tmp_path):
    """A random digits model's int8 predictions differ from float32's on many samples; with one
    layer allowed back in float32, the one chosen is the one whose fallback leaves the smallest
    logit error on the held-out samples, and the graph then computes that layer on float inputs."""
    _, ckpt = model_and_checkpoint("digits_convnet", width=1.0, exact=False)
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    src = Source.load(tmp_path)
    model = unrolled_graph(src, 19)[0]
    calibration, held_out = Calibration(src, None, 64), Calibration(src, None, 128, skip=64)
    int8, _, fallback = with_fallback(model, calibration, held_out, tmp_path, "MinMax", 0.0, 1)
    assert len(fallback.keep_float) == 1 and len(fallback.sensitivity) == 4  # three convs and the classifier
    assert fallback.keep_float[0] == min(fallback.sensitivity, key=fallback.sensitivity.get)
    assert fallback.keep_float[0] not in quantized_nodes(int8)
    module = quantize.float32_modules(src, fallback.keep_float)  # as the efficiency report names it
    assert len(module) == 1 and module[0] in [s.name for s in src.topo.synaptic]
    assert sorted(quantized_nodes(int8) + list(fallback.keep_float)) == sorted(fallback.sensitivity)
    predicted = logits(model, held_out).argmax(1)
    assert fallback.disagreement == float((logits(int8, held_out).argmax(1) != predicted).mean())
    assert held_out.samples == 128 and not np.array_equal(held_out.inputs[0][:64], calibration.inputs[0])


def test_a_kept_node_is_named_by_its_module_in_either_scope_form():
    """A snnkit body's nodes are scoped by the module's full path, body.NAME; a converted body's keep
    only each module's name inside its parent and number its calls: conv1.0, conv1.0_1, ... in order."""
    names = ["conv1.0", "layer1.0.conv1.0", "layer1.0.conv2.0", "layer1.1.conv1.0", "layer2.0.downsample.0.0", "fc"]
    assert quantize.node_module(["0.0", "6"], "/step_graph/body.0.0/Conv") == "0.0"
    assert quantize.node_module(["0.0", "6"], "/step_graph/body.6/Gemm") == "6"
    assert quantize.node_module(names, "/step_graph/conv1.0/Conv") == "conv1.0"
    assert quantize.node_module(names, "/step_graph/conv1.0_2/Conv") == "layer1.1.conv1.0"
    assert quantize.node_module(names, "/step_graph/conv2.0/Conv") == "layer1.0.conv2.0"
    assert quantize.node_module(names, "/step_graph/downsample.0.0/Conv") == "layer2.0.downsample.0.0"
    assert quantize.node_module(names, "/step_graph/fc/Gemm") == "fc"
    assert quantize.node_module(names, "/step_graph/conv1.0_3/Conv") is None  # no fourth conv1.0
