"""``snnkit export``: a checkpoint -> a checked graph with spike counts and metadata, in one of four
forms (:func:`export_checkpoint`'s ``form``):

- ``unrolled`` (default): a whole sample per call, all T steps inside (:class:`~snnkit.deploy.graph.TimeUnrolled`);
- ``streaming``: one step per call, the membrane states as inputs and outputs (:class:`~snnkit.deploy.graph.OneStep`);
- ``int8``: the unrolled graph quantized (:mod:`snnkit.deploy.quantize`);
- ``nir``: the network as a NIR graph for neuromorphic tool chains (:mod:`snnkit.deploy.nir_export`).

The exporter is named explicitly: torch's TorchScript exporter (``dynamo=False``), then onnxslim,
which removes the shape plumbing (constant folding, shape arithmetic, dead nodes). The dynamo
exporter (which needs ``onnxscript``) ends at the same graph but took 5-17× longer (docs/deploy.md, Exporter).
The TorchScript one announces itself as legacy with two DeprecationWarnings, which are silenced
here by their exact text and nowhere else.

A graph is traced with each LIF layer's membrane and spikes at every step as extra outputs, so
that those tensors carry stable names (:func:`~snnkit.deploy.graph.probe_name`) through the
simplifier; the written file has only its own outputs, and parity exposes the probes again to
compare them step by step. Every form is checked where it is made.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import onnx
import onnxslim
import torch

from snnkit import __version__
from snnkit.checkpoint import load_checkpoint, model_from_checkpoint, nonfinite, resolve_checkpoint_path
from snnkit.digest import config_hash
from snnkit.errors import SnnkitError
from snnkit.files import atomic_write, staged
from snnkit.spiking import SpikingNet

from . import MAX_T, OPSET, OPSETS
from .costs import Topology, topology
from .graph import TimeUnrolled, deployable, one_step
from .outputs import check_output
from .parity import verify
from .metadata import FORM_KEYS, META_KEYS
from .runtime import OUTPUTS, load_onnx

log = logging.getLogger("snnkit.deploy")

EXPORTER = "torch.onnx.export(dynamo=False), TorchScript, then onnxslim"
LEGACY_NOTICES = (r"You are using the legacy TorchScript-based ONNX export",
                  r"The feature will be removed\. Please remove usage of this function")
FILE_NAMES = {"unrolled": "model.onnx", "streaming": "model_streaming.onnx", "int8": "model_int8.onnx",
              "nir": "model.nir"}


class ExportUnsupported(SnnkitError):
    """An operator the exporter has no ONNX form for, at the shapes it is traced with."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size_bytes: int
    nodes: int
    T: int
    layers: int
    opset: Optional[int]  # None for NIR
    detail: str = ""  # what the form adds to the one-line summary


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Source:
    """What every form starts from: the checkpoint, its model on CPU in float32, the T to run."""

    path: Path
    ckpt: dict
    net: SpikingNet
    T: int
    kind: str
    input_shape: tuple[int, ...]
    topo: Topology

    @classmethod
    def load(cls, checkpoint: str | Path, T: Optional[int] = None) -> "Source":
        """The checkpoint (a file or a run directory), to run for ``T`` steps (default: the trained T)."""
        if T is not None and not 1 <= T <= MAX_T:
            raise SnnkitError(f"--T {T} is not a number of time steps snnkit exports; give 1 to {MAX_T:,}")
        path = resolve_checkpoint_path(checkpoint)
        ckpt = load_checkpoint(path)
        if bad := nonfinite(ckpt["state_dict"]):
            raise SnnkitError(f"{path} holds non-finite weights ({bad[0]}): its run diverged; export an "
                              "earlier checkpoint or retrain with a lower optim.lr")
        kind, trained = ckpt["data"]["kind"], int(ckpt["T"])
        if kind == "event" and T is not None and T != trained:
            raise SnnkitError(f"--T {T} does not fit event data, which gives one frame per step: this model's data "
                              f"has {trained} frames per sample, so export it at T = {trained}")
        net = model_from_checkpoint(ckpt).to("cpu", torch.float32).eval()
        input_shape = tuple(ckpt["data"]["input_shape"])
        return cls(path, ckpt, net, int(T or trained), kind, input_shape, topology(net, input_shape))

    def twin(self) -> TimeUnrolled:
        """The unrolled network with its probes: what every float32 form is judged against."""
        return deployable(self.net, self.T, self.kind, probes=True)

    def example(self, batch: int = 2) -> torch.Tensor:
        """Random samples in the unrolled graph's input layout."""
        return torch.randn(batch, *self.input_shape) if self.kind == "static" else torch.randn(self.T, batch,
                                                                                                *self.input_shape)

    def metadata(self, form: str, opset: Optional[int], computed_once: Iterable[str], out: Path) -> dict:
        """The facts every exported file carries (JSON values): ``computed_once`` names the modules
        the graph computes once per sample; the checkpoint is named by its SHA-256, its size and its
        path relative to ``out``'s folder (never an absolute path), so eval finds it wherever both go."""
        data = self.ckpt["data"]
        return {
            "snnkit_version": __version__, "format": form, "T": self.T, "neuron": self.ckpt["model"]["neuron"],
            "layer_names": self.topo.layer_names, "topology": self.topo.as_dict(),
            "computed_once": list(computed_once), "input_shape": list(self.input_shape), "input_kind": self.kind,
            "input_layout": "[B, C, H, W]" if self.kind == "static" else "[T, B, C, H, W]",
            "normalization": data["normalization"], "class_names": data["class_names"],
            "dataset": data["name"], "model": self.ckpt["model"], "opset": opset,
            "config_hash": config_hash(self.ckpt["config"]),
            "checkpoint": {"file": self.path.name, "sha256": file_sha256(self.path), "bytes": self.path.stat().st_size,
                           "relative": Path(os.path.relpath(self.path.resolve(), out.resolve().parent)).as_posix()},
            "exporter": EXPORTER,
        }


def trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int, inputs: dict[str, int],
          outputs: list[str], dynamo: bool = False) -> onnx.ModelProto:
    """The exporter's raw graph. ``inputs`` maps each input name to its batch axis; outputs are
    batch-first. ``dynamo`` selects torch's dynamo exporter instead (only for the comparison in bench/)."""
    with warnings.catch_warnings():
        for notice in LEGACY_NOTICES:
            warnings.filterwarnings("ignore", message=notice, category=DeprecationWarning)
        if dynamo:
            return torch.onnx.export(
                module, example, dynamo=True, opset_version=opset, input_names=list(inputs), output_names=outputs,
                dynamic_shapes=tuple({axis: torch.export.Dim("batch")} for axis in inputs.values()),
                verbose=False).model_proto
        f = io.BytesIO()
        try:
            torch.onnx.export(
                module, example, f, dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=list(inputs), output_names=outputs,
                dynamic_axes={**{name: {axis: "batch"} for name, axis in inputs.items()},
                              **{name: {0: "batch"} for name in outputs}})
        except (torch.onnx.errors.SymbolicValueError, torch.onnx.errors.UnsupportedOperatorError) as e:
            reason = str(e).split("  [Caused by", 1)[0].split("\n", 1)[0].strip()
            raise ExportUnsupported(f"torch's ONNX exporter cannot express a layer of this network at its input size "
                                    f"({reason}); nothing was written") from None
    return onnx.load_from_string(f.getvalue())


def simplified(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """onnxslim's graph with only ``outputs`` as outputs; the probes keep their names."""
    model = onnxslim.slim(model)
    kept = [o for o in model.graph.output if o.name in outputs]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model


def probed_graph(module: TimeUnrolled, example: tuple[torch.Tensor, ...], opset: int, inputs: dict[str, int],
                 outputs: list[str]) -> onnx.ModelProto:
    """``module`` traced with its probes and simplified, keeping ``outputs``."""
    with torch.no_grad():
        return simplified(trace(module, example, opset, inputs, outputs + module.probe_names()), outputs)


def save_onnx(model: onnx.ModelProto, meta: dict, out: Path) -> None:
    """Attach the metadata the runtime reads for this form, check the graph fully, write it atomically."""
    keys = META_KEYS + FORM_KEYS[meta["format"]]
    onnx.helper.set_model_props(model, {k: json.dumps(meta[k]) for k in keys})
    onnx.checker.check_model(model, full_check=True)
    atomic_write(out, model.SerializeToString())


def unrolled_graph(src: Source, opset: int) -> tuple[onnx.ModelProto, TimeUnrolled]:
    """The time-unrolled graph (simplified, in memory) and the twin it was traced from."""
    twin = src.twin()
    inputs = {"input": 0 if src.kind == "static" else 1}
    return probed_graph(twin, (src.example(),), opset, inputs, OUTPUTS), twin


def export_unrolled(src: Source, out: Path, opset: int, data_root: Optional[str] = None) -> ExportResult:
    """A whole sample in, time-averaged logits and spike counts out."""
    model, twin = unrolled_graph(src, opset)
    save_onnx(model, src.metadata("unrolled", opset, twin.computed_once, out), out)
    check_forward(out, twin, src.example())
    return ExportResult(out, out.stat().st_size, len(model.graph.node), src.T, len(twin.layer_names), opset)


def export_streaming(src: Source, out: Path, opset: int, data_root: Optional[str] = None) -> ExportResult:
    """One step per call; the metadata names each state tensor, its per-sample shape and initial value."""
    step = one_step(src.net, probes=True)
    shapes = step.state_shapes(src.input_shape)
    states = [{"input": f"state_{i}", "output": f"next_state_{i}", "layer": layer, "shape": list(shape),
               "initial": 0.0} for i, (layer, shape) in enumerate(zip(step.layer_names, shapes))]
    example = (torch.randn(2, *src.input_shape), *[torch.zeros(2, *shape) for shape in shapes])
    model = batch_checked(probed_graph(step, example, opset, {"input": 0, **{s["input"]: 0 for s in states}},
                                       OUTPUTS + [s["output"] for s in states]), states)
    meta = {**src.metadata("streaming", opset, (), out), "input_layout": "[B, C, H, W], one step per call",
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


def export_checkpoint(checkpoint: str | Path, out: Optional[str | Path] = None, opset: int = OPSET,
                      T: Optional[int] = None, form: str = "unrolled", data_root: Optional[str] = None,
                      force: bool = False) -> ExportResult:
    """Export the model in ``checkpoint`` (a file or a run directory) as ``form`` to ``out``
    (default: :data:`FILE_NAMES` beside the checkpoint), for ``T`` steps (default: the trained T),
    and check the written file. ``data_root``: where the training data is (int8 calibrates on it).
    ``out`` must be a place where nothing is lost (:func:`~snnkit.deploy.outputs.check_output`);
    ``force`` replaces an snnkit graph of the same form there."""
    from .nir_export import export_nir  # these two build on this module's pieces
    from .quantize import export_int8

    forms = {"unrolled": export_unrolled, "streaming": export_streaming, "int8": export_int8, "nir": export_nir}
    if form not in forms:
        raise SnnkitError(f"unknown export form {form!r}; choose one of {', '.join(forms)}")
    if opset not in OPSETS:
        raise SnnkitError(f"--opset {opset} is not supported; choose one of {OPSETS.start}..{OPSETS.stop - 1}")
    src = Source.load(checkpoint, T)
    out = Path(out) if out is not None else src.path.parent / FILE_NAMES[form]
    check_output(out, form, src.path, force)  # before any tracing
    with staged(out) as tmp:  # written and checked under another name: a failure leaves ``out`` as it was
        result = replace(forms[form](src, tmp, opset, data_root), path=out)
    log.debug("exported %s (%s), opset %d", result.path, form, opset)
    return result


def check_forward(path: Path, twin: TimeUnrolled, example: torch.Tensor) -> None:
    """Run the written file in onnxruntime and judge it step by step against ``twin`` (parity's
    verdict: a NaN, a spike count or a membrane that rounding cannot explain is an exporter bug)."""
    verdict = verify(twin, example, load_onnx(path).observe(example.numpy())).verdict
    if not verdict.passed:
        raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch right after export "
                           f"({verdict.first_unexplained.describe()}); this is an snnkit bug, please report it")
