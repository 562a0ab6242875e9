"""``snnkit export [RUN_OR_CHECKPOINT | --runs DIR] [-o PATH] [--form unrolled|streaming|int8|nir] [--opset N] [--T N] [--force]``.

``--streaming``, ``--quantize int8`` and ``--format nir`` are the 0.1 spellings of ``--form``, kept
for this release (deprecated); any two that name different forms are refused before anything loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.deploy import OPSET, OPSETS
from snnkit.errors import SnnkitError
from snnkit.layout import chosen_run

from .common import MODEL_OPTION, RUNS_OPTION, error_line, one_of, say, user_errors

FORMS = ("unrolled", "streaming", "int8", "nir")
ALIASES = {"--streaming": "streaming", "--quantize int8": "int8", "--format onnx": "unrolled", "--format nir": "nir"}


def chosen_form(form: Optional[str], streaming: bool, quantize: Optional[str], format: Optional[str]) -> str:
    """The one form ``--form`` and the deprecated aliases name together (default: unrolled)."""
    aliases = [flag for flag in ("--streaming" if streaming else None, quantize and f"--quantize {quantize}",
                                 format and f"--format {format}") if flag]
    named = {**({f"--form {form}": form if form in FORMS else None} if form is not None else {}),
             **{flag: ALIASES.get(flag) for flag in aliases}}
    if bad := next((flag for flag, value in named.items() if value is None), None):
        raise SnnkitError(f"{bad} is not an export form; give --form {one_of(FORMS)}")
    if len(set(named.values())) > 1:
        raise SnnkitError(f"{' and '.join(named)} name different forms; give one --form {one_of(FORMS)} "
                          "and export the others one at a time")
    for flag in aliases:
        error_line(f"note: {flag} is deprecated; write --form {named[flag]}")
    return next(iter(named.values()), FORMS[0])


def export(
    run: Annotated[Optional[str], typer.Argument(
        metavar="RUN_OR_CHECKPOINT",
        help="A run directory or checkpoint file, or a run.out_dir for its latest run (default: runs/latest).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to write the graph (default: model.onnx, model_streaming.onnx, "
                               "model_int8.onnx or model.nir beside the checkpoint). Never a checkpoint, a "
                               "run's own files or a file of another kind.")] = None,
    form: Annotated[Optional[str], typer.Option(
        metavar="FORM",
        help="unrolled (default): all T steps in one graph; streaming: one step per call, the membrane states as "
             "inputs and outputs; int8: 8-bit convolutions and linear layers, calibrated on the run's training "
             "data; nir: the Neuromorphic Intermediate Representation (hard-reset models).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an snnkit graph of the same form at the output path.")] = False,
    opset: Annotated[int, typer.Option(help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1}.")] = OPSET,
    T: Annotated[Optional[int], typer.Option(
        "--T", "-T", help="Time steps to unroll, or to run a streaming graph for (default: the trained T).")] = None,
    data_root: Annotated[Optional[str], typer.Option(
        help="With --form int8: where the training data is (datasets with files).")] = None,
    runs: RUNS_OPTION = None,
    model: MODEL_OPTION = None,
    streaming: Annotated[bool, typer.Option(help="Deprecated: --form streaming.")] = False,
    quantize: Annotated[Optional[str], typer.Option(metavar="int8", help="Deprecated: --form int8.")] = None,
    format: Annotated[Optional[str], typer.Option(
        "--format", metavar="[onnx|nir]", help="Deprecated: --form nir (onnx: unrolled).")] = None,
) -> None:
    """Export a trained model to a checked graph with per-layer spike counts: time-unrolled ONNX or an edge form."""
    from snnkit.deploy.export import export_checkpoint
    from snnkit.models import naming

    with user_errors(lower="--T (fewer steps to unroll)"), naming(model):
        chosen = chosen_form(form, streaming, quantize, format)
        r = export_checkpoint(chosen_run(run, runs), output, opset, T, form=chosen, data_root=data_root, force=force)
    say(", ".join([f"wrote {r.path}: {r.size_bytes / 1024:.1f} KiB", f"{r.nodes} nodes", f"T = {r.T}",
                   f"L = {r.layers} spiking layers", *([f"opset {r.opset}"] if r.opset is not None else []),
                   *([r.detail] if r.detail else [])]))
