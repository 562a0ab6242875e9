"""The ONNX writer: a module traced to ONNX with its probes, simplified, given its metadata, checked
in full and written; and the unrolled form, a whole sample per call, all T steps inside
(:class:`~snnkit.deploy.graph.TimeUnrolled`).

The exporter is named explicitly: torch's TorchScript exporter (``dynamo=False``), then onnxslim,
which removes the shape plumbing (constant folding, shape arithmetic, dead nodes). The dynamo
exporter (which needs ``onnxscript``) ends at the same graph but took 5-17× longer (docs/deploy.md, Exporter).
The TorchScript one announces itself as legacy with two DeprecationWarnings, which are silenced
here by their exact text and nowhere else.

A graph is traced with each LIF layer's membrane and spikes at every step as extra outputs, so
that those tensors carry stable names (:func:`~snnkit.deploy.graph.probe_name`) through the
simplifier; the written file has only its own outputs, and parity exposes the probes again to
compare them step by step. Every form is checked where it is made.

torch's exporter cannot write an adaptive average pool that enlarges its map (the zoo's VGG pools
its 1×1 map at 32×32 to 7×7). Where each output side is a multiple k of the input's, every output
cell's window ``[⌊i/k⌋, ⌈(i+1)/k⌉)`` is the one input cell ``⌊i/k⌋``: the pool replicates, and the
module traced to ONNX writes it as Unsqueeze + Expand + Reshape (:class:`ReplicatingPool`; the
parity verdict judges it against the pool itself). Any other size is left to the exporter.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import onnx
import onnxslim
import torch
from torch import nn

from snnkit.errors import SnnkitError
from snnkit.files import atomic_write

from .graph import TimeUnrolled
from .metadata import FORM_KEYS, META_KEYS
from .parity import verify
from .runtime import OUTPUTS, load_onnx
from .source import Source

EXPORTER = "torch.onnx.export(dynamo=False), TorchScript, then onnxslim"
LEGACY_NOTICES = (r"You are using the legacy TorchScript-based ONNX export",
                  r"The feature will be removed\. Please remove usage of this function")


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


class ReplicatingPool(nn.Module):
    """An enlarging adaptive average pool that replicates: each cell repeated ``kh``×``kw`` times."""

    def __init__(self, kh: int, kw: int):
        super().__init__()
        self.kh, self.kw = kh, kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = x[..., :, None, :, None]  # [..., h, 1, w, 1]
        tiled = cells.expand(*[-1] * (cells.dim() - 3), self.kh, -1, self.kw)  # [..., h, kh, w, kw]; -1: no size traced
        return tiled.flatten(-4, -3).flatten(-2, -1)  # [..., h·kh, w·kw]


def replicating_pools(module: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    """A copy of ``module`` with each AdaptiveAvgPool2d that enlarges its map by whole multiples on
    ``example`` as a :class:`ReplicatingPool` (the module itself when there is none)."""
    pools = [m for m in module.modules()  # a global pool (to 1×1) never enlarges: no forward for it
             if type(m) is nn.AdaptiveAvgPool2d and m.output_size not in (1, (1, 1))]
    seen: dict[nn.Module, tuple[int, int, int, int]] = {}

    def sizes(m: nn.Module, args: tuple, out: torch.Tensor) -> None:  # None: the output stays the pool's
        seen[m] = (*args[0].shape[-2:], *out.shape[-2:])

    hooks = [p.register_forward_hook(sizes) for p in pools]
    try:
        if pools:
            with torch.no_grad():
                module(*example)
    finally:
        for hook in hooks:
            hook.remove()
    factors = {m: (oh // h, ow // w) for m, (h, w, oh, ow) in seen.items()
               if (oh > h or ow > w) and oh % h == 0 and ow % w == 0}
    if not factors:
        return module
    memo: dict[int, object] = {}
    copied = copy.deepcopy(module, memo)
    replaced = {id(memo[id(m)]): k for m, k in factors.items()}
    for parent in list(copied.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replaced:
                setattr(parent, name, ReplicatingPool(*replaced[id(child)]))
    return copied


def trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...], opset: int, inputs: dict[str, int],
          outputs: list[str], dynamo: bool = False) -> onnx.ModelProto:
    """The exporter's raw graph. ``inputs`` maps each input name to its batch axis; outputs are
    batch-first. ``dynamo`` selects torch's dynamo exporter instead (only for the comparison in bench/)."""
    module = replicating_pools(module, example)
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
    save_onnx(model, src.metadata("unrolled", opset, twin.computed_once, out, EXPORTER), out)
    check_forward(out, twin, src.example())
    return ExportResult(out, out.stat().st_size, len(model.graph.node), src.T, len(twin.layer_names), opset)


def check_forward(path: Path, twin: TimeUnrolled, example: torch.Tensor) -> None:
    """Run the written file in onnxruntime and judge it step by step against ``twin`` (parity's
    verdict: a NaN, a spike count or a membrane that rounding cannot explain is an exporter bug)."""
    verdict = verify(twin, example, load_onnx(path).observe(example.numpy())).verdict
    if not verdict.passed:
        raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch right after export "
                           f"({verdict.first_unexplained.describe()}); this is an snnkit bug, please report it")
