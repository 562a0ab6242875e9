"""The CLI's edge paths (issue 19): `export -o` never loses a file, out of memory is one line, the
form is one option, eval's verdict is last and a FAIL exits 3, `snnkit list` reads the registries.
Every refusal: its exit status, exactly one line on stderr, no traceback, the disk unchanged."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import snnkit.deploy.evaluate
import snnkit.deploy.export
import snnkit.deploy.streaming
import snnkit.deploy.writer
from deploy_helpers import invoke
from fault_helpers import one_line_error, snapshot, temporaries
from snnkit.config import recipe_names
from snnkit.data import DATASETS
from snnkit.deploy.outputs import kind_of
from snnkit.methods import METHODS
from snnkit.models import MODELS


@pytest.fixture
def full_run(run):
    """``run`` with the files a finished run holds beside its checkpoint."""
    for name in ("config.yaml", "metrics.jsonl", "results.json", "curves.png"):
        (run / name).write_text(f"{name} of the run\n")
    shutil.copy(run / "checkpoint.pt", run / "best.pt")
    return run


def exported(path: str, *form: str) -> str:
    assert invoke("export", "-o", path, *form).exit_code == 0
    return path


REFUSED = {  # name: (make the situation, return the -o; the message)
    "the run's checkpoint": (lambda: "runs/tiny/checkpoint.pt", "is the checkpoint being exported"),
    "best.pt": (lambda: "runs/tiny/best.pt", "is a checkpoint's name (.pt)"),
    "a new .pt name": (lambda: "graph.pt", "is a checkpoint's name (.pt); choose another -o, e.g. graph.onnx"),
    "config.yaml": (lambda: "runs/tiny/config.yaml", "is one of its run's own files"),
    "metrics.jsonl": (lambda: "runs/tiny/metrics.jsonl", "is one of its run's own files"),
    "results.json": (lambda: "runs/tiny/results.json", "is one of its run's own files"),
    "curves.png": (lambda: "runs/tiny/curves.png", "is one of its run's own files"),
    "a link to the checkpoint": (lambda: (os.symlink("runs/tiny/checkpoint.pt", "alias.onnx"), "alias.onnx")[1],
                                 "is the checkpoint being exported"),
    "a checkpoint under another name": (lambda: shutil.copy("runs/tiny/checkpoint.pt", "weights.bin"),
                                        "already holds a checkpoint, not an unrolled graph"),
    "a file of another kind": (lambda: (Path("notes.onnx").write_text("my notes\n"), "notes.onnx")[1],
                               "already holds a file snnkit did not write"),
    "a graph of another form": (lambda: exported("g.onnx", "--form", "streaming"),
                                "already holds an snnkit streaming graph, not an unrolled graph"),
    "the same form without --force": (lambda: exported("g.onnx"), "already holds an snnkit unrolled graph; pass "
                                                                  "--force to replace it"),
    "a folder": (lambda: "runs/tiny", "is a folder; give a file path"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_export_never_replaces_what_cannot_be_made_again(full_run, case):
    make, message = REFUSED[case]
    target = make()
    before = snapshot(full_run.parent.parent)
    one_line_error(invoke("export", "-o", target), 2, message)
    assert snapshot(full_run.parent.parent) == before and not temporaries(full_run.parent.parent)


def test_force_replaces_a_graph_of_the_same_form_only(run):
    exported("g.onnx", "--form", "streaming")
    streaming = Path("g.onnx").read_bytes()
    one_line_error(invoke("export", "-o", "g.onnx", "--force"), 2, "not an unrolled graph")
    assert Path("g.onnx").read_bytes() == streaming
    result = invoke("export", "-o", "g.onnx", "--form", "streaming", "--T", "2", "--force")
    assert result.exit_code == 0, result.output
    assert kind_of(Path("g.onnx")) == "streaming" and Path("g.onnx").read_bytes() != streaming


def raise_(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


OUT_OF_MEMORY = {  # where, what the allocator raised
    "tracing": ("trace", MemoryError()),
    "checking the written graph": ("check_forward", RuntimeError(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer of size 4096")),
}


@pytest.mark.parametrize("case", OUT_OF_MEMORY)
def test_export_out_of_memory_is_one_line_and_leaves_no_file(run, monkeypatch, case):
    where, error = OUT_OF_MEMORY[case]
    exported("runs/tiny/model_streaming.onnx", "--form", "streaming")
    before = snapshot(run.parent)
    for module in (snnkit.deploy.writer, snnkit.deploy.streaming):  # the unrolled form's and the streaming one's
        if hasattr(module, where):
            monkeypatch.setattr(module, where, raise_(error))
    for args in (["--form", "unrolled"], ["--form", "streaming", "--force"]):  # a new file, a replaced one
        one_line_error(invoke("export", *args), 2, "out of memory", "lower --T")
        assert snapshot(run.parent) == before and not temporaries(run.parent)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                                                "allocate 68719476736 bytes")])
def test_eval_out_of_memory_says_what_to_lower(run, monkeypatch, error):
    monkeypatch.setattr(snnkit.deploy.evaluate, "evaluate_network", raise_(error))
    one_line_error(invoke("eval", "--report-dir", "report"), 2, "out of memory", "lower --batch-size")
    assert not Path("report").exists()


def test_a_crash_that_is_not_out_of_memory_still_shows_its_traceback(run, monkeypatch):
    monkeypatch.setattr(snnkit.deploy.evaluate, "evaluate_network", raise_(RuntimeError("an snnkit bug")))
    result = invoke("eval")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_the_old_form_flags_still_work_with_a_note(run):
    result = invoke("export", "--streaming")
    assert result.exit_code == 0, result.output
    assert result.stderr == "note: --streaming is deprecated; write --form streaming\n"
    assert kind_of(run / "model_streaming.onnx") == "streaming"


@pytest.mark.parametrize("args, message", [
    (["--form", "onnx"], "--form onnx is not an export form; give --form [unrolled|streaming|int8|nir]"),
    (["--quantize", "int4"], "--quantize int4 is not an export form"),
    (["--form", "int8", "--format", "nir"], "--form int8 and --format nir name different forms; give one --form"),
    (["--streaming", "--quantize", "int8"], "--streaming and --quantize int8 name different forms"),
])
def test_conflicting_or_unknown_forms_are_refused_before_anything_loads(run, monkeypatch, args, message):
    monkeypatch.setattr(snnkit.deploy.export.Source, "load", raise_(AssertionError("loaded the checkpoint")))
    before = snapshot(run.parent)
    one_line_error(invoke("export", *args), 2, message)
    assert snapshot(run.parent) == before


def test_assumptions_are_printed_only_under_verbose(run):
    quiet, loud = invoke("eval"), invoke("--verbose", "eval")
    assert quiet.exit_code == loud.exit_code == 0
    assert "assumption:" not in quiet.output and loud.output.count("assumption:") >= 3
    assert quiet.output.strip().splitlines()[-1].startswith("checkpoint at T = 4: test accuracy ")


def test_eval_takes_its_checkpoint_one_way(run):
    result = invoke("eval", "--checkpoint", "runs/tiny")
    assert result.exit_code == 2 and "No such option: --checkpoint" in result.output
    assert invoke("eval", "runs/tiny").exit_code == 0


@pytest.mark.parametrize("kind, names", [("recipes", recipe_names), ("models", MODELS.names),
                                         ("methods", METHODS.names), ("datasets", DATASETS.names)])
def test_list_prints_what_each_registry_holds(kind, names):
    result = invoke("list", kind)
    assert result.exit_code == 0 and result.stdout.splitlines() == names()
    assert f"{kind}: {', '.join(names())}" in " ".join(invoke("list").stdout.split())


def test_list_refuses_an_unknown_kind_in_one_line():
    one_line_error(invoke("list", "optimisers"), 2, "cannot list 'optimisers'; choose one of: recipes, models, "
                                                    "methods, datasets")


def test_help_shows_the_choices():
    text = " ".join(invoke("train", "--help").output.replace("│", " ").split())
    assert all(name in text for name in [*METHODS.names(), *recipe_names(), "[none|bf16|fp16]",
                                         "[auto|cpu|cuda|cuda:N]", "snnkit list models"])
    text = " ".join(invoke("export", "--help").output.replace("│", " ").split())
    assert all(f"{form}:" in text for form in ("streaming", "int8", "nir")) and "unrolled (default)" in text


def test_python_dash_m_snnkit_is_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snnkit", "list", "methods"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.splitlines() == METHODS.names(), proc.stderr
