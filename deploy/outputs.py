"""Where ``snnkit export -o`` may write: nothing a user cannot get back is ever replaced.

Refused always: a folder, the checkpoint being exported (or a link to it), a checkpoint (an
existing torch file, or any ``.pt``/``.pth``/``.ckpt`` name), a run folder's own files, and an
existing file that is not an snnkit graph of the form being written. An snnkit graph of the same
form is replaced only with ``--force`` (it can be exported again from its checkpoint; anything
else may be the only copy of something).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from snnkit.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, LOCK_NAME, is_run_folder
from snnkit.errors import SnnkitError

RUN_FILES = frozenset({CHECKPOINT_NAME, "best.pt", CONFIG_NAME, LOCK_NAME, "metrics.jsonl", "results.json",
                       "curves.png"})
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
ZIP, PICKLE, HDF5 = b"PK\x03\x04", b"\x80", b"\x89HDF\r\n\x1a\n"  # torch.save (zip or legacy pickle), NIR


def onnx_form(path: Path) -> str:
    """An ONNX file's snnkit form ("unrolled", "streaming", "int8"), "onnx" for a foreign graph,
    "" when it is not ONNX."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not a protobuf, or not a ModelProto
        return ""
    if not model.graph.node:
        return ""
    props = {p.key: p.value for p in model.metadata_props}
    try:
        return str(json.loads(props["format"])) if "snnkit_version" in props else "onnx"
    except (KeyError, ValueError):
        return "onnx"


def nir_form(path: Path) -> str:
    """"nir" for an NIR graph snnkit wrote, "" for any other HDF5 file."""
    import nir

    try:
        return "nir" if "snnkit_version" in nir.read(path).metadata else ""
    except Exception:  # an HDF5 file of another kind
        return ""


def kind_of(path: Path) -> str:
    """What an existing file holds: "checkpoint", an snnkit form, "onnx" (another tool's graph), or ""."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((ZIP, PICKLE)):
        return "checkpoint"
    return nir_form(path) if head == HDF5 else onnx_form(path)


def graph(form: str) -> str:
    return f"{'an' if form[0] in 'aeiou' else 'a'} {form} graph"


def describe(kind: str) -> str:
    return {"checkpoint": "a checkpoint", "onnx": "another tool's ONNX graph", "": "a file snnkit did not write"
            }.get(kind, f"an snnkit {kind} graph")


def check_output(out: Path, form: str, source: Path, force: bool = False) -> None:
    """Refuse ``out`` unless writing the ``form`` graph of ``source`` there loses nothing (see the module)."""
    keep = "choose another -o"
    if out.is_dir():
        raise SnnkitError(f"{out} is a folder; give a file path, e.g. {out / 'model.onnx'}")
    if out.exists() and os.path.samefile(out, source):
        raise SnnkitError(f"{out} is the checkpoint being exported; {keep}")
    if out.suffix in CHECKPOINT_SUFFIXES:
        raise SnnkitError(f"{out} is a checkpoint's name ({out.suffix}); {keep}, e.g. {out.with_suffix('.onnx')}")
    if out.name in RUN_FILES and is_run_folder(out.parent):
        raise SnnkitError(f"{out} is one of its run's own files; {keep}")
    if not out.exists():
        return
    kind = kind_of(out)
    if kind != form:
        raise SnnkitError(f"{out} already holds {describe(kind)}, not {graph(form)}; {keep} "
                          "(or remove that file yourself)")
    if not force:
        raise SnnkitError(f"{out} already holds an snnkit {form} graph; pass --force to replace it")
