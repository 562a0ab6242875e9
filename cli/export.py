"""``snnkit export [RUN_OR_CHECKPOINT] [-o model.onnx] [--opset N] [--streaming]``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.deploy import OPSET, OPSETS

from .common import console, user_errors


def export(
    run: Annotated[str, typer.Argument(metavar="RUN_OR_CHECKPOINT",
                                       help="A run directory or checkpoint file.")] = "runs/latest",
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to write the graph (default: beside the checkpoint).")] = None,
    opset: Annotated[int, typer.Option(help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1}.")] = OPSET,
    streaming: Annotated[bool, typer.Option(
        help="A graph that runs one time step per call, the membrane states as inputs and outputs.")] = False,
) -> None:
    """Export a trained model to a time-unrolled ONNX graph with per-layer spike counts."""
    from snnkit.deploy.export import export_checkpoint

    with user_errors():
        r = export_checkpoint(run, output, opset, form="streaming" if streaming else "unrolled")
    console.print(f"wrote {r.path}: {r.size_bytes / 1024:.1f} KiB, {r.nodes} nodes, T = {r.T}, "
                  f"L = {r.layers} spiking layers, opset {r.opset}" + (f", {r.detail}" if r.detail else ""),
                  markup=False, highlight=False, soft_wrap=True)
