"""A graph is judged by what it is, not only by what its metadata says: every metadata value snnkit
reads is checked (type and range) before use, a label its nodes contradict is refused, and a
streaming state of another batch than the input is refused, by snnkit's runner and by the graph
itself in plain onnxruntime. Each refusal is one line through the CLI, exit 2, no traceback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deploy_helpers import invoke
from snnkit.deploy.runtime import load_onnx
from snnkit.errors import SnnkitError


def tampered(path: Path, **values) -> str:
    """``path`` with the metadata ``values`` (JSON-encoded; None removes the key) written over its own."""
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: json.dumps(v) for k, v in values.items() if v is not None})
    props = {k: v for k, v in props.items() if values.get(k, 0) is not None}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, path)
    return str(path)


def states_of(path: Path) -> list[dict]:
    return json.loads({p.key: p.value for p in onnx.load(path).metadata_props}["states"])


UNROLLED = {  # what is written over a good unrolled graph's metadata -> the words of the refusal
    "T zero": ({"T": 0}, "'T' is 0, not a whole number from 1 to 4,096"),
    "T negative": ({"T": -3}, "'T' is -3, not a whole number from 1 to 4,096"),
    "T a string": ({"T": "4"}, "'T' is \"4\", not a whole number from 1 to 4,096"),
    "T beyond any run": ({"T": 10 ** 9}, "'T' is 1000000000, not a whole number from 1 to 4,096"),
    "T fractional": ({"T": 4.0}, "'T' is 4.0, not a whole number"),
    "T missing": ({"T": None}, "is an snnkit unrolled graph whose metadata lacks 'T'"),
    "unknown form": ({"format": "int4"}, "'format' is \"int4\", not one of 'unrolled', 'streaming', 'int8'"),
    "unknown input kind": ({"input_kind": "audio"}, "'input_kind' is \"audio\", not one of 'static', 'event'"),
    "layer names a string": ({"layer_names": "0.2"}, "'layer_names' is \"0.2\", not a list"),
    "layer names of numbers": ({"layer_names": [0, 1]}, "not a list whose every item is a non-empty string"),
    "a checkpoint path with folders": (
        {"checkpoint": {"file": "../../etc/passwd", "sha256": "0" * 64}},
        "'checkpoint' is {\"file\": \"../../etc/passwd\", \"sha256\"..., not an object whose 'file' is a file name"),
    "no checkpoint named": ({"checkpoint": None}, "has snnkit metadata that names no checkpoint; give the checkpoint"),
    "an absolute checkpoint path": ({"checkpoint": {"file": "c.pt", "sha256": "0" * 64, "relative": "/etc/c.pt"}},
                                    "not an object whose 'relative' is a relative path"),
    "a checkpoint digest that is not one": ({"checkpoint": {"file": "checkpoint.pt", "sha256": "abc"}},
                                            "not an object whose 'sha256' is a SHA-256 in hex"),
    "computed once: a module the model lacks": (
        {"computed_once": ["9.9"]}, "'computed_once' names '9.9', which this checkpoint's model does not have"),
    "labelled int8 but float32": ({"format": "int8", "quantization": {"float32_layers": []}},
                                  "is labelled an snnkit int8 graph but its nodes are those of the unrolled form"),
    "labelled streaming but takes no states": (
        {"format": "streaming", "states": [{"input": "s", "output": "n", "layer": "0.2", "shape": [1],
                                            "initial": 0.0}]},
        "is labelled an snnkit streaming graph but its nodes are those of the unrolled form"),
    "metadata of another tool": ({"layer_names": ["block.0.lif"]},
                                 "was not exported from this checkpoint (its spiking layers differ)"),
}


@pytest.mark.parametrize("case", UNROLLED)
def test_a_tampered_unrolled_graph_is_refused_in_one_line(run, case):
    assert invoke("export").exit_code == 0
    values, message = UNROLLED[case]
    result = invoke("eval", "--onnx", tampered(run / "model.onnx", **values))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


def broken_states(states: list[dict]) -> dict[str, object]:
    first = {k: v for k, v in states[0].items() if k != "output"}
    return {
        "states not a list": ({"states": {"input": "state_0"}}, "'states' is {\"input\": \"state_0\"}, not a list"),
        "a state without its output": ({"states": [first, *states[1:]]},
                                       "not a list whose every item is an object whose 'output' is present"),
        "a state of another shape": ({"states": [{**states[0], "shape": [5, 8, 8]}, *states[1:]]},
                                     "gives state 'state_0' the shape [5, 8, 8] but the graph takes"),
        "a state missing": ({"states": states[1:]}, "does not name one state per spiking layer"),
        "a state with a non-finite start": ({"states": [{**states[0], "initial": "nan"}, *states[1:]]},
                                            "whose 'initial' is a finite number"),
        "no states at all": ({"states": None}, "is an snnkit streaming graph whose metadata lacks 'states'"),
    }


@pytest.mark.parametrize("case", list(broken_states([{}])))
def test_a_tampered_streaming_graph_is_refused_in_one_line(run, case):
    assert invoke("export", "--form", "streaming").exit_code == 0
    path = run / "model_streaming.onnx"
    values, message = broken_states(states_of(path))[case]
    result = invoke("eval", "--onnx", tampered(path, **values))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert message in result.stderr, result.stderr


@pytest.fixture
def streaming(run) -> Path:
    assert invoke("export", "--form", "streaming").exit_code == 0
    return run / "model_streaming.onnx"


def test_the_runner_refuses_a_state_of_another_batch_naming_it(streaming):
    model = load_onnx(streaming)
    frame = np.zeros((4, 1, 8, 8), np.float32)
    states = {**model.initial_states(4), "state_1": model.initial_states(1)["state_1"]}
    with pytest.raises(SnnkitError, match=r"state 'state_1' \(layer 1.2\) is \[1, .*\] but a frame of batch 4 "
                                          r"needs \[4, .*\]; start from initial_states\(4\)"):
        model.step(frame, states)
    outputs, following = model.step(frame, model.initial_states(4))
    assert [o.shape[0] for o in outputs] == [4, 4] and all(v.shape[0] == 4 for v in following.values())


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL],
                         ids=["disabled", "all"])
@pytest.mark.parametrize("state_batch", [1, 3])
def test_the_graph_itself_refuses_a_state_of_another_batch_in_plain_onnxruntime(streaming, state_batch, level):
    """No broadcasting of a batch-1 state over a batch of 4, whatever onnxruntime's optimisations:
    it stops in the node named after the state."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(str(streaming), options, providers=["CPUExecutionProvider"])
    states = states_of(streaming)
    feed = {"input": np.zeros((4, 1, 8, 8), np.float32),
            **{s["input"]: np.zeros((4 if i else state_batch, *s["shape"]), np.float32) for i, s in enumerate(states)}}
    with pytest.raises(Exception, match="state_0 must have the batch of input"):
        session.run(None, feed)
    feed["state_0"] = np.zeros((4, *states[0]["shape"]), np.float32)
    assert session.run(None, feed)[0].shape[0] == 4
