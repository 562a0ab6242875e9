"""``snnkit eval [RUN_OR_CHECKPOINT] [--onnx model.onnx] [--report-dir DIR]``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.deploy import MAX_ACCURACY_DROP

from .common import console, user_errors


def eval_command(
    run: Annotated[Optional[str], typer.Argument(
        metavar="RUN_OR_CHECKPOINT", help="A run directory or checkpoint file (default: runs/latest).")] = None,
    onnx: Annotated[Optional[Path], typer.Option(
        help="Evaluate this ONNX graph in onnxruntime and check its parity with the checkpoint.")] = None,
    checkpoint: Annotated[Optional[str], typer.Option(
        help="With --onnx: the checkpoint to compare against (default: the one named in the graph).")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Where the dataset's files are.")] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 256,
    report_dir: Annotated[Optional[Path], typer.Option(
        help="Also write efficiency.json and efficiency.png (and a streaming graph's early_exit.png) here.")] = None,
    max_accuracy_drop: Annotated[float, typer.Option(
        help="An int8 graph's gate: its largest accuracy drop against float32 (0.005 is 0.5 pp).")]
    = MAX_ACCURACY_DROP,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="Import this model of your own (package.module:function or file.py:function) when the "
                        "checkpoint names it. Importing runs that code: naming it is your own act, and a "
                        "checkpoint alone never imports anything.")] = None,
) -> None:
    """Test accuracy and spike efficiency; with --onnx, parity of the graph with PyTorch, spike by spike."""
    from snnkit.deploy.evaluate import evaluate
    from snnkit.models import naming
    from snnkit.deploy.report import (early_exit_table, efficiency_table, energy_lines, folding_line, parity_table,
                                      write_report)

    with user_errors(), naming(model):
        result = evaluate(checkpoint or run, onnx, data_root, batch_size, max_accuracy_drop=max_accuracy_drop)
        files = write_report(result, report_dir) if report_dir is not None else ()
    side = f"ONNX {result.form} graph ({', '.join(result.providers)})" if onnx is not None else "PyTorch"
    console.print(f"{result.dataset} test accuracy at T = {result.T}, {side}: {result.accuracy:.2%}  "
                  f"(checkpoint {result.checkpoint})", markup=False, highlight=False, soft_wrap=True)
    if result.parity is not None:
        console.print(parity_table(result.parity))
        console.print(folding_line(result.folding), markup=False, highlight=False, soft_wrap=True)
    if result.accuracy_per_step is not None:
        console.print(early_exit_table(result.accuracy_per_step))
    console.print(efficiency_table(result.report))
    for line in energy_lines(result.report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for f in files:
        console.print(f"wrote {f}", markup=False, highlight=False, soft_wrap=True)
    if result.parity is not None and not result.parity.passed:
        raise typer.Exit(1)
