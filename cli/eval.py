"""``snnkit eval [RUN_OR_CHECKPOINT | --runs DIR] [--onnx GRAPH] [--report-dir DIR]``.

The checkpoint is given one way, positionally, as ``export`` takes it: with ``--onnx`` it is the
checkpoint to compare the graph against (default: the one the graph names beside it). The verdict
is the last line; a graph that fails its check exits with status 3.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.deploy import MAX_ACCURACY_DROP

from .common import FAILED, MODEL_OPTION, RUNS_OPTION, console, say, user_errors, verbose


def eval_command(
    run: Annotated[Optional[str], typer.Argument(
        metavar="RUN_OR_CHECKPOINT", help="A run directory or checkpoint file, or a run.out_dir for its latest run "
                                          "(default: runs/latest; with --onnx: the checkpoint the graph names, "
                                          "looked for beside it and under --runs).")] = None,
    onnx: Annotated[Optional[Path], typer.Option(
        help="Evaluate this ONNX graph in onnxruntime and check its parity with the checkpoint.")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="Where the dataset's files are.")] = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 256,
    report_dir: Annotated[Optional[Path], typer.Option(
        help="Also write efficiency.json (with the energy model's assumptions) and efficiency.png (and a "
             "streaming graph's early_exit.png) here.")] = None,
    max_accuracy_drop: Annotated[float, typer.Option(
        help="An int8 graph's gate: its largest accuracy drop against float32 (0.005 is 0.5 pp).")]
    = MAX_ACCURACY_DROP,
    runs: RUNS_OPTION = None,
    model: MODEL_OPTION = None,
) -> None:
    """Test accuracy and spike efficiency; with --onnx, parity of the graph with PyTorch, spike by spike.

    The last line is the verdict. Exit status: 0 done (PASS), 3 the graph FAILED its check, 2 an
    error you can act on (one line), 1 a bug."""
    from snnkit.deploy.evaluate import evaluate
    from snnkit.models import naming
    from snnkit.deploy.report import (assumption_lines, early_exit_table, efficiency_table, energy_lines,
                                      folding_line, parity_table, verdict_line, write_report)

    with user_errors(lower="--batch-size (or export the graph at a smaller --T)"), naming(model):
        result = evaluate(run, onnx, data_root, batch_size, max_accuracy_drop=max_accuracy_drop, runs=runs)
        files = write_report(result, report_dir) if report_dir is not None else ()
    side = f"ONNX {result.form} graph ({', '.join(result.providers)})" if onnx is not None else "PyTorch"
    say(f"{result.dataset} test accuracy at T = {result.T}, {side}: {result.accuracy:.2%} "
        f"(checkpoint {result.checkpoint})")
    if result.parity is not None:
        console.print(parity_table(result.parity))
        say(folding_line(result.folding))
    if result.accuracy_per_step is not None:
        console.print(early_exit_table(result.accuracy_per_step))
    console.print(efficiency_table(result.report))
    for line in energy_lines(result.report) + (assumption_lines(result.report) if verbose() else []):
        say(line)
    for f in files:
        say(f"wrote {f}")
    say(verdict_line(result))
    if result.parity is not None and not result.parity.passed:
        raise typer.Exit(FAILED)
