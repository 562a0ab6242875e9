"""The streaming graph: one step per call, membrane states in and out; T calls equal the
time-unrolled graph exactly, for every registered model, static and event input; the driver keeps
each step's logits for the early-exit curve. (Its parity verdict is in test_parity.py.)"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from deploy_helpers import T, exact_input, model_and_checkpoint
from snnkit.checkpoint import atomic_save
from snnkit.deploy.evaluate import check_graph
from snnkit.deploy.export import export_checkpoint
from snnkit.deploy.graph import deployable
from snnkit.deploy.metadata import META_KEYS
from snnkit.deploy.runtime import StreamingModel, load_onnx
from snnkit.models import MODELS


@pytest.mark.parametrize("name", MODELS.names())
def test_t_calls_equal_the_unrolled_graph_for_static_and_event_input(tmp_path, name):
    net, ckpt = model_and_checkpoint(name)
    ckpt["data"]["kind"] = "event"  # both graphs then take any sequence of frames
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    unrolled = load_onnx(export_checkpoint(tmp_path).path)
    streaming = load_onnx(export_checkpoint(tmp_path, form="streaming").path)
    assert isinstance(streaming, StreamingModel)
    shape = tuple(ckpt["data"]["input_shape"])
    image = exact_input(3, shape)
    for x_seq in (image.expand(T, *image.shape), torch.stack([exact_input(3, shape) for _ in range(T)])):
        logits, counts = unrolled.run(x_seq.numpy())
        streamed_logits, streamed_counts = streaming.run(x_seq.numpy())
        np.testing.assert_array_equal(streamed_counts, counts)
        np.testing.assert_array_equal(streamed_logits, logits)
        assert (counts.sum(0) > 0).all(), "every layer should fire, or the check is empty"


def test_metadata_names_the_states_and_the_graph_takes_them(tmp_path):
    _, ckpt = model_and_checkpoint("digits_convnet")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    result = export_checkpoint(tmp_path, form="streaming")
    assert result.path.name == "model_streaming.onnx" and result.layers == 3
    meta = load_onnx(result.path).meta
    assert meta["format"] == "streaming" and meta["T"] == T and meta["input_kind"] == "static"
    assert meta["computed_once"] == []  # every call computes its step from the input
    # digits_convnet at width 0.125: 4, 8 and 16 channels at 8×8, 8×8 and 4×4
    assert meta["states"] == [
        {"input": "state_0", "output": "next_state_0", "layer": "0.2", "shape": [4, 8, 8], "initial": 0.0},
        {"input": "state_1", "output": "next_state_1", "layer": "1.2", "shape": [8, 8, 8], "initial": 0.0},
        {"input": "state_2", "output": "next_state_2", "layer": "3.2", "shape": [16, 4, 4], "initial": 0.0}]
    model = onnx.load(result.path)
    assert {p.key for p in model.metadata_props} == {*META_KEYS, "states"}
    assert [i.name for i in model.graph.input] == ["input", "state_0", "state_1", "state_2"]
    assert [o.name for o in model.graph.output] == ["logits", "spike_counts", "next_state_0", "next_state_1",
                                                    "next_state_2"]


def test_the_driver_keeps_each_steps_logits_for_the_early_exit_curve(tmp_path):
    net, ckpt = model_and_checkpoint("digits_convnet")
    atomic_save(ckpt, tmp_path / "checkpoint.pt")
    model = load_onnx(export_checkpoint(tmp_path, form="streaming").path)
    x = exact_input(12, (1, 8, 8))
    with torch.no_grad():
        ref = net(x.expand(T, *x.shape))
    labels = ref.logits_seq[:2].mean(0).argmax(1)  # what the network predicts after two steps
    checked = check_graph(model, deployable(net, T, "static", probes=True),
                          [(x[:5], labels[:5]), (x[5:], labels[5:])], neurons=1)
    assert checked.verdict.passed and checked.verdict.identical == 1.0
    np.testing.assert_array_equal(checked.graph.spike_counts, ref.spike_counts.numpy())
    np.testing.assert_array_equal(checked.graph.step_logits, ref.logits_seq.numpy())
    curve = checked.graph.accuracy_per_step()
    assert len(curve) == T and curve[1] == 1.0
    assert curve[-1] == checked.graph.accuracy == float((ref.logits.argmax(1) == labels).float().mean())
    assert checked.twin.accuracy_per_step() is None  # the unrolled twin gives only the average
