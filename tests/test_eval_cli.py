"""`snnkit export` and `snnkit eval` through the CLI: defaults to runs/latest, parity and its
failure, the report files, and one clear line (exit 2, no traceback) for every bad input."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

from deploy_helpers import invoke
from fault_helpers import one_line_error
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
    assert "digits test accuracy at T = 4, PyTorch:" in result.output and "Spike efficiency" in result.output


def test_export_then_eval_onnx_reports_parity_and_writes_the_report(run):
    result = invoke("export")
    assert result.exit_code == 0, result.output
    assert "wrote runs/latest/model.onnx: " in result.output and "T = 4, L = 3 spiking layers, opset 18" in result.output
    result = invoke("eval", "--onnx", "runs/latest/model.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    assert "ONNX parity at T = 4: PASS" in result.output and "ONNX unrolled graph (CPUExecutionProvider)" in result.output
    report = json.loads(Path("report/efficiency.json").read_text())
    parity = report["parity"]
    assert parity["passed"] and parity["verdict"]["unexplained"] == 0 and parity["T"] == 4
    # 360 samples × (8·8·8 + 16·8·8 + 32·4·4 neurons at width 0.25) × 4 steps
    verdict, outputs = parity["verdict"], parity["outputs"]
    assert verdict["spikes_compared"] == 360 * (512 + 1024 + 512) * 4
    # the weights are dyadic but the normalised digits are not, so the first conv rounds on each side and
    # a flip at the threshold is possible (explained, and judged with the logits by the verdict); without
    # one the counts agree, and each changed prediction moves an accuracy (a float64 k/N) by 1/N
    assert verdict["rounding_flips"] + verdict["cascade_flips"] > 0 or outputs["spike_count_identity"] == 1.0
    assert abs(outputs["accuracy_a"] - outputs["accuracy_b"]) <= 1 - outputs["prediction_agreement"] + 2.0 ** -50
    assert outputs["accuracy_b"] == report["accuracy"]  # the graph's accuracy, the same number
    eff = report["efficiency"]
    assert [r["name"] for r in eff["spiking_layers"]] == ["0.2", "1.2", "3.2"]
    assert eff["samples"] == 360 and eff["energy"]["fp32"]["snn_pj"] > 0
    assert Path("report/efficiency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_altered_onnx_weight_fails_parity_and_names_where_it_starts(exported):
    model = onnx.load(exported)
    second_conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    weight = next(i for i in model.graph.initializer if i.name == second_conv.input[1])
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5 + 0.05, weight.name))
    onnx.save(model, exported)
    result = invoke("eval", "--onnx", str(exported), "--report-dir", "report")
    assert result.exit_code == 3, result.output  # a failed verdict, not an error (2) or a crash (1)
    assert result.output.strip().splitlines()[-1] == "unrolled graph, ONNX parity at T = 4: FAIL, " \
        f"{json.loads(Path('report/efficiency.json').read_text())['parity']['verdict']['unexplained']:,} spikes unexplained"
    first = json.loads(Path("report/efficiency.json").read_text())["parity"]["verdict"]["first_unexplained"]
    assert (first["what"], first["layer"], first["step"]) == ("membrane", "1.2", 0)
    assert first["difference"] > 1e3 * first["bound"]


def set_metadata(path: Path, **props) -> Path:
    model = onnx.load(path)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **props})
    onnx.save(model, path)
    return path


def test_a_foreign_metadata_key_is_tolerated(exported):
    set_metadata(exported, **{"onnx.quant.pre_process": "onnxruntime.quant"})  # as onnxruntime's quantizer adds
    result = invoke("eval", "--onnx", str(exported))
    assert result.exit_code == 0, result.output
    assert "ONNX parity at T = 4: PASS" in result.output


def test_export_for_another_T_is_evaluated_at_that_T(run):
    result = invoke("export", "--T", "2", "-o", "runs/latest/t2.onnx")
    assert result.exit_code == 0, result.output
    assert "T = 2, L = 3 spiking layers" in result.output
    result = invoke("eval", "--onnx", "runs/latest/t2.onnx")
    assert result.exit_code == 0, result.output
    assert "digits test accuracy at T = 2, ONNX" in result.output and "ONNX parity at T = 2: PASS" in result.output


def test_a_graph_that_runs_fewer_steps_than_it_claims_fails(run):
    assert invoke("export", "--T", "2").exit_code == 0
    set_metadata(run / "model.onnx", T="4")
    result = invoke("eval", "--onnx", str(run / "model.onnx"), "--report-dir", "report")
    assert result.exit_code == 3, result.output
    first = json.loads(Path("report/efficiency.json").read_text())["parity"]["verdict"]["first_unexplained"]
    assert (first["what"], first["layer"], first["difference"], first["bound"]) == ("steps", "0.2", 2, 4)


def test_a_graph_with_another_decay_than_it_records_fails(run):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["model"]["neuron"]["decay"] = 0.5
    torch.save(ckpt, run / "checkpoint.pt")
    assert invoke("export").exit_code == 0  # the graph computes λ = 0.5
    ckpt["model"]["neuron"]["decay"] = 0.2
    torch.save(ckpt, run / "checkpoint.pt")  # ... and claims the checkpoint with λ = 0.2
    sha = hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()
    set_metadata(run / "model.onnx", neuron=json.dumps(ckpt["model"]["neuron"]),
                 checkpoint=json.dumps({"file": "checkpoint.pt", "sha256": sha}))
    result = invoke("eval", "--onnx", str(run / "model.onnx"), "--report-dir", "report")
    assert result.exit_code == 3, result.output
    first = json.loads(Path("report/efficiency.json").read_text())["parity"]["verdict"]["first_unexplained"]
    assert (first["what"], first["layer"], first["step"]) == ("membrane", "0.2", 1)  # step 0 has no decay


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
                            "has no snnkit metadata; give the checkpoint it was exported from"),
    "dataset of another shape": (lambda run: ["eval", str(other_dataset(run))],
                                 "dataset 'rgb8_for_tests' gives samples of shape (3, 8, 8) with 10 classes "
                                 "but the model expects (1, 8, 8) with 10"),
    "unsupported opset": (lambda run: ["export", "--opset", "13"], "--opset 13 is not supported"),
    "checkpoint changed since export": (
        lambda run: (torch.save({**torch.load(run / "checkpoint.pt", weights_only=True), "T": 8}, run / "checkpoint.pt"),
                     ["eval", "--onnx", str(run / "model.onnx")])[1],
        "model.onnx was exported from (its SHA-256 differs); give that checkpoint"),
    "graph whose checkpoint is nowhere": (
        lambda run: (shutil.move(run / "model.onnx", "moved.onnx"), shutil.rmtree(run.parent),
                     ["eval", "--onnx", "moved.onnx"])[2],
        "moved.onnx was exported from checkpoint.pt (SHA-256 "),
    "zero steps": (lambda run: ["export", "--T", "0"], "--T 0 is not a number of time steps snnkit exports; give 1 to"),
    "more steps than any graph runs": (lambda run: ["export", "--form", "streaming", "--T", "100000"],
                                       "--T 100000 is not a number of time steps snnkit exports; give 1 to 4,096"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_line_without_traceback(exported, case):
    make_args, message = BAD_INPUTS[case]
    result = invoke(*make_args(exported.parent))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def moved_graph(run: Path) -> str:
    shutil.move(run / "model.onnx", "elsewhere.onnx")
    return "elsewhere.onnx"


def moved_run(run: Path) -> str:
    """Exported beside the run, then the run renamed: the recorded relative path breaks."""
    assert invoke("export", "-o", "graphs/model.onnx").exit_code == 0
    run.rename(run.with_name("renamed"))
    (run.parent / "latest").unlink()
    return "graphs/model.onnx"


def copied_checkpoint(run: Path) -> str:
    """The graph and a copy of its checkpoint taken elsewhere, the run gone."""
    Path("elsewhere").mkdir()
    shutil.copy(run / "model.onnx", "elsewhere/model.onnx")
    shutil.copy(run / "checkpoint.pt", "elsewhere/weights.pt")
    shutil.rmtree(run.parent)
    return "elsewhere/model.onnx"


@pytest.mark.parametrize("place", [
    lambda run: (invoke("export", "-o", "out/deep/model.onnx"), "out/deep/model.onnx")[1],  # found at its relative path
    moved_graph,  # found in runs/ by its SHA-256
    moved_run,  # likewise
    copied_checkpoint,  # found beside the graph, though named otherwise
], ids=["export -o elsewhere", "moved graph", "moved run", "copied checkpoint"])
def test_eval_finds_the_checkpoint_wherever_the_graph_goes(exported, place):
    graph = place(exported.parent)
    assert not any(str(Path.cwd()) in p.value for p in onnx.load(graph).metadata_props)  # no absolute path
    result = invoke("eval", "--onnx", graph)
    assert result.exit_code == 0, result.output
    assert "ONNX parity at T = 4: PASS" in result.output


def test_the_graph_records_its_checkpoint_relative_to_itself_and_never_absolutely(exported):
    assert invoke("export", "-o", "out/model.onnx").exit_code == 0
    recorded = json.loads({p.key: p.value for p in onnx.load("out/model.onnx").metadata_props}["checkpoint"])
    assert recorded["relative"] == "../runs/tiny/checkpoint.pt" and recorded["file"] == "checkpoint.pt"
    assert recorded["bytes"] == (exported.parent / "checkpoint.pt").stat().st_size
    assert recorded["sha256"] == hashlib.sha256((exported.parent / "checkpoint.pt").read_bytes()).hexdigest()


def test_onnx_from_elsewhere_is_evaluated_against_a_given_checkpoint(exported):
    strip_metadata(exported)
    result = invoke("eval", "--onnx", str(exported), "runs/latest")
    assert result.exit_code == 0, result.output
    assert "ONNX parity at T = 4: PASS" in result.output


@pytest.mark.slow
def test_quickstart_chain_train_export_eval(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("train", "--epochs", "1").exit_code == 0
    assert invoke("export").exit_code == 0
    result = invoke("eval", "--onnx", "runs/latest/model.onnx", "--report-dir", "report")
    assert result.exit_code == 0, result.output
    parity = json.loads(Path("report/efficiency.json").read_text())["parity"]
    assert parity["passed"] and parity["verdict"]["unexplained"] == 0
    outputs = parity["outputs"]
    # a passing verdict still lets explained flips change a prediction, and each changed one moves an
    # accuracy by 1/N; the fractions are float64 quotients, rounded by ≤ 2⁻⁵³ each
    assert outputs["accuracy_b"] > 0.5
    assert abs(outputs["accuracy_a"] - outputs["accuracy_b"]) <= 1 - outputs["prediction_agreement"] + 2.0 ** -50
    folding = json.loads(Path("report/efficiency.json").read_text())["bn_folding"]
    assert folding["spike_count_identity"] >= 0.99  # BN folding's own float32 effect, measured
    assert "BN folding alone" in result.output


@pytest.fixture
def elsewhere(run) -> Path:
    """The run trained with ``--set run.out_dir=exp``: exp/tiny and exp/latest, no runs/."""
    shutil.move(run.parent, "exp")
    return Path("exp")


def test_a_run_out_dir_is_reached_without_naming_the_run(elsewhere):
    for args in (["eval", "exp"], ["eval", "--runs", "exp"]):  # the folder as the run, or as --runs
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert "(checkpoint exp/latest/checkpoint.pt)" in result.output
    assert invoke("export", "exp").exit_code == 0 and (elsewhere / "tiny" / "model.onnx").is_file()
    assert invoke("export", "--runs", "exp", "--form", "streaming").exit_code == 0
    shutil.move(elsewhere / "tiny" / "model_streaming.onnx", "graph.onnx")  # its checkpoint: found under --runs
    result = invoke("eval", "--onnx", "graph.onnx", "--runs", "exp")
    assert result.exit_code == 0, result.output
    assert "(checkpoint exp/tiny/checkpoint.pt)" in result.output


@pytest.mark.parametrize("args", [["eval"], ["export"], ["export", "--runs", "nowhere"]])
def test_no_latest_run_says_where_it_looked_and_what_to_pass(elsewhere, args):
    where = "nowhere" if "--runs" in args else "runs"
    one_line_error(invoke(*args), 2, f"no run given and no {where}/latest (the newest run with a checkpoint under "
                                     f"{where}/)", "--runs DIR for runs trained with --set run.out_dir=DIR")
    assert not Path("runs").exists() and sorted(p.name for p in (elsewhere / "tiny").iterdir()) == ["checkpoint.pt"]


def test_a_run_and_runs_together_are_refused(elsewhere):
    one_line_error(invoke("eval", "exp/tiny", "--runs", "exp"), 2, "exp/tiny and --runs exp both name the run")
