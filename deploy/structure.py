"""What a graph is, read off its nodes rather than its metadata: which tensors hold spikes (and
counts of them), which layers compute on int8, and so which form it is. Metadata says what a graph
claims to be; :func:`form_of_structure` says what it is, and the runtime refuses a graph whose
two answers differ (a float32 graph labelled int8 must not be judged on the int8 gate)."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Optional

import numpy as np
import onnx

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
SPIKE_MAKERS = ("GreaterOrEqual", "Greater", "LessOrEqual", "Less", "Equal")  # booleans cast to 0/1
SAME_VALUES = ("Unsqueeze", "Squeeze", "Reshape", "Flatten", "Gather", "Slice", "Transpose", "Identity",
               "Expand", "Tile", "Concat", "Split", "MaxPool")  # outputs take values of their (first) input


@dataclass(frozen=True)
class Grid:
    """A tensor whose values are the multiples 0, step, 2·step, …, top·step (integers ``0..top``)."""

    step: float
    top: int


def spike_grids(model: onnx.ModelProto) -> dict[str, Grid]:
    """Every tensor that holds spikes or counts of them, found by following the graph from the
    ``Cast`` of each comparison (a spike) through ops that keep, pool or add such values."""
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    producer = {o: n for n in model.graph.node for o in n.output}
    grids: dict[str, Grid] = {}
    for node in model.graph.node:  # topologically sorted, as ONNX requires
        ins = [grids.get(i) for i in node.input]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        out: Optional[Grid] = None
        if node.op_type == "Cast" and getattr(producer.get(node.input[0]), "op_type", None) in SPIKE_MAKERS:
            out = Grid(1.0, 1)
        elif node.op_type in SAME_VALUES and ins and ins[0] is not None:
            data = [g for g in ins if g is not None] if node.op_type == "Concat" else [ins[0]]
            if node.op_type != "Concat" or len(data) == len(ins) and len({g.step for g in data}) == 1:
                out = Grid(data[0].step, max(g.top for g in data))
        elif node.op_type == "AveragePool" and ins[0] is not None and not any(attrs.get("pads", [])):
            k = prod(attrs["kernel_shape"])
            out = Grid(ins[0].step / k, ins[0].top * k)
        elif node.op_type == "GlobalAveragePool" and ins[0] is not None:
            k = prod(shapes.get(node.input[0], [0, 0, 0])[2:])
            out = Grid(ins[0].step / k, ins[0].top * k) if k > 0 else None
        elif node.op_type in ("Add", "Sum") and ins and all(ins) and len({g.step for g in ins}) == 1:
            out = Grid(ins[0].step, sum(g.top for g in ins))
        if out is not None:
            grids.update({o: out for o in node.output})
    return grids



def quantized_nodes(int8: onnx.ModelProto) -> list[str]:
    """The Conv/Gemm/MatMul nodes of an int8 graph that compute on dequantized int8 inputs."""
    producer = {o: n.op_type for n in int8.graph.node for o in n.output}
    return [n.name for n in int8.graph.node
            if n.op_type in QUANTIZED_OPS and producer.get(n.input[0]) == "DequantizeLinear"]


def inexact_spike_encodings(int8: onnx.ModelProto) -> list[str]:
    """The spike-valued tensors (at most 255 levels) that an int8 graph quantizes with another scale
    than their grid step or a nonzero zero point: each of them rounds what should be exact."""
    grids = spike_grids(int8)
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    inexact = []
    for node in int8.graph.node:
        grid = grids.get(node.input[0]) if node.op_type == "QuantizeLinear" else None
        if grid is None or grid.top > 255:
            continue
        scale = constants.get(node.input[1])
        zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        if scale is None or zero is None or not np.all(scale == np.float32(grid.step)) or np.any(zero):
            inexact.append(node.input[0])
    return inexact


def form_of_structure(model: onnx.ModelProto) -> str:
    """``"int8"`` when convolutions or linear layers compute on dequantized int8 values, else
    ``"streaming"`` when the graph takes states beside its input, else ``"unrolled"``."""
    if quantized_nodes(model):
        return "int8"
    return "streaming" if len(model.graph.input) > 1 else "unrolled"
