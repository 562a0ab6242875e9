"""``snnkit export``: a checkpoint -> a time-unrolled ONNX graph with spike counts and metadata.

The exporter is named explicitly: torch's TorchScript exporter (``dynamo=False``), then onnxslim,
which removes the shape plumbing (constant folding, shape arithmetic, dead nodes). The dynamo
exporter (which needs ``onnxscript``) ends at the same graph but took 5-17× longer (README).
The TorchScript one announces itself as legacy with two DeprecationWarnings, which are silenced
here by their exact text and nowhere else.

The graph is traced with each LIF layer's membrane and spikes at every step as extra outputs, so
that those tensors carry stable names (:func:`~snnkit.deploy.graph.probe_name`) through the
simplifier; the written file has only ``logits`` and ``spike_counts`` as outputs, and parity
exposes the probes again to compare them step by step.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import onnx
import onnxslim
import torch

from snnkit import __version__
from snnkit.checkpoint import load_checkpoint, model_from_checkpoint, nonfinite, resolve_checkpoint_path
from snnkit.errors import SnnkitError

from . import OPSET, OPSETS
from .costs import topology
from snnkit.files import atomic_write
from .graph import TimeUnrolled, deployable
from .parity import verify
from .runtime import META_KEYS, OUTPUTS, load_onnx

log = logging.getLogger("snnkit.deploy")

EXPORTER = "torch.onnx.export(dynamo=False), TorchScript, then onnxslim"
LEGACY_NOTICES = (r"You are using the legacy TorchScript-based ONNX export",
                  r"The feature will be removed\. Please remove usage of this function")
ONNX_NAME = "model.onnx"


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size_bytes: int
    nodes: int
    T: int
    layers: int
    opset: int


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trace(graph: TimeUnrolled, example: torch.Tensor, opset: int, dynamo: bool = False) -> onnx.ModelProto:
    """The exporter's raw graph, every probe an output. ``dynamo`` selects torch's dynamo exporter
    instead (only for the comparison in bench/)."""
    batch_axis = 0 if graph.kind == "static" else 1
    names = OUTPUTS + graph.probe_names()
    with warnings.catch_warnings():
        for notice in LEGACY_NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=DeprecationWarning)
        if dynamo:
            return torch.onnx.export(
                graph, (example,), dynamo=True, opset_version=opset, input_names=["input"], output_names=names,
                dynamic_shapes=({batch_axis: torch.export.Dim("batch")},), verbose=False).model_proto
        f = io.BytesIO()
        torch.onnx.export(
            graph, (example,), f, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=["input"], output_names=names,
            dynamic_axes={"input": {batch_axis: "batch"}, **{n: {0: "batch"} for n in names}})
    return onnx.load_from_string(f.getvalue())


def simplified(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's graph, with only ``logits`` and ``spike_counts`` as outputs; probes keep their names."""
    model = onnxslim.slim(model)
    kept = [o for o in model.graph.output if o.name in OUTPUTS]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model


def export_checkpoint(checkpoint: str | Path, out: Optional[str | Path] = None, opset: int = OPSET,
                      T: Optional[int] = None) -> ExportResult:
    """Export the model in ``checkpoint`` (a file or a run directory) to ``out`` (default:
    ``model.onnx`` beside the checkpoint), unrolled for ``T`` steps (default: the trained T), and
    check the written file in onnxruntime."""
    if opset not in OPSETS:
        raise SnnkitError(f"--opset {opset} is not supported; choose one of {OPSETS.start}..{OPSETS.stop - 1}")
    if T is not None and T < 1:
        raise SnnkitError(f"--T {T} is not a number of time steps; give 1 or more")
    ckpt_path = resolve_checkpoint_path(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    if bad := nonfinite(ckpt["state_dict"]):
        raise SnnkitError(f"{ckpt_path} holds non-finite weights ({bad[0]}): its run diverged; export an "
                          "earlier checkpoint or retrain with a lower optim.lr")
    out = Path(out) if out is not None else ckpt_path.parent / ONNX_NAME
    data, T = ckpt["data"], int(T or ckpt["T"])
    kind, input_shape = data["kind"], tuple(data["input_shape"])
    if kind == "event" and T != ckpt["T"]:
        raise SnnkitError(f"--T {T} does not fit event data, which gives one frame per step: this model's data has "
                          f"{ckpt['T']} frames per sample, so export it at T = {ckpt['T']}")
    net = model_from_checkpoint(ckpt)
    graph = deployable(net, T, kind, probes=True)
    topo = topology(net, input_shape)

    example = torch.randn(2, *input_shape) if kind == "static" else torch.randn(T, 2, *input_shape)
    with torch.no_grad():
        model = simplified(trace(graph, example, opset))
    meta = {
        "snnkit_version": __version__, "T": T, "neuron": ckpt["model"]["neuron"],
        "layer_names": topo.layer_names, "topology": topo.as_dict(),
        "computed_once": list(graph.computed_once),
        "input_shape": list(input_shape), "input_kind": kind,
        "input_layout": "[B, C, H, W]" if kind == "static" else "[T, B, C, H, W]",
        "normalization": data["normalization"], "class_names": data["class_names"],
        "dataset": data["name"], "model": ckpt["model"], "opset": opset,
        "config_hash": config_hash(ckpt["config"]),
        "checkpoint": {"file": ckpt_path.name, "sha256": file_sha256(ckpt_path)},
        "exporter": EXPORTER,
    }
    onnx.helper.set_model_props(model, {k: json.dumps(meta[k]) for k in META_KEYS})
    onnx.checker.check_model(model, full_check=True)
    atomic_write(out, model.SerializeToString())
    check_forward(out, graph, example)
    log.debug("exported %s with %s, opset %d", out, EXPORTER, opset)
    return ExportResult(out, out.stat().st_size, len(model.graph.node), T, len(topo.layer_names), opset)


def check_forward(path: Path, graph: TimeUnrolled, example: torch.Tensor) -> None:
    """Run the written file in onnxruntime and judge it step by step against ``graph`` (parity's
    verdict: a NaN, a spike count or a membrane that rounding cannot explain is an exporter bug)."""
    verdict = verify(graph, example, load_onnx(path).observe(example.numpy())).verdict
    if not verdict.passed:
        raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch right after export "
                           f"({verdict.first_unexplained.describe()}); this is an snnkit bug, please report it")
