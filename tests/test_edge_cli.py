"""The edge forms through the CLI: `snnkit export --form streaming|int8|nir`, and
`snnkit eval --onnx` on the first two (the parity verdict and the early-exit curve; the int8 gate
on accuracy); the forms that cannot be written or evaluated, in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploy_helpers import invoke
from snnkit.checkpoint import load_checkpoint
from snnkit.deploy import quantize
from snnkit.deploy.evaluate import evaluate, evaluation_batches
from snnkit.deploy.runtime import load_onnx


def report() -> dict:
    return json.loads(Path("report/efficiency.json").read_text())


def test_streaming_graph_passes_parity_and_reports_accuracy_after_each_step(run):
    result = invoke("export", "--form", "streaming")
    assert result.exit_code == 0, result.output
    assert "wrote runs/latest/model_streaming.onnx: " in result.output and "3 state tensors" in result.output
    result = invoke("eval", "--onnx", "runs/latest/model_streaming.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    assert "ONNX streaming graph (CPUExecutionProvider)" in result.output
    assert "ONNX parity at T = 4: PASS" in result.output and "Early exit" in result.output
    r = report()
    assert r["form"] == "streaming" and r["parity"]["passed"] and r["parity"]["verdict"]["unexplained"] == 0
    # 360 samples × (8·8·8 + 16·8·8 + 32·4·4 neurons at width 0.25) × 4 steps, as the unrolled graph
    assert r["parity"]["verdict"]["spikes_compared"] == 360 * (512 + 1024 + 512) * 4
    curve = r["accuracy_per_step"]
    assert len(curve) == 4 and curve[-1] == r["accuracy"] == r["parity"]["outputs"]["accuracy_b"]
    assert Path("report/early_exit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_streaming_graph_is_charged_its_stem_at_every_step(run):
    """The same spikes and accumulates as the unrolled graph; the analog stem costs T MAC passes per
    sample in the streaming graph (each call computes it) against one in the unrolled graph."""
    reports = {}
    for form, args in (("unrolled", []), ("streaming", ["--form", "streaming"])):
        assert invoke("export", *args, "-o", f"{form}.onnx").exit_code == 0
        result = invoke("eval", "--onnx", f"{form}.onnx", "runs/latest", "--report-dir", "report")
        assert result.exit_code == 0, result.output
        reports[form] = report()["efficiency"]
    unrolled, streaming = reports["unrolled"], reports["streaming"]
    assert streaming["acs_per_sample"] == unrolled["acs_per_sample"]
    assert streaming["spikes_per_sample"] == unrolled["spikes_per_sample"]
    stem = [(u, s) for u, s in zip(unrolled["synaptic_layers"], streaming["synaptic_layers"]) if u["fed_by"] == "analog"]
    assert [(u["runs_per_sample"], s["runs_per_sample"]) for u, s in stem] == [(1, 4)]
    assert streaming["macs_per_sample"] == 4 * unrolled["macs_per_sample"]


def test_int8_graph_is_judged_on_accuracy_with_spikes_reported(run):
    result = invoke("export", "--form", "int8")
    assert result.exit_code == 0, result.output
    assert "wrote runs/latest/model_int8.onnx: " in result.output and "3 spike inputs exact" in result.output
    result = invoke("eval", "--onnx", "runs/latest/model_int8.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    assert "int8 graph at T = 4: PASS on accuracy" in result.output and "identical spikes" in result.output
    r = report()
    parity = r["parity"]
    assert r["form"] == "int8" and r["accuracy_per_step"] is None
    assert parity["passed"] and parity["max_accuracy_drop"] == 0.005 and parity["accuracy_drop"] <= 0.005
    assert parity["accuracy_drop"] == parity["outputs"]["accuracy_a"] - parity["outputs"]["accuracy_b"]
    verdict = parity["verdict"]
    assert verdict["spikes_compared"] == 360 * (512 + 1024 + 512) * 4
    assert verdict["identical"] == 1 - verdict["differing_spikes"] / verdict["spikes_compared"]
    assert 0 <= parity["outputs"]["spike_count_identity"] <= 1
    same, differ = verdict["spikes_compared"] - verdict["differing_spikes"], verdict["differing_spikes"]
    assert f"{same:,} of {verdict['spikes_compared']:,} ({differ:,}" in result.output  # counts, not a rounded %


def test_operations_are_counted_on_the_int8_graphs_own_spikes(run, monkeypatch):
    monkeypatch.setattr(quantize, "MAX_FLOAT_LAYERS", 0)  # all in int8: its spikes differ most from float32's
    assert invoke("export", "--form", "int8").exit_code == 0
    result = evaluate(onnx="runs/latest/model_int8.onnx")
    model = load_onnx("runs/latest/model_int8.onnx")
    counts = np.concatenate([model.run(x.numpy())[1] for x, _ in evaluation_batches(load_checkpoint(run), None, 100)])
    assert [r["spikes_per_sample"] for r in result.report["spiking_layers"]] == pytest.approx(counts.mean(0), rel=1e-12)
    assert result.parity.outputs.spike_count_identity < 0.5  # the float32 twin's spikes differ: these are the graph's


@pytest.mark.slow
def test_int8_graph_of_a_trained_model_keeps_its_accuracy_and_fails_when_it_does_not(trained_digits, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained = str(trained_digits())
    result = invoke("export", trained, "--form", "int8", "-o", "int8.onnx")
    assert result.exit_code == 0, result.output
    ok = invoke("eval", "--onnx", "int8.onnx", trained, "--report-dir", "report")
    assert ok.exit_code == 0 and "PASS on accuracy" in ok.output, ok.output
    parity = report()["parity"]
    assert parity["outputs"]["accuracy_b"] > 0.8 and parity["outputs"]["prediction_agreement"] > 0.98
    model = onnx.load("int8.onnx")  # the classifier's int8 weights negated: its accuracy collapses
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    weight_dq = next(n for n in model.graph.node if gemm.input[1] in n.output)
    w = next(i for i in model.graph.initializer if i.name == weight_dq.input[0])
    w.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(w), w.name))
    onnx.save(model, "int8.onnx")
    bad = invoke("eval", "--onnx", "int8.onnx", trained, "--report-dir", "report")
    assert bad.exit_code == 3 and "FAIL on accuracy" in bad.output.strip().splitlines()[-1], bad.output
    assert not report()["parity"]["passed"] and report()["parity"]["accuracy_drop"] > 0.5


@pytest.mark.parametrize("args, message", [
    (["export", "--form", "nir"], "cannot express snnkit's soft reset (subtract V_th); train with "
                                    "`--set neuron.reset=hard` to export to NIR"),
    (["export", "--form", "streaming", "--quantize", "int8"],
     "--form streaming and --quantize int8 name different forms; give one --form"),
    (["export", "--form", "streaming", "--T", "0"], "--T 0 is not a number of time steps snnkit exports; give 1 to 4,096"),
    (["eval", "--max-accuracy-drop", "2"],
     "--max-accuracy-drop must be between 0 and 1 (0.005 is 0.5 pp), got 2.0"),
])
def test_forms_that_cannot_be_written_are_refused_in_one_line(run, args, message):
    result = invoke(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # nothing written


def nir_file(run: Path) -> str:
    (run / "model.nir").write_bytes(b"\x89HDF\r\n\x1a\n")  # NIR files are HDF5
    return str(run / "model.nir")


def without_states(run: Path) -> str:
    assert invoke("export", "--form", "streaming").exit_code == 0
    model = onnx.load(run / "model_streaming.onnx")
    kept = [p for p in model.metadata_props if p.key != "states"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, run / "model_streaming.onnx")
    return str(run / "model_streaming.onnx")


@pytest.mark.parametrize("graph, message", [
    (nir_file, "is a NIR graph, which `snnkit eval --onnx` does not run; evaluate the checkpoint"),
    (without_states, "is an snnkit streaming graph whose metadata lacks 'states'; re-export it"),
])
def test_a_graph_eval_cannot_run_is_refused_in_one_line(run, graph, message):
    result = invoke("eval", "--onnx", graph(run))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert message in result.stderr


def test_the_ten_line_onnxruntime_loop_of_the_readme_runs_the_streaming_graph(run):
    """docs/deploy.md's streaming loop, verbatim in spirit: plain onnxruntime, states from the metadata."""
    import onnxruntime as ort

    assert invoke("export", "--form", "streaming").exit_code == 0
    frames = [np.random.default_rng(0).standard_normal((5, 1, 8, 8), dtype=np.float32)] * 4
    sess = ort.InferenceSession("runs/latest/model_streaming.onnx", providers=["CPUExecutionProvider"])
    states = json.loads(sess.get_modelmeta().custom_metadata_map["states"])
    v = {s["input"]: np.full((len(frames[0]), *s["shape"]), s["initial"], np.float32) for s in states}
    seen = []
    for x in frames:
        logits, counts, *nxt = sess.run(None, {"input": x, **v})
        v = {s["input"]: n for s, n in zip(states, nxt)}
        seen.append((logits, counts))
    runner = load_onnx("runs/latest/model_streaming.onnx")
    driven = runner.drive(runner.session, ["logits", "spike_counts"], frames[0])  # the same graph, the same calls
    for (logits, counts), (logits_t, counts_t) in zip(seen, driven, strict=True):
        np.testing.assert_array_equal(logits, logits_t)
        np.testing.assert_array_equal(counts, counts_t)
