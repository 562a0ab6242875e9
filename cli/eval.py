"""``snnkit eval [RUN_OR_CHECKPOINT] [--onnx model.onnx] [--report-dir DIR]``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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
        help="Also write efficiency.json and efficiency.png here.")] = None,
    max_logit_diff: Annotated[float, typer.Option(help="Parity: largest allowed |Δlogits|.")] = 1e-4,
    min_agreement: Annotated[float, typer.Option(help="Parity: smallest prediction agreement.")] = 0.999,
    min_spike_identity: Annotated[float, typer.Option(
        help="Parity: smallest fraction of identical (sample, layer) spike counts.")] = 0.999,
    max_accuracy_drop: Annotated[float, typer.Option(
        help="An int8 graph's verdict: largest allowed accuracy drop against the float32 model (0.005 = 0.5 pp).")]
    = 0.005,
) -> None:
    """Test accuracy and spike efficiency; with --onnx, parity of the graph with PyTorch."""
    from snnkit.deploy.evaluate import Thresholds, evaluate
    from snnkit.deploy.report import early_exit_table, efficiency_table, energy_lines, verdict_table, write_report

    with user_errors():
        result = evaluate(checkpoint or run, onnx, data_root, batch_size,
                          Thresholds(max_logit_diff, min_agreement, min_spike_identity, max_accuracy_drop))
        files = write_report(result, report_dir) if report_dir is not None else ()
    side = f"ONNX ({', '.join(result.providers)})" if onnx is not None else "PyTorch"
    console.print(f"{result.dataset} test accuracy, {side}: {result.accuracy:.2%}  (checkpoint {result.checkpoint})",
                  markup=False, highlight=False, soft_wrap=True)
    if result.parity is not None:
        console.print(verdict_table(result.parity))
        f = result.folding
        console.print(f"BN folding alone (checkpoint model vs the folded PyTorch twin, float32): "
                      f"{f.spike_count_identity:.2%} identical spike counts, max |Δlogits| "
                      f"{f.logits_max_abs_diff:.3g}, accuracy {f.torch_accuracy:.2%} / {f.onnx_accuracy:.2%}",
                      markup=False, highlight=False, soft_wrap=True)
    if result.accuracy_per_step is not None:
        console.print(early_exit_table(result.accuracy_per_step))
    console.print(efficiency_table(result.report))
    for line in energy_lines(result.report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for f in files:
        console.print(f"wrote {f}", markup=False, highlight=False, soft_wrap=True)
    if result.parity is not None and not result.parity.passed:
        raise typer.Exit(1)
