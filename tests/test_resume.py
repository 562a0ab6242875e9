"""Exact resume: a run stopped anywhere and resumed equals the uninterrupted run, bit for bit on CPU;
a stop never damages the last good checkpoint."""
import dataclasses
import json

import pytest
import torch
from torch.utils.data import Subset

import snnkit.checkpoint
from snnkit.checkpoint import atomic_save, load_checkpoint
from snnkit.config import resolve_config
from snnkit.data import load_dataset
from snnkit.training import Trainer, resume, train
from snnkit.training.progress import EpochProgress
from training_helpers import raise_on_call

QUIET = EpochProgress(enabled=False)
STEPS_PER_EPOCH = 3  # 320 samples in global batches of 128, the last one short


@pytest.fixture
def data():
    digits = load_dataset("digits")
    return dataclasses.replace(digits, train=Subset(digits.train, range(320)), test=Subset(digits.test, range(128)))


def config(tmp_path, name, *extra):
    return resolve_config(None, ["optim.epochs=2", "model.width=0.125", "method.T=2",
                                 "data.batch_size=128", "run.device=cpu", f"run.out_dir={tmp_path}", f"run.name={name}", *extra])


def metrics(run):
    timing = ("train_seconds", "train_it_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a, b):
    """Same weights, optimiser, scheduler, scaler and metrics, bit for bit."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for name, p in ca["state_dict"].items():
        assert torch.equal(cb["state_dict"][name], p), name
    sa, sb = ca["train_state"], cb["train_state"]
    for key, momentum in sa["optimizer"]["state"].items():
        assert torch.equal(sb["optimizer"]["state"][key]["momentum_buffer"], momentum["momentum_buffer"])
    for key in ("epoch", "scheduler", "grad_scaler", "best_val_acc", "best_epoch", "test_acc_best"):
        assert sa[key] == sb[key], key
    assert metrics(a) == metrics(b)
    results = [json.loads((run / "results.json").read_text()) for run in (a, b)]
    assert [{k: r[k] for k in ("test_acc_final", "test_acc_best", "best_val_acc", "best_epoch")} for r in results] == \
        [{k: results[0][k] for k in ("test_acc_final", "test_acc_best", "best_val_acc", "best_epoch")}] * 2


@pytest.mark.parametrize("extra", [["method.name=rate_m"], ["method.name=bptt", "run.amp=fp16"],
                                   ["method.name=rate_s", "run.bn_recalibration_batches=2"]],
                         ids=["rate_m", "bptt-fp16", "rate_s-recalibrated"])
def test_killed_mid_epoch_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, data, extra):
    train(config(tmp_path, "full", *extra), QUIET, data)
    with monkeypatch.context() as m:
        halfway_through_epoch_2 = STEPS_PER_EPOCH + 2
        m.setattr(Trainer, "step", raise_on_call(Trainer.step, halfway_through_epoch_2, KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            train(config(tmp_path, "stopped", *extra), QUIET, data)
    stopped = tmp_path / "stopped"
    assert load_checkpoint(stopped)["train_state"]["epoch"] == 1  # the last good checkpoint, intact
    assert len(metrics(stopped)) == 1
    assert not [p.name for p in stopped.iterdir() if p.name.endswith(".tmp")]  # no half-written files
    resume(stopped, QUIET, data)
    assert_same_run(tmp_path / "full", stopped)


def test_stopped_after_the_metrics_line_but_before_the_checkpoint(tmp_path, monkeypatch, data):
    """The epoch is re-run on resume and its metrics line is not duplicated."""
    train(config(tmp_path, "full"), QUIET, data)
    saves = [0]

    def failing_save(obj, path):
        saves[0] += path.name == "checkpoint.pt"
        if saves[0] == 2:
            raise KeyboardInterrupt
        atomic_save(obj, path)

    with monkeypatch.context() as m:
        m.setattr("snnkit.training.trainer.atomic_save", failing_save)
        with pytest.raises(KeyboardInterrupt):
            train(config(tmp_path, "stopped"), QUIET, data)
    assert len(metrics(tmp_path / "stopped")) == 2
    resume(tmp_path / "stopped", QUIET, data)
    assert_same_run(tmp_path / "full", tmp_path / "stopped")


def test_a_checkpoint_write_that_dies_leaves_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"epoch": 1}, path)
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(snnkit.checkpoint.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_slow_clock_trains_the_same_weights_as_a_fast_one(tmp_path, data, monkeypatch):
    """No clock in the numerics: every clock running 10⁶× slow changes nothing but the seconds."""
    import time

    fast_run = train(config(tmp_path, "fast", "method.name=rate_m"), data=data, progress=QUIET).run_dir
    for name in ("perf_counter", "monotonic", "time"):
        real = getattr(time, name)
        start = real()
        monkeypatch.setattr(time, name, lambda real=real, start=start: start + 10**6 * (real() - start))
    slow_run = train(config(tmp_path, "slow", "method.name=rate_m"), data=data, progress=QUIET).run_dir
    monkeypatch.undo()
    assert_same_run(fast_run, slow_run)


def test_the_compile_decision_is_recorded_and_resume_follows_it(tmp_path, data):
    cfg = config(tmp_path, "plan", "method.name=rate_m", "optim.epochs=1")
    run = train(cfg, data=data, progress=QUIET).run_dir
    ckpt = load_checkpoint(run)
    assert ckpt["train_state"]["method_plan"] == {"compile": "off"}  # a short run: eager
    assert json.loads((run / "results.json").read_text())["method_plan"] == {"compile": "off"}
    ckpt["train_state"]["method_plan"] = {"compile": "on"}  # as a longer run would have decided
    trainer = Trainer(config(tmp_path, "plan", "method.name=rate_m", "optim.epochs=2"), run, data=data)
    assert trainer.method.recorder.compile == "off"
    trainer.restore(ckpt)
    assert trainer.method_plan == {"compile": "on"} and trainer.method.recorder.compile == "on"


def test_a_run_from_before_the_validation_split_is_refused_in_one_sentence(tmp_path, data):
    """Its training set included what is now the validation split: resuming would change the data mid-run."""
    run = train(config(tmp_path, "old", "optim.epochs=1"), data=data, progress=QUIET).run_dir
    ckpt = load_checkpoint(run)
    for key in ("best_val_acc", "test_acc_best"):
        del ckpt["train_state"][key]
    trainer = Trainer(config(tmp_path, "old", "optim.epochs=2"), run, data=data)
    with pytest.raises(snnkit.checkpoint.CheckpointError, match="trained before snnkit held out a validation split"):
        trainer.restore(ckpt)
