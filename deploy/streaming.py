"""The streaming form: one step per call, the membrane states as inputs and outputs
(:class:`~snnkit.deploy.graph.OneStep`); called T times it computes the unrolled graph's steps."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import torch

from .graph import one_step
from .runtime import OUTPUTS
from .source import Source
from .writer import EXPORTER, ExportResult, check_forward, probed_graph, save_onnx


def export_streaming(src: Source, out: Path, opset: int, data_root: Optional[str] = None) -> ExportResult:
    """One step per call; the metadata names each state tensor, its per-sample shape and initial value."""
    step = one_step(src.net, probes=True)
    shapes = step.state_shapes(src.input_shape)
    states = [{"input": f"state_{i}", "output": f"next_state_{i}", "layer": layer, "shape": list(shape),
               "initial": 0.0} for i, (layer, shape) in enumerate(zip(step.layer_names, shapes))]
    example = (torch.randn(2, *src.input_shape), *[torch.zeros(2, *shape) for shape in shapes])
    model = batch_checked(probed_graph(step, example, opset, {"input": 0, **{s["input"]: 0 for s in states}},
                                       OUTPUTS + [s["output"] for s in states]), states)
    meta = {**src.metadata("streaming", opset, (), out, EXPORTER), "input_layout": "[B, C, H, W], one step per call",
            "states": states}
    save_onnx(model, meta, out)
    check_forward(out, src.twin(), src.example())
    return ExportResult(out, out.stat().st_size, len(model.graph.node), src.T, len(states), opset,
                        f"one step per call, {len(states)} state tensors")


def batch_checked(model: onnx.ModelProto, states: list[dict]) -> onnx.ModelProto:
    """The streaming graph with each state passed through a concatenation with the input (both
    flattened per sample) before use, so that onnxruntime refuses a state of another batch, in a node
    named after it, where the charge would otherwise broadcast a batch-1 state over the whole batch.
    A reshape or a reshape into shapes taken from the input is not enough: onnxruntime's optimizer
    rewrites it to copy the state's own batch. Concatenating, slicing and reshaping move no value."""
    make = onnx.helper.make_node
    guards = [make("Flatten", ["input"], ["input_per_sample"], name="input_per_sample", axis=1)]
    for s in states:
        name, size = s["input"], int(np.prod(s["shape"]))
        model.graph.initializer.extend(onnx.numpy_helper.from_array(np.array(v, np.int64), f"{name}_{k}")
                                       for k, v in (("start", [0]), ("stop", [size]), ("axis", [1])))
        guards += [make("Flatten", [name], [f"{name}_per_sample"], name=f"{name}_per_sample", axis=1),
                   make("Concat", [f"{name}_per_sample", "input_per_sample"], [f"{name}_beside_input"],
                        name=f"{name} must have the batch of input", axis=1),
                   make("Slice", [f"{name}_beside_input", f"{name}_start", f"{name}_stop", f"{name}_axis"],
                        [f"{name}_flat"], name=f"{name}_flat"),
                   make("Shape", [name], [f"{name}_shape"], name=f"{name}_shape"),
                   make("Reshape", [f"{name}_flat", f"{name}_shape"], [f"{name}_checked"], name=f"{name}_checked")]
        for node in model.graph.node:
            node.input[:] = [f"{name}_checked" if i == name else i for i in node.input]
    nodes = guards + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
