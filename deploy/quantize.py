"""``snnkit export --form int8``: the unrolled graph with 8-bit convolutions and linear layers.

onnxruntime's static quantization (QDQ format) on the simplified float32 graph (the unrolled form,
traced and simplified as :mod:`snnkit.deploy.writer` does it, probes kept): weights int8 per
output channel, biases int32, the inputs and outputs of every Conv/Gemm uint8, calibrated (min-max)
on samples of the run's own training split. Everything else (the LIF membrane, the threshold, the
spike counts, the averaging of logits) stays float32, and so do up to :data:`MAX_FLOAT_LAYERS`
conv/linear layers where the int8 predictions differ from float32's on more than the accuracy gate's
fraction of held-out training samples: the layers measured most sensitive (:func:`with_fallback`;
on the Fashion-MNIST model, the image-fed first conv). Written at opset ≥ :data:`INT8_OPSET`,
declaring only the domains its nodes use, so that onnx.reference loads it as onnxruntime does.

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
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

from snnkit.data import encode

from . import MAX_ACCURACY_DROP
from .source import Source, checked_dataset
from .writer import EXPORTER, ExportResult, save_onnx, unrolled_graph
from .runtime import load_onnx
from .structure import QUANTIZED_OPS, quantized_nodes, spike_grids

log = logging.getLogger("snnkit.deploy")

INT8_OPSET = 19  # the lowest opset at which onnx.reference (and the ONNX spec's QDQ of today) runs DequantizeLinear
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32
CALIBRATION_METHOD = "MinMax"
HELD_OUT_SAMPLES = 1024  # training samples after the calibration ones, on which the float32 fallback is chosen
MAX_FLOAT_LAYERS = 2


def exact_overrides(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """Quantization parameters for the spike-valued inputs of the quantized ops: scale = the grid
    step, zero point 0, so each value is its integer count (only where that fits in uint8)."""
    grids = spike_grids(model)
    inputs = {n.input[0] for n in model.graph.node if n.op_type in QUANTIZED_OPS}
    return {name: [{"scale": np.array(g.step, np.float32), "zero_point": np.array(0, np.uint8)}]
            for name, g in grids.items() if name in inputs and g.top <= 255}


class Calibration(CalibrationDataReader):
    """Batches of the unrolled graph's input from a fixed, seeded sample of the training split."""

    def __init__(self, src: Source, data_root: Optional[str], samples: int = CALIBRATION_SAMPLES, skip: int = 0):
        """``samples`` of the seeded shuffle of the training split, after its first ``skip`` (from
        its start again where the split has no more)."""
        train = checked_dataset(src.ckpt, data_root).train
        if skip >= len(train):
            log.warning("int8: the training split has only %d samples; the held-out ones repeat the calibration's",
                        len(train))
            skip = 0
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[skip:skip + samples]
        x = torch.stack([train[int(i)][0] for i in pick])  # [N, C, H, W], or [N, T, C, H, W] for events
        batches = x.split(CALIBRATION_BATCH)
        self.samples = len(x)
        self.inputs = [b.numpy() if src.kind == "static" else encode(b, src.T, src.kind).numpy() for b in batches]
        self.it: Iterator[np.ndarray] = iter(self.inputs)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        x = next(self.it, None)
        return None if x is None else {"input": np.ascontiguousarray(x, np.float32)}

    def rewind(self) -> None:
        self.it = iter(self.inputs)


def quantize(model: onnx.ModelProto, calibration: Calibration, work: Path, method: str = "MinMax",
             keep_float: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, int]:
    """(the int8 graph, how many spike tensors were pinned to their exact grid): activations
    calibrated by ``method`` (a :class:`CalibrationMethod` name), the nodes ``keep_float`` left in float32."""
    onnx.save(model, work / "float32.onnx")
    quant_pre_process(str(work / "float32.onnx"), str(work / "prepared.onnx"), skip_symbolic_shape=True)
    prepared = onnx.load(work / "prepared.onnx")
    overrides = exact_overrides(prepared)
    quantize_static(
        str(work / "prepared.onnx"), str(work / "int8.onnx"), calibration, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod[method],
        nodes_to_exclude=list(keep_float), extra_options={"TensorQuantOverrides": overrides})
    calibration.rewind()
    int8 = onnx.load(work / "int8.onnx")
    del int8.graph.value_info[:]  # shapes the quantizer inferred: onnxruntime infers them again
    only_used_domains(int8)
    return int8, len(overrides)


def logits(model: onnx.ModelProto, data: Calibration) -> np.ndarray:
    """``model``'s logits on every batch of ``data``, in onnxruntime."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": np.ascontiguousarray(x, np.float32)})[0]
                           for x in data.inputs])


@dataclass(frozen=True)
class Fallback:
    """The layers an int8 graph keeps in float32, chosen on held-out training samples."""

    keep_float: tuple[str, ...]
    disagreement: float  # the fraction of held-out samples whose int8 prediction differs from float32's
    sensitivity: dict[str, float]  # per node: mean |Δlogits| against float32 with that node alone in float32


def with_fallback(model: onnx.ModelProto, calibration: Calibration, held_out: Calibration, work: Path,
                  method: str, budget: float, most: int) -> tuple[onnx.ModelProto, int, Fallback]:
    """The int8 graph, with up to ``most`` layers left in float32 until its predictions on
    ``held_out`` differ from float32's on at most a ``budget`` fraction of them (which bounds its
    accuracy drop there). The layers go back to float32 in the order of their measured sensitivity:
    how much the logits' error shrinks when that layer alone is left in float32."""
    reference = logits(model, held_out)
    predicted = reference.argmax(1)

    def measured(keep: tuple[str, ...]) -> tuple[onnx.ModelProto, int, float, float]:
        int8, exact = quantize(model, calibration, work, method, keep)
        out = logits(int8, held_out)
        return int8, exact, float(np.abs(out - reference).mean()), float((out.argmax(1) != predicted).mean())

    int8, exact, _, disagreement = measured(())
    if disagreement <= budget or most == 0:
        return int8, exact, Fallback((), disagreement, {})
    sensitivity = {n: measured((n,))[2] for n in quantized_nodes(int8)}
    keep: tuple[str, ...] = ()
    for node in sorted(sensitivity, key=sensitivity.get)[:most]:
        keep += (node,)
        int8, exact, _, disagreement = measured(keep)
        log.info("int8: %s kept in float32, predictions differ from float32 on %.2f %% of held-out samples",
                 ", ".join(keep), 100 * disagreement)
        if disagreement <= budget:
            break
    return int8, exact, Fallback(keep, disagreement, sensitivity)


def node_module(names: list[str], node: str) -> str | None:
    """The synaptic module (of ``names``, in the network's order) that a graph node computes, from the
    exporter's scope ``/step_graph/SCOPE/...``. A snnkit body's modules are scoped by their full
    path, ``body.NAME``. A converted body's are not: the exporter keeps only a module's name inside
    its parent (``conv1.0`` for ``conv1.0`` and every ``layerI.J.conv1.0``) and numbers the calls
    of that name in the graph's order (``conv1.0``, ``conv1.0_1``, ...), so the k-th such node is the
    k-th module named ``LOCAL`` or ``....LOCAL``."""
    scope = node.strip("/").split("/")
    segment = scope[1] if scope[0] == "step_graph" and len(scope) > 2 else scope[0]
    local, k = re.fullmatch(r"(.+?)(?:_(\d+))?", segment).groups()
    if local.startswith("body."):
        name = local.removeprefix("body.")
        return name if name in names else None
    same = [n for n in names if n == local or n.endswith("." + local)]
    k = int(k or 0)
    return same[k] if k < len(same) else None


def float32_modules(src: Source, nodes: tuple[str, ...]) -> list[str]:
    """The synaptic modules (as the efficiency report names them) that graph ``nodes`` compute, in
    the network's order; a module of which any call (time step) is kept in float32 is listed once."""
    names = [s.name for s in src.topo.synaptic]
    found = {node: node_module(names, node) for node in nodes}
    if None in found.values():
        unnamed = [node for node, name in found.items() if name is None]
        raise RuntimeError(f"int8: the nodes {unnamed} name no synaptic module; this is an snnkit bug, "
                           "please report it")
    return [name for name in names if name in found.values()]


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
    held_out = Calibration(src, data_root, HELD_OUT_SAMPLES, skip=CALIBRATION_SAMPLES)
    with tempfile.TemporaryDirectory() as tmp:
        int8, exact, fallback = with_fallback(model, calibration, held_out, Path(tmp), CALIBRATION_METHOD,
                                              MAX_ACCURACY_DROP, MAX_FLOAT_LAYERS)
    float_bytes = len(model.SerializeToString())
    meta = {**src.metadata("int8", opset, twin.computed_once, out,
                           f"{EXPORTER}, then onnxruntime.quantization.quantize_static (QDQ)"),
            "quantization": {"weights": "int8 per output channel",
                             "activations": f"uint8, {CALIBRATION_METHOD} calibrated",
                             "ops": list(QUANTIZED_OPS), "calibration_samples": calibration.samples,
                             "exact_spike_tensors": exact, "float32_bytes": float_bytes,
                             "float32_layers": float32_modules(src, fallback.keep_float),
                             "held_out_samples": held_out.samples,
                             "held_out_disagreement": fallback.disagreement, "sensitivity": fallback.sensitivity}}
    save_onnx(int8, meta, out)
    check_int8(out, src.example(), twin.layer_names)
    size = out.stat().st_size
    return ExportResult(out, size, len(int8.graph.node), src.T, len(twin.layer_names), opset,
                        f"int8 weights per channel, {exact} spike inputs exact, {len(fallback.keep_float)} layers in "
                        f"float32, {size / float_bytes:.2f}× the float32 graph")


def check_int8(path: Path, example: torch.Tensor, layer_names: list[str]) -> None:
    """The int8 graph runs, gives finite logits and counts its own spikes; its values are judged by
    `snnkit eval --onnx` on accuracy, since quantized weights legitimately move spikes."""
    seen = load_onnx(path).observe(example.numpy())
    counted = torch.stack([seen.spikes[layer].flatten(2).sum((0, 2)) for layer in layer_names], 1)
    if not (torch.isfinite(seen.logits).all() and torch.equal(counted.to(torch.int64), seen.spike_counts)):
        raise RuntimeError(f"{path}: the int8 graph gives non-finite logits or spike counts that are not its own "
                           "spikes right after export; this is an snnkit bug, please report it")
