"""The edge forms through the CLI: `snnkit export --streaming / --quantize int8 / --format nir`,
and `snnkit eval --onnx` on the first two (early-exit curve; the int8 verdict on accuracy)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_helpers import invoke, run  # noqa: F401  (run is a fixture)


def test_streaming_graph_is_checked_and_reports_accuracy_after_each_step(run):
    result = invoke("export", "--streaming")
    assert result.exit_code == 0, result.output
    assert "wrote runs/latest/model_streaming.onnx: " in result.output and "3 state tensors" in result.output
    result = invoke("eval", "--onnx", "runs/latest/model_streaming.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    assert "ONNX parity: PASS" in result.output and "Early exit" in result.output
    report = json.loads(Path("report/efficiency.json").read_text())
    curve = report["accuracy_per_step"]
    assert len(curve) == 4 and curve[-1] == report["accuracy"] == report["parity"]["onnx_accuracy"]
    assert report["parity"]["spike_count_identity"] == 1.0
    assert Path("report/early_exit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_int8_graph_is_judged_on_accuracy_with_a_threshold(run):
    result = invoke("export", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "wrote runs/latest/model_int8.onnx: " in result.output and "spike inputs exact" in result.output
    result = invoke("eval", "--onnx", "runs/latest/model_int8.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    assert "int8 vs float32: PASS on accuracy" in result.output
    verdict = json.loads(Path("report/efficiency.json").read_text())["parity"]
    assert verdict["passed"] and verdict["max_accuracy_drop"] == 0.005
    assert 0 <= verdict["comparison"]["spike_count_identity"] <= 1
    drop = verdict["comparison"]["torch_accuracy"] - verdict["comparison"]["onnx_accuracy"]
    result = invoke("eval", "--onnx", "runs/latest/model_int8.onnx", "--max-accuracy-drop", str(drop - 0.01))
    assert result.exit_code == 1 and "int8 vs float32: FAIL on accuracy" in result.output


@pytest.mark.parametrize("args, message", [
    (["--format", "nir"], "cannot express snnkit's soft reset (subtract V_th); train with "
                          "`--set neuron.reset=hard` to export to NIR"),
    (["--streaming", "--quantize", "int8"], "streaming and int8 are separate forms; export them one at a time"),
])
def test_forms_that_cannot_be_written_are_refused_in_one_line(run, args, message):
    result = invoke("export", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # nothing written
