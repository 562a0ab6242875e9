"""`snnkit export` and `snnkit eval` through the CLI: defaults to runs/latest, parity and its
failure, the report files, and one clear line (exit 2, no traceback) for every bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deploy_helpers import invoke, run  # noqa: F401  (run is a fixture)
from snnkit.data import DataBundle, register_dataset


@register_dataset("rgb8_for_tests")
def rgb8(root=None) -> DataBundle:
    """Digits-sized but three channels: a dataset that does not fit a digits model."""
    data = torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    return DataBundle(data, data, (3, 8, 8), [str(i) for i in range(10)])


@pytest.fixture
def exported(run) -> Path:
    assert invoke("export").exit_code == 0
    return run / "model.onnx"


def test_eval_defaults_to_the_latest_run(run):
    result = invoke("eval")
    assert result.exit_code == 0, result.output
    assert "digits test accuracy, PyTorch:" in result.output and "Spike efficiency" in result.output


def test_export_then_eval_onnx_reports_parity_and_writes_the_report(run):
    result = invoke("export")
    assert result.exit_code == 0, result.output
    assert "wrote runs/latest/model.onnx: " in result.output and "T = 4, L = 3 spiking layers, opset 18" in result.output
    result = invoke("eval", "--onnx", "runs/latest/model.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    assert "ONNX parity: PASS" in result.output and "ONNX (CPUExecutionProvider)" in result.output
    report = json.loads(Path("report/efficiency.json").read_text())
    parity = report["parity"]
    assert parity["spike_count_identity"] == 1.0 and parity["logits_max_abs_diff"] <= 1e-5
    assert parity["torch_accuracy"] == parity["onnx_accuracy"] == report["accuracy"]
    eff = report["efficiency"]
    assert [r["name"] for r in eff["spiking_layers"]] == ["0.2", "1.2", "3.2"]
    assert eff["samples"] == 360 and eff["energy"]["fp32"]["snn_pj"] > 0
    assert Path("report/efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_altered_onnx_weight_fails_parity_and_names_the_first_layer_that_differs(exported):
    model = onnx.load(exported)
    second_conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    weight = next(i for i in model.graph.initializer if i.name == second_conv.input[1])
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5 + 0.05, weight.name))
    onnx.save(model, exported)
    result = invoke("eval", "--onnx", str(exported))
    assert result.exit_code == 1, result.output
    assert "ONNX parity: FAIL" in result.output
    row = next(line for line in result.output.splitlines() if "first layer whose counts differ" in line)
    assert "1.2" in row


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:200])
    return path


def strip_metadata(path: Path) -> Path:
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    return path


def other_dataset(run: Path) -> Path:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["data"]["name"] = "rgb8_for_tests"
    torch.save(ckpt, run / "checkpoint.pt")
    return run


BAD_INPUTS = {
    "missing checkpoint": (lambda run: ["eval", "nowhere"], "no checkpoint at nowhere"),
    "truncated checkpoint": (lambda run: ["export", str(truncate(run / "checkpoint.pt"))],
                             "is not a readable snnkit checkpoint"),
    "checkpoint of another format": (
        lambda run: (torch.save({"state_dict": {}}, run / "other.pt"), ["eval", str(run / "other.pt")])[1],
        "is not an snnkit checkpoint (no 'snnkit.checkpoint' format tag)"),
    "missing onnx": (lambda run: ["eval", "--onnx", "missing.onnx"], "no ONNX file at missing.onnx"),
    "truncated onnx": (lambda run: ["eval", "--onnx", str(truncate(run / "model.onnx"))],
                       "is not a readable ONNX model"),
    "onnx from elsewhere": (lambda run: ["eval", "--onnx", str(strip_metadata(run / "model.onnx"))],
                            "has no snnkit metadata; pass --checkpoint"),
    "dataset of another shape": (lambda run: ["eval", str(other_dataset(run))],
                                 "dataset 'rgb8_for_tests' gives samples of shape (3, 8, 8) with 10 classes "
                                 "but the model expects (1, 8, 8) with 10"),
    "unsupported opset": (lambda run: ["export", "--opset", "13"], "--opset 13 is not supported"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_line_without_traceback(exported, case):
    make_args, message = BAD_INPUTS[case]
    result = invoke(*make_args(exported.parent))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_onnx_from_elsewhere_is_evaluated_against_a_given_checkpoint(exported):
    strip_metadata(exported)
    result = invoke("eval", "--onnx", str(exported), "--checkpoint", "runs/latest")
    assert result.exit_code == 0, result.output
    assert "ONNX parity: PASS" in result.output


@pytest.mark.slow
def test_quickstart_chain_train_export_eval(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", "--epochs", "1").exit_code == 0
    assert invoke("export").exit_code == 0
    result = invoke("eval", "--onnx", "runs/latest/model.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    parity = json.loads(Path("report/efficiency.json").read_text())["parity"]
    assert parity["spike_count_identity"] == 1.0 and parity["logits_max_abs_diff"] <= 1e-5
    assert parity["onnx_accuracy"] > 0.5 and np.isclose(parity["onnx_accuracy"], parity["torch_accuracy"])
    folding = json.loads(Path("report/efficiency.json").read_text())["bn_folding"]
    assert folding["spike_count_identity"] >= 0.99  # BN folding's own float32 effect, measured
    assert "BN folding alone" in result.output
