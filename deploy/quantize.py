"""``snnkit export --quantize int8``: the unrolled graph with 8-bit convolutions and linear layers.

onnxruntime's static quantization (QDQ format) on the simplified float32 graph (the unrolled form,
traced and simplified as :mod:`snnkit.deploy.export` does it, probes kept): weights int8 per
output channel, biases int32, the inputs and outputs of every Conv/Gemm uint8, calibrated (min-max)
on samples of the run's own training split. Everything else (the LIF membrane, the threshold, the
spike counts, the averaging of logits) stays float32.

Exact, by construction: a tensor that holds spikes (0 or 1), or spikes averaged over a k-element
pooling window (multiples of 1/k), or a sum of spike tensors, is given scale 1/k and zero point 0,
so every value it can take is an integer in uint8 and nothing is rounded. :func:`spike_grids` finds
these tensors in the graph itself. Rounded: the weights (per channel), analog inputs (the image),
and every layer's output current, which the LIF layers then see to 8 bits; so spikes near the
threshold move, and the int8 graph is judged on accuracy, not on spike identity
(:mod:`snnkit.deploy.evaluate`).
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                      quantize_static)

from snnkit.data import encode

from .evaluate import checked_dataset
from .export import EXPORTER, ExportResult, Source, save_onnx, unrolled_graph
from .runtime import load_onnx

log = logging.getLogger("snnkit.deploy")

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
INT8_OPSET = 19  # the lowest opset at which onnx.reference (and the ONNX spec's QDQ of today) runs DequantizeLinear
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32
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


def exact_overrides(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """Quantization parameters for the spike-valued inputs of the quantized ops: scale = the grid
    step, zero point 0, so each value is its integer count (only where that fits in uint8)."""
    grids = spike_grids(model)
    inputs = {n.input[0] for n in model.graph.node if n.op_type in QUANTIZED_OPS}
    return {name: [{"scale": np.array(g.step, np.float32), "zero_point": np.array(0, np.uint8)}]
            for name, g in grids.items() if name in inputs and g.top <= 255}


class Calibration(CalibrationDataReader):
    """Batches of the unrolled graph's input from a fixed, seeded sample of the training split."""

    def __init__(self, src: Source, data_root: Optional[str], samples: int = CALIBRATION_SAMPLES):
        train = checked_dataset(src.ckpt, data_root).train
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:samples]
        x = torch.stack([train[int(i)][0] for i in pick])  # [N, C, H, W], or [N, T, C, H, W] for events
        batches = x.split(CALIBRATION_BATCH)
        self.inputs = [b.numpy() if src.kind == "static" else encode(b, src.T, src.kind).numpy() for b in batches]
        self.it: Iterator[np.ndarray] = iter(self.inputs)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        x = next(self.it, None)
        return None if x is None else {"input": np.ascontiguousarray(x, np.float32)}

    def rewind(self) -> None:
        self.it = iter(self.inputs)


def quantize(model: onnx.ModelProto, calibration: Calibration, work: Path) -> tuple[onnx.ModelProto, int]:
    """(the int8 graph, how many spike tensors were pinned to their exact grid)."""
    onnx.save(model, work / "float32.onnx")
    quant_pre_process(str(work / "float32.onnx"), str(work / "prepared.onnx"), skip_symbolic_shape=True)
    prepared = onnx.load(work / "prepared.onnx")
    overrides = exact_overrides(prepared)
    quantize_static(
        str(work / "prepared.onnx"), str(work / "int8.onnx"), calibration, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8, extra_options={"TensorQuantOverrides": overrides})
    int8 = onnx.load(work / "int8.onnx")
    del int8.graph.value_info[:]  # shapes the quantizer inferred: onnxruntime infers them again
    only_used_domains(int8)
    return int8, len(overrides)


def only_used_domains(model: onnx.ModelProto) -> None:
    """Drop the opset domains the quantizer declares but no node uses (training, preview, com.microsoft, ...)."""
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def export_int8(src: Source, out: Path, opset: int, data_root: Optional[str] = None) -> ExportResult:
    """The int8 graph at ``opset``, raised to :data:`INT8_OPSET` where lower, so that every runtime
    that implements the standard's QuantizeLinear/DequantizeLinear loads it."""
    if opset < INT8_OPSET:
        log.info("int8 graph written at opset %d, not %d: DequantizeLinear as runtimes implement it", INT8_OPSET, opset)
        opset = INT8_OPSET
    model, twin = unrolled_graph(src, opset)
    calibration = Calibration(src, data_root)
    with tempfile.TemporaryDirectory() as tmp:
        int8, exact = quantize(model, calibration, Path(tmp))
    float_bytes = len(model.SerializeToString())
    meta = {**src.metadata("int8", opset, twin.computed_once),
            "exporter": f"{EXPORTER}, then onnxruntime.quantization.quantize_static (QDQ)",
            "quantization": {"weights": "int8 per output channel", "activations": "uint8, min-max calibrated",
                             "ops": list(QUANTIZED_OPS), "calibration_samples": sum(map(len, calibration.inputs)),
                             "exact_spike_tensors": exact, "float32_bytes": float_bytes}}
    save_onnx(int8, meta, out)
    check_int8(out, src.example(), twin.layer_names)
    size = out.stat().st_size
    return ExportResult(out, size, len(int8.graph.node), src.T, len(twin.layer_names), opset,
                        f"int8 weights per channel, {exact} spike inputs exact, {size / float_bytes:.2f}× the float32 graph")


def check_int8(path: Path, example: torch.Tensor, layer_names: list[str]) -> None:
    """The int8 graph runs, gives finite logits and counts its own spikes; its values are judged by
    `snnkit eval --onnx` on accuracy, since quantized weights legitimately move spikes."""
    seen = load_onnx(path).observe(example.numpy())
    counted = torch.stack([seen.spikes[layer].flatten(2).sum((0, 2)) for layer in layer_names], 1)
    if not (torch.isfinite(seen.logits).all() and torch.equal(counted.to(torch.int64), seen.spike_counts)):
        raise RuntimeError(f"{path}: the int8 graph gives non-finite logits or spike counts that are not its own "
                           "spikes right after export; this is an snnkit bug, please report it")
