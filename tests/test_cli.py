"""The CLI through Typer's test runner: it parses, resolves the config, calls one library function."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import snnkit.training
from snnkit import __version__
from snnkit.cli.main import app
from snnkit.training import RunResult

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"snnkit {__version__}"


def test_flags_become_overrides_on_top_of_set(monkeypatch, tmp_path):
    seen = {}

    def fake_train(cfg):
        seen["cfg"] = cfg
        return RunResult(tmp_path, 0.5, 0.6, 1, 1.0, 0.7)

    monkeypatch.setattr(snnkit.training, "train", fake_train)
    result = runner.invoke(app, ["train", "--method", "bptt", "--T", "2", "--epochs", "3", "--seed", "7",
                                 "--set", "optim.lr=0.02", "--set", "method.layout=single", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.method.name, cfg.method.T, cfg.optim.epochs, cfg.run.seed, cfg.optim.lr, cfg.run.device) == (
        "bptt", 2, 3, 7, 0.02, "cpu")
    assert cfg.method.options == {"layout": "single"}
    assert "best.pt (epoch 1, selected on val acc 70.00%) test accuracy 60.00%" in result.output


@pytest.mark.parametrize("args,message", [
    (["train", "--set", "optim.lrr=1"], "unknown key optim.lrr"),
    (["train", "no_such_recipe"], "unknown recipe 'no_such_recipe'"),
    (["train", "--method", "magic"], "unknown method 'magic'"),
    (["train", "--resume", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
])
def test_user_errors_are_one_line_without_traceback(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_train_writes_a_run_directory(tmp_path):
    result = runner.invoke(app, ["train", "--epochs", "1", "--name", "one", "--set", f"run.out_dir={tmp_path}",
                                 "--set", "data.batch_size=128", "--set", "model.width=0.25"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "one"
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best.pt", "checkpoint.pt", "config.yaml", "curves.png",
                                                     "metrics.jsonl", "results.json"]
    results = json.loads((run / "results.json").read_text())
    assert results["neuron"] == {"decay": 0.2, "v_threshold": 1.0, "reset": "soft", "v_reset": 0.0, "v_subtract": None,
                                 "detach_reset": True, "surrogate": "sigmoid", "alpha": 4.0}
    assert (tmp_path / "latest").resolve() == run.resolve()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["epoch"] == 1 and set(metrics[0]) >= {"train_loss", "val_acc", "test_acc", "test_firing_rate",
                                                              "train_seconds", "lr", "best_val_acc", "test_acc_best"}
    assert results["val_split"] == {"fraction": 0.1, "samples": 144, "seed": 0, "of": "the training set"}
    assert (results["best_val_acc"], results["test_acc_best"], results["test_acc_final"]) == (
        metrics[0]["val_acc"], metrics[0]["test_acc"], metrics[0]["test_acc"])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["model"]["width"] == 0.25 and ckpt["data"]["name"] == "digits"
    again = runner.invoke(app, ["train", "--epochs", "1", "--name", "one", "--set", f"run.out_dir={tmp_path}"])
    assert again.exit_code == 2 and "already holds a run" in again.output


@pytest.mark.slow
def test_default_train_reaches_93_percent(tmp_path):
    """The README's first command: `snnkit train` with no arguments, on the embedded digits."""
    proc = subprocess.run([Path(sys.executable).parent / "snnkit", "train"], cwd=tmp_path,
                          capture_output=True, text=True)  # 30 epochs: its budget
    assert proc.returncode == 0, proc.stderr
    metrics = [json.loads(line) for line in (tmp_path / "runs/latest/metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 30 and metrics[-1]["test_acc"] >= 0.93


def test_missing_dataset_writes_no_run_directory(tmp_path):
    result = runner.invoke(app, ["train", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'none'}",
                                 "--set", "model.name=resnet18", "--set", f"run.out_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
