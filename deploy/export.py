"""``snnkit export``: a checkpoint -> a time-unrolled ONNX graph with spike counts and metadata.

The exporter is named explicitly: torch's TorchScript exporter (``dynamo=False``). torch ≥ 2.9
defaults to the dynamo exporter, which needs ``onnxscript``; the TorchScript one needs nothing
more but announces itself as legacy with two DeprecationWarnings, which are silenced here by their
exact text and nowhere else.
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

import numpy as np
import onnx
import torch

from snnkit import __version__
from snnkit.checkpoint import load_checkpoint, model_from_checkpoint, nonfinite, resolve_checkpoint_path
from snnkit.errors import SnnkitError

from . import OPSET, OPSETS
from .costs import topology
from snnkit.files import atomic_write
from .graph import deployable
from .runtime import load_onnx

log = logging.getLogger("snnkit.deploy")

EXPORTER = "torch.onnx.export(dynamo=False), TorchScript"
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


def trace(module: torch.nn.Module, example: torch.Tensor, batch_axis: int, opset: int) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        for notice in LEGACY_NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=DeprecationWarning)
        torch.onnx.export(
            module, (example,), f, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=["input"], output_names=["logits", "spike_counts"],
            dynamic_axes={"input": {batch_axis: "batch"}, "logits": {0: "batch"}, "spike_counts": {0: "batch"}})
    return onnx.load_from_string(f.getvalue())


def export_checkpoint(checkpoint: str | Path, out: Optional[str | Path] = None, opset: int = OPSET) -> ExportResult:
    """Export the model in ``checkpoint`` (a file or a run directory) to ``out``
    (default: ``model.onnx`` beside the checkpoint) and check the result in onnxruntime."""
    if opset not in OPSETS:
        raise SnnkitError(f"--opset {opset} is not supported; choose one of {OPSETS.start}..{OPSETS.stop - 1}")
    ckpt_path = resolve_checkpoint_path(checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    if bad := nonfinite(ckpt["state_dict"]):
        raise SnnkitError(f"{ckpt_path} holds non-finite weights ({bad[0]}): its run diverged; export an "
                          "earlier checkpoint or retrain with a lower optim.lr")
    out = Path(out) if out is not None else ckpt_path.parent / ONNX_NAME
    data, T = ckpt["data"], int(ckpt["T"])
    kind, input_shape = data["kind"], tuple(data["input_shape"])
    net = model_from_checkpoint(ckpt)
    graph = deployable(net, T, kind)
    topo = topology(net, input_shape)

    batch_axis = 0 if kind == "static" else 1
    example = torch.randn(2, *input_shape) if kind == "static" else torch.randn(T, 2, *input_shape)
    with torch.no_grad():
        model = trace(graph, example, batch_axis, opset)
        expected = graph(example)
    meta = {
        "snnkit_version": __version__, "T": T, "neuron": ckpt["model"]["neuron"],
        "layer_names": topo.layer_names, "fan_out": topo.fan_out(), "topology": topo.as_dict(),
        "input_shape": list(input_shape), "input_kind": kind,
        "input_layout": "[B, C, H, W]" if kind == "static" else "[T, B, C, H, W]",
        "normalization": data["normalization"], "class_names": data["class_names"],
        "dataset": data["name"], "model": ckpt["model"], "opset": opset,
        "config_hash": config_hash(ckpt["config"]), "checkpoint": str(ckpt_path.resolve()),
        "exporter": EXPORTER,
    }
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    atomic_write(out, model.SerializeToString())
    check_forward(out, example, expected)
    log.debug("exported %s with %s, opset %d", out, EXPORTER, opset)
    return ExportResult(out, out.stat().st_size, len(model.graph.node), T, len(topo.layer_names), opset)


def check_forward(path: Path, example: torch.Tensor, expected: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Run the written file in onnxruntime; a gross mismatch with PyTorch is an exporter bug."""
    logits, counts = load_onnx(path).run(example.numpy())
    delta = float(np.abs(logits - expected[0].numpy()).max())
    if delta > 1e-3 or counts.shape != tuple(expected[1].shape):
        raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch right after export "
                           f"(logits max |Δ| {delta:.3g}); this is an snnkit bug, please report it")
