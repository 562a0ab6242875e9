"""``snnkit export``: a checkpoint -> a time-unrolled ONNX graph with spike counts and metadata,
or another form of it (:func:`export_checkpoint`'s ``form``; each form lives in its own module).

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
from snnkit.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint_path
from snnkit.errors import SnnkitError
from snnkit.files import atomic_write
from snnkit.spiking import SpikingNet

from . import OPSET, OPSETS
from .costs import Topology, topology
from .graph import deployable
from .runtime import OUTPUTS, load_onnx

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
    opset: Optional[int]  # None for NIR
    detail: str = ""  # what the form adds to the one-line summary


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int, inputs: dict[str, int],
          outputs: list[str]) -> onnx.ModelProto:
    """``inputs`` maps each input name to its batch axis; outputs are batch-first."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        for notice in LEGACY_NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=DeprecationWarning)
        torch.onnx.export(
            module, example, f, dynamo=False, opset_version=opset, do_constant_folding=True,
            input_names=list(inputs), output_names=outputs,
            dynamic_axes={**{name: {axis: "batch"} for name, axis in inputs.items()},
                          **{name: {0: "batch"} for name in outputs}})
    return onnx.load_from_string(f.getvalue())


@dataclass(frozen=True)
class Source:
    """What every export form starts from: the checkpoint's model on CPU in float32, and its facts."""

    path: Path
    ckpt: dict
    net: SpikingNet
    T: int
    kind: str
    input_shape: tuple[int, ...]
    topo: Topology

    @classmethod
    def load(cls, checkpoint: str | Path) -> "Source":
        path = resolve_checkpoint_path(checkpoint)
        ckpt = load_checkpoint(path)
        net = model_from_checkpoint(ckpt).to("cpu", torch.float32).eval()
        input_shape = tuple(ckpt["data"]["input_shape"])
        return cls(path, ckpt, net, int(ckpt["T"]), ckpt["data"]["kind"], input_shape, topology(net, input_shape))

    def metadata(self, opset: Optional[int]) -> dict:
        """The facts every exported file carries (JSON-serialisable)."""
        data = self.ckpt["data"]
        return {
            "snnkit_version": __version__, "T": self.T, "neuron": self.ckpt["model"]["neuron"],
            "layer_names": self.topo.layer_names, "fan_out": self.topo.fan_out(), "topology": self.topo.as_dict(),
            "input_shape": list(self.input_shape), "input_kind": self.kind,
            "input_layout": "[B, C, H, W]" if self.kind == "static" else "[T, B, C, H, W]",
            "normalization": data["normalization"], "class_names": data["class_names"],
            "dataset": data["name"], "model": self.ckpt["model"], "opset": opset,
            "config_hash": config_hash(self.ckpt["config"]), "checkpoint": str(self.path.resolve()),
            "exporter": EXPORTER,
        }


def save_onnx(model: onnx.ModelProto, meta: dict, out: Path) -> None:
    """Attach ``meta`` as JSON ``metadata_props``, check the graph fully and write it atomically."""
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    atomic_write(out, model.SerializeToString())


def unrolled_onnx(src: Source, opset: int) -> tuple[onnx.ModelProto, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The time-unrolled graph, traced in memory, with an example input and PyTorch's output on it."""
    graph = deployable(src.net, src.T, src.kind)
    batch_axis = 0 if src.kind == "static" else 1
    example = torch.randn(2, *src.input_shape) if src.kind == "static" else torch.randn(src.T, 2, *src.input_shape)
    with torch.no_grad():
        return trace(graph, (example,), opset, {"input": batch_axis}, OUTPUTS), example, graph(example)


def export_unrolled(src: Source, out: Path, opset: int, data_root: Optional[str] = None) -> ExportResult:
    """The time-unrolled graph: a whole sample in, time-averaged logits and spike counts out."""
    model, example, expected = unrolled_onnx(src, opset)
    save_onnx(model, src.metadata(opset), out)
    check_forward(out, example, expected)
    return ExportResult(out, out.stat().st_size, len(model.graph.node), src.T, len(src.topo.layer_names), opset)


def export_checkpoint(checkpoint: str | Path, out: Optional[str | Path] = None, opset: int = OPSET,
                      form: str = "unrolled", data_root: Optional[str] = None) -> ExportResult:
    """Export the model in ``checkpoint`` (a file or a run directory) as ``form`` to ``out``
    (default: beside the checkpoint) and check the result where it is made. ``data_root``: where
    the training data is, for forms calibrated on it (int8)."""
    from . import nir_export, quantize, streaming

    forms = {"unrolled": (export_unrolled, ONNX_NAME), "streaming": (streaming.export_streaming, streaming.NAME),
             "int8": (quantize.export_int8, quantize.NAME), "nir": (nir_export.export_nir, nir_export.NAME)}
    if form not in forms:
        raise SnnkitError(f"unknown export form {form!r}; choose one of {', '.join(forms)}")
    if opset not in OPSETS:
        raise SnnkitError(f"--opset {opset} is not supported; choose one of {OPSETS.start}..{OPSETS.stop - 1}")
    src = Source.load(checkpoint)
    export, name = forms[form]
    result = export(src, Path(out) if out is not None else src.path.parent / name, opset, data_root)
    log.debug("exported %s (%s) with %s, opset %d", result.path, form, EXPORTER, opset)
    return result


def check_forward(path: Path, example: torch.Tensor, expected: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Run the written file in onnxruntime; a gross mismatch with PyTorch is an exporter bug."""
    logits, counts = load_onnx(path).run(example.numpy())
    delta = float(np.abs(logits - expected[0].numpy()).max())
    if delta > 1e-3 or counts.shape != tuple(expected[1].shape):
        raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch right after export "
                           f"(logits max |Δ| {delta:.3g}); this is an snnkit bug, please report it")
