"""deploy/ is layered: each module imports only modules of a lower layer (read from its import
statements, those inside functions included, so no circle can hide), every module imports alone
in a fresh interpreter, and none of them loads the training code or the rate method."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
LAYERS = [  # bottom to top
    ["metadata", "structure", "outputs", "costs", "graph"],  # facts about graphs and networks
    ["efficiency", "parity"],  # the cost model's report; the verdict
    ["runtime"],  # onnxruntime: open, check and run a graph
    ["source"],  # the checkpoint, opened once
    ["writer"],  # the ONNX writer and the unrolled form
    ["streaming", "quantize", "nir_export"],  # the other forms
    ["evaluate"],  # snnkit eval
    ["report"],  # its files
    ["export"],  # snnkit export: dispatch only
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def deploy_imports(path: Path) -> set[str]:
    """The deploy modules ``path`` imports, wherever the statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:
                found |= {module} if module else {a.name for a in node.names if a.name in LAYER}
            elif module.startswith("snnkit.deploy."):
                found.add(module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("snnkit.deploy.")}
    return found


def test_every_deploy_module_has_a_layer():
    modules = {p.stem for p in DEPLOY.glob("*.py")} - {"__init__"}
    assert modules == set(LAYER), "place a new deploy module in LAYERS"


@pytest.mark.parametrize("name", sorted(LAYER))
def test_a_module_imports_only_from_layers_below_it(name):
    upward = {m: LAYERS[LAYER[m]] for m in deploy_imports(DEPLOY / f"{name}.py") if LAYER[m] >= LAYER[name]}
    assert not upward, f"deploy/{name}.py (layer {LAYER[name]}) imports {sorted(upward)} of its own layer or above"


def test_each_module_imports_alone_in_a_fresh_interpreter_without_the_training_code():
    check = ("import sys, importlib; importlib.import_module('snnkit.deploy.{}'); "
             "print(sorted(m for m in sys.modules if m.startswith(('snnkit.methods', 'snnkit.training'))))")
    runs = {name: subprocess.Popen([sys.executable, "-c", check.format(name)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for name in sorted(LAYER)}
    for name, proc in runs.items():
        out, err = proc.communicate()
        assert proc.returncode == 0, f"snnkit.deploy.{name} does not import alone: {err.strip().splitlines()[-1:]}"
        assert out.strip() == "[]", f"snnkit.deploy.{name} loads {out.strip()}"
