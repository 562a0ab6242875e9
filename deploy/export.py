"""``snnkit export``: a checkpoint -> a checked graph with spike counts and metadata, in one of four
forms (:func:`export_checkpoint`'s ``form``), each made by its own module:

- ``unrolled`` (default): a whole sample per call, all T steps inside (:mod:`snnkit.deploy.writer`);
- ``streaming``: one step per call, the membrane states as inputs and outputs (:mod:`snnkit.deploy.streaming`);
- ``int8``: the unrolled graph quantized (:mod:`snnkit.deploy.quantize`);
- ``nir``: the network as a NIR graph for neuromorphic tool chains (:mod:`snnkit.deploy.nir_export`).

This module only dispatches: it opens the :class:`~snnkit.deploy.source.Source`, checks where the
file may go (:func:`~snnkit.deploy.outputs.check_output`) and has the form written under a staged
name, renamed over ``out`` once the form's own check passed.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional

from snnkit.errors import SnnkitError
from snnkit.files import staged

from . import OPSET, OPSETS
from .nir_export import export_nir
from .outputs import check_output
from .quantize import export_int8
from .source import Source
from .streaming import export_streaming
from .writer import ExportResult, export_unrolled

log = logging.getLogger("snnkit.deploy")

FILE_NAMES = {"unrolled": "model.onnx", "streaming": "model_streaming.onnx", "int8": "model_int8.onnx",
              "nir": "model.nir"}
FORMS = {"unrolled": export_unrolled, "streaming": export_streaming, "int8": export_int8, "nir": export_nir}


def export_checkpoint(checkpoint: str | Path, out: Optional[str | Path] = None, opset: int = OPSET,
                      T: Optional[int] = None, form: str = "unrolled", data_root: Optional[str] = None,
                      force: bool = False) -> ExportResult:
    """Export the model in ``checkpoint`` (a file or a run directory) as ``form`` to ``out``
    (default: :data:`FILE_NAMES` beside the checkpoint), for ``T`` steps (default: the trained T),
    and check the written file. ``data_root``: where the training data is (int8 calibrates on it).
    ``out`` must be a place where nothing is lost (:func:`~snnkit.deploy.outputs.check_output`);
    ``force`` replaces an snnkit graph of the same form there."""
    if form not in FORMS:
        raise SnnkitError(f"unknown export form {form!r}; choose one of {', '.join(FORMS)}")
    if opset not in OPSETS:
        raise SnnkitError(f"--opset {opset} is not supported; choose one of {OPSETS.start}..{OPSETS.stop - 1}")
    src = Source.load(checkpoint, T)
    out = Path(out) if out is not None else src.path.parent / FILE_NAMES[form]
    check_output(out, form, src.path, force)  # before any tracing
    with staged(out) as tmp:  # written and checked under another name: a failure leaves ``out`` as it was
        result = replace(FORMS[form](src, tmp, opset, data_root), path=out)
    log.debug("exported %s (%s), opset %d", result.path, form, opset)
    return result
