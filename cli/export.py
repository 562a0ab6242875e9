"""``snnkit export [RUN_OR_CHECKPOINT] [-o PATH] [--opset N] [--T N] [--streaming | --quantize int8 | --format nir]``."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.deploy import OPSET, OPSETS

from .common import console, user_errors


class Format(str, Enum):
    onnx = "onnx"
    nir = "nir"


class Quantize(str, Enum):
    int8 = "int8"


def export(
    run: Annotated[str, typer.Argument(metavar="RUN_OR_CHECKPOINT",
                                       help="A run directory or checkpoint file.")] = "runs/latest",
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to write the graph (default: model.onnx, model_streaming.onnx, "
                               "model_int8.onnx or model.nir beside the checkpoint).")] = None,
    opset: Annotated[int, typer.Option(help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1}.")] = OPSET,
    T: Annotated[Optional[int], typer.Option(
        "--T", "-T", help="Time steps to unroll, or to run a streaming graph for (default: the trained T).")] = None,
    streaming: Annotated[bool, typer.Option(
        help="A graph that runs one time step per call, the membrane states as inputs and outputs.")] = False,
    quantize: Annotated[Optional[Quantize], typer.Option(
        help="int8: 8-bit convolutions and linear layers, calibrated on the run's training data.")] = None,
    format: Annotated[Format, typer.Option(
        "--format", help="onnx, or nir (the Neuromorphic Intermediate Representation; hard-reset models).")]
    = Format.onnx,
    data_root: Annotated[Optional[str], typer.Option(
        help="With --quantize: where the training data is (datasets with files).")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Import this model of your own (package.module:function or file.py:function) when the "
                        "checkpoint names it. Importing runs that code: naming it is your own act, and a "
                        "checkpoint alone never imports anything.")] = None,
) -> None:
    """Export a trained model to a time-unrolled ONNX graph with per-layer spike counts, or an edge form."""
    from snnkit.deploy.export import export_checkpoint
    from snnkit.errors import SnnkitError
    from snnkit.models import naming

    forms = [f for f, on in (("streaming", streaming), ("int8", quantize is not None),
                             ("nir", format is Format.nir)) if on]
    with user_errors(), naming(model):
        if len(forms) > 1:
            raise SnnkitError(f"{' and '.join(forms)} are separate forms; export them one at a time")
        r = export_checkpoint(run, output, opset, T, form=forms[0] if forms else "unrolled", data_root=data_root)
    console.print(", ".join([f"wrote {r.path}: {r.size_bytes / 1024:.1f} KiB", f"{r.nodes} nodes", f"T = {r.T}",
                             f"L = {r.layers} spiking layers", *([f"opset {r.opset}"] if r.opset is not None else []),
                             *([r.detail] if r.detail else [])]),
                  markup=False, highlight=False, soft_wrap=True)
