"""Bad inputs and faults through the CLI, as a hostile but realistic user meets them. Each ends with
its exit code, one clear line on stderr and no traceback, and leaves the disk as promised: existing
runs byte-identical, runs/latest unchanged or on a run with a checkpoint, no partial files."""
from __future__ import annotations

import builtins
import fcntl
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import snnkit.files
import snnkit.training
import snnkit.training.runs
import snnkit.training.trainer
from data_files import write_cifar10, write_idx, write_idx_set, write_image_folders
from deploy_helpers import model_and_checkpoint, write_run
from fault_helpers import TINY, DiskFull, Payload, cli, one_line_error, snapshot, temporaries
from snnkit.checkpoint import atomic_save, load_checkpoint
from snnkit.config import dump_yaml, resolve_config
from snnkit.data import load_dataset
from snnkit.errors import ConfigError
from snnkit.methods import METHODS
from snnkit.models import MODELS, ModelSpec, build_model, check_input_fits, runs_on
from snnkit.training import RunResult, Trainer
from snnkit.training.progress import EpochProgress
from training_helpers import raise_on_call


def train(out: Path, *args):
    return cli("train", "--set", f"run.out_dir={out}", *TINY, *args)


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """runs/good: a finished 2-epoch run, runs/latest -> it. Never changed: tests copy it."""
    out = tmp_path_factory.mktemp("template") / "runs"
    assert train(out, "--epochs", "2", "--name", "good").exit_code == 0
    return out


@pytest.fixture
def runs(template, tmp_path) -> Path:
    """A private copy of the template's runs folder."""
    shutil.copytree(template, tmp_path / "runs", symlinks=True)
    return tmp_path / "runs"


# --- start-up: every value checked before anything is written --------------------------------------
STARTUP = {
    "T < 1": (["-T", "0"], "method.T must be at least 1, got 0"),
    "batch size 0": (["--set", "data.batch_size=0"], "data.batch_size must be at least 1, got 0"),
    "negative batch size": (["--set", "data.batch_size=-64"], "data.batch_size must be at least 1, got -64"),
    "negative workers": (["--set", "data.workers=-1"], "data.workers must be 0 or more, got -1"),
    "negative lr": (["--set", "optim.lr=-0.1"], "optim.lr must be positive, got -0.1"),
    "lr .nan": (["--set", "optim.lr=.nan"], "optim.lr must be a finite number, got nan"),
    "lr nan": (["--set", "optim.lr=nan"], "optim.lr must be a finite number, got 'nan'"),
    "lr inf": (["--set", "optim.lr=inf"], "optim.lr must be a finite number, got 'inf'"),
    "epochs 0": (["--epochs", "0"], "optim.epochs must be at least 1, got 0"),
    "width 0": (["--set", "model.width=0"], "model.width must be positive, got 0.0"),
    "momentum 1.5": (["--set", "optim.momentum=1.5"], "optim.momentum must be in [0, 1), got 1.5"),
    "threshold nan": (["--set", "neuron.v_threshold=.nan"], "neuron.v_threshold must be a finite number"),
    "negative alpha": (["--set", "neuron.alpha=-4"], "neuron.alpha (the surrogate's sharpness) must be positive"),
    "negative seed": (["--seed", "-1"], "run.seed must be 0 or more, got -1"),
    "name latest": (["--name", "latest"], "run.name must be a plain folder name"),
    "name with a path": (["--name", "../elsewhere"], "run.name must be a plain folder name"),
    "loss weight -1": (["--method", "sltt", "--set", "method.loss_weight=-1"],
                       "method.loss_weight must be in [0, 1], got -1.0"),
    "vgg11 on 8x8": (["--set", "model.name=vgg11"], "vgg11 needs inputs of at least 16×16; digits gives 8×8"),
    "vggsnn on 8x8": (["--set", "model.name=vggsnn"], "vggsnn needs inputs of 48×48; digits gives 8×8"),
}


@pytest.mark.parametrize("case", STARTUP)
def test_bad_config_values_stop_before_anything_is_written(tmp_path, case):
    args, message = STARTUP[case]
    one_line_error(train(tmp_path / "runs", *args), 2, message)
    assert not (tmp_path / "runs").exists()


def mnist_with_no_training_images(root: Path) -> None:
    write_idx_set(root)
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))


def empty_image_folders(root: Path) -> None:
    for split in ("train", "test"):
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True)


DATA_STARTUP = {  # (write the data, dataset, model, message)
    "idx file of no images": (mnist_with_no_training_images, "mnist", "mnist_convnet",
                              "train-images-idx3-ubyte.gz holds no images"),
    "cifar batches of no rows": (lambda root: write_cifar10(root, per_batch=0), "cifar10", "mnist_convnet",
                                 "cifar10 has no training samples in"),
    "no images in the class folders": (empty_image_folders, "cifar10", "resnet18", "is not an image folder"),
    "a model for another input size": (write_idx_set, "mnist", "digits_convnet",
                                       "digits_convnet needs inputs of 8×8; mnist gives 28×28"),
}


@pytest.mark.parametrize("case", DATA_STARTUP)
def test_datasets_that_cannot_train_stop_before_anything_is_written(tmp_path, case):
    write, dataset, model, message = DATA_STARTUP[case]
    (tmp_path / "data").mkdir()
    write(tmp_path / "data")
    result = train(tmp_path / "runs", "--set", f"data.name={dataset}", "--set", f"data.root={tmp_path / 'data'}",
                   "--set", f"model.name={model}")
    one_line_error(result, 2, message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name,shape", [(name, (1, 8, 8)) for name in MODELS.names()]  # the smallest input
                         + [("digits_convnet", (3, 32, 32)), ("vggsnn", (3, 32, 32))])  # models for one size
def test_the_start_up_shape_check_agrees_with_a_real_forward_for_every_model(name, shape):
    spec = ModelSpec(name, 10, shape[0], width=0.125)
    net = build_model(spec)

    def forward(side: int) -> bool:
        return runs_on(net.eval(), (shape[0], side, side), "cpu")

    try:
        check_input_fits(net, spec, shape, "data")
    except ConfigError as e:
        assert not forward(shape[1])
        side = int(re.search(r"needs inputs of (?:at least )?(\d+)×", str(e))[1])
        assert forward(side) and not forward(side - 1)
        assert ("at least" in str(e)) == forward(2 * side)
    else:
        assert forward(shape[1])


def test_out_dir_or_run_name_on_a_file(tmp_path):
    (tmp_path / "file").write_text("mine")
    one_line_error(train(tmp_path / "file"), 2, "run.out_dir", "is a file, not a folder")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x").write_text("mine")
    one_line_error(train(tmp_path / "runs", "--name", "x"), 2, "is a file; choose another --name")
    assert snapshot(tmp_path) == {"file": b"mine", "runs/x": b"mine"}


def test_what_users_type_is_accepted(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(snnkit.training, "train",
                        lambda cfg: seen.setdefault("cfg", cfg) and RunResult(tmp_path, 0.5, 0.5, 1, 1.0))
    assert cli("train", "--set", "optim.lr=1e-3", "--set", "optim.weight_decay=5E-4", "--name", "007").exit_code == 0
    cfg = seen["cfg"]
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.run.name) == (1e-3, 5e-4, "007")
    assert resolve_config(None, ["optim.lr=1e6"]).optim.lr == 1e6


@pytest.mark.parametrize("name", METHODS.names())
def test_a_method_option_of_the_wrong_kind_is_refused_for_every_method(tmp_path, name):
    one_line_error(train(tmp_path / "runs", "--method", name, "--set", "method.no_such_option=1"), 2,
                   f"unknown key method.no_such_option for method '{name}'")
    assert not (tmp_path / "runs").exists()


# --- no code runs from a dataset file ---------------------------------------------------------------
PAYLOADS = {
    "os.system": (lambda marker: Payload(os.system, f"touch {marker}"), "batches.meta", "label_names"),
    "builtins.open": (lambda marker: Payload(builtins.open, str(marker), "w"), "data_batch_3", "data"),
    "subprocess.call": (lambda marker: Payload(subprocess.call, ["touch", str(marker)]), "test_batch", "labels"),
    "builtins.eval": (lambda marker: Payload(builtins.eval, f"open({str(marker)!r}, 'w')"), "data_batch_1", "data"),
}


@pytest.mark.parametrize("case", PAYLOADS)
def test_a_crafted_cifar_pickle_runs_nothing(tmp_path, case):
    make_payload, file, key = PAYLOADS[case]
    write_cifar10(tmp_path / "cifar")
    crafted = tmp_path / "cifar" / "cifar-10-batches-py" / file
    batch = pickle.loads(crafted.read_bytes())
    batch[key] = make_payload(tmp_path / "pwned")
    crafted.write_bytes(pickle.dumps(batch, protocol=2))
    pickle.loads(crafted.read_bytes())  # the control: plain unpickling runs the payload
    assert (tmp_path / "pwned").exists()
    (tmp_path / "pwned").unlink()
    result = train(tmp_path / "runs", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'cifar'}",
                   "--set", "model.name=mnist_convnet")
    one_line_error(result, 2, f"cifar10: {crafted} asks to load", "which a CIFAR batch never holds")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_batches_load_whatever_pickle_protocol_wrote_them(tmp_path, protocol):
    written = write_cifar10(tmp_path)
    for path in (tmp_path / "cifar-10-batches-py").iterdir():
        path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes()), protocol=protocol))
    train_set = load_dataset("cifar10", str(tmp_path)).train
    assert torch.equal(train_set.images[0].flatten(), torch.from_numpy(written["data_batch_1"][0][0]))


# --- run directories: claimed atomically, never shared ----------------------------------------------
def test_two_trainings_started_together_with_one_default_name_get_two_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(snnkit.training.runs, "default_name", lambda cfg: "same-second")
    both = threading.Barrier(2)
    claim = snnkit.training.runs.claim
    monkeypatch.setattr(snnkit.training.runs, "claim", lambda *a: (both.wait(), claim(*a))[1])
    cfg = resolve_config(None, ["optim.epochs=1", "model.width=0.125", "data.batch_size=512", "method.T=1",
                                "run.device=cpu", f"run.out_dir={tmp_path}"])
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        snnkit.training.train(cfg, EpochProgress(enabled=False)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.run_dir.name for r in results) == ["same-second", "same-second-2"]
    for r in results:
        assert load_checkpoint(r.run_dir)["train_state"]["epoch"] == 1
        assert len((r.run_dir / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_two_processes_with_one_name_one_wins_the_other_is_refused(tmp_path):
    command = [sys.executable, "-m", "snnkit.cli", "train", "--set", f"run.out_dir={tmp_path}", *TINY,
               "--epochs", "2", "--name", "same"]
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outcomes = sorted((p.wait(), p.stderr.read()) for p in procs)  # 2 epochs each
    assert [code for code, _ in outcomes] == [0, 2]
    loser = outcomes[1][1].strip().splitlines()
    assert len(loser) == 1 and ("already holds a run" in loser[0] or "being trained by another process" in loser[0])
    assert len((tmp_path / "same" / "metrics.jsonl").read_text().splitlines()) == 2
    assert load_checkpoint(tmp_path / "same")["train_state"]["epoch"] == 2


def test_a_name_that_holds_a_run_is_refused_and_the_run_is_untouched(runs):
    before = snapshot(runs)
    one_line_error(train(runs, "--name", "good"), 2, "already holds a run; choose another --name or continue "
                   f"it with --resume {runs / 'good'}")
    assert snapshot(runs) == before


@contextmanager
def held(run: Path):
    """``run`` claimed and locked, as by the process training it."""
    run.mkdir()
    holder = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        yield run
    finally:
        os.close(holder)


def test_a_run_in_progress_is_refused_by_train_resume_and_export(runs):
    with held(runs / "live") as live:
        (live / "config.yaml").write_text(dump_yaml(resolve_config(None, ["model.width=0.125"])))
        before = snapshot(runs)
        one_line_error(train(runs, "--name", "live"), 2, f"{live} is being trained by another process")
        one_line_error(cli("train", "--resume", live), 2, f"{live} is being trained by another process")
        one_line_error(cli("export", live), 2, f"{live} has no checkpoint yet")
    assert snapshot(runs) == before


def test_a_run_claimed_a_moment_ago_is_refused_as_in_progress_not_as_foreign(runs):
    """The instant after a process claims a name it holds the lock and a config still being written."""
    with held(runs / "claimed") as claimed:
        (claimed / ".config.yaml.1a2b3c4d.tmp").write_text("half a config")
        before = snapshot(runs)
        one_line_error(train(runs, "--name", "claimed"), 2, f"{claimed} is being trained by another process")
        one_line_error(cli("export", claimed), 2, f"{claimed} has no checkpoint yet")
    assert snapshot(runs) == before


def test_a_run_killed_while_writing_its_config_is_replaced_by_a_new_run_of_its_name(runs):
    killed = runs / "killed"
    killed.mkdir()
    (killed / ".lock").touch()
    (killed / ".config.yaml.1a2b3c4d.tmp").write_text("half a config")
    assert train(runs, "--epochs", "1", "--name", "killed").exit_code == 0
    assert load_checkpoint(killed)["train_state"]["epoch"] == 1 and not temporaries(runs)


def test_a_folder_of_other_files_is_not_taken_for_a_run(runs):
    (runs / "notes").mkdir()
    (runs / "notes" / "todo.txt").write_text("keep me")
    before = snapshot(runs)
    one_line_error(train(runs, "--name", "notes"), 2, "holds files that are not an snnkit run")
    assert snapshot(runs) == before and not (runs / "notes" / ".lock").exists()


def dead_run(runs: Path, name: str) -> Path:
    """What a run killed (kill -9, power loss) before its first checkpoint leaves."""
    cfg = resolve_config(None, ["optim.epochs=1", "model.width=0.125", "data.batch_size=512", "method.T=1",
                                f"run.out_dir={runs}", f"run.name={name}"])
    (runs / name).mkdir()
    (runs / name / "config.yaml").write_text(dump_yaml(cfg))
    (runs / name / ".checkpoint.pt.1a2b3c4d.tmp").write_bytes(b"half a checkpoint")
    return runs / name


def test_a_dead_run_is_started_again_by_resume(runs):
    dead = dead_run(runs, "dead")
    one_line_error(cli("export", dead), 2, f"{dead} has no checkpoint yet", f"snnkit train --resume {dead}")
    result = cli("train", "--resume", dead)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(dead)["train_state"]["epoch"] == 1 and not temporaries(runs)
    assert os.readlink(runs / "latest") == "dead"


def test_a_dead_run_is_replaced_by_a_new_run_of_its_name(runs):
    dead = dead_run(runs, "dead")
    assert train(runs, "--epochs", "1", "--name", "dead").exit_code == 0
    assert load_checkpoint(dead)["train_state"]["epoch"] == 1 and not temporaries(runs)


@pytest.mark.slow
def test_kill_9_in_the_first_epoch_leaves_latest_alone_and_a_way_forward(runs):
    proc = subprocess.Popen([sys.executable, "-m", "snnkit.cli", "train", "--set", f"run.out_dir={runs}",
                             "--epochs", "1", "--name", "victim"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (runs / "victim" / "config.yaml").exists() and proc.poll() is None:  # no clock that load can trip
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not (runs / "victim" / "checkpoint.pt").exists() and os.readlink(runs / "latest") == "good"
    one_line_error(cli("eval", runs / "victim"), 2, "has no checkpoint yet", "--resume")
    assert train(runs, "--epochs", "1", "--name", "victim").exit_code == 0
    assert os.readlink(runs / "latest") == "victim"


# --- resume -------------------------------------------------------------------------------------------
def test_resuming_a_finished_run_changes_nothing_and_says_so(runs):
    before = snapshot(runs)
    result = cli("train", "--resume", runs / "good")
    assert result.exit_code == 0 and result.stderr == ""
    assert "already finished; nothing changed: final test accuracy" in result.stdout
    assert snapshot(runs) == before


def test_a_run_stopped_before_its_results_gets_them_on_resume_without_training(runs):
    final = json.loads((runs / "good" / "results.json").read_text())
    (runs / "good" / "results.json").unlink()
    metrics = (runs / "good" / "metrics.jsonl").read_text()
    assert cli("train", "--resume", runs / "good").exit_code == 0
    again = json.loads((runs / "good" / "results.json").read_text())
    assert (again["test_acc_final"], again["test_acc_best"]) == (final["test_acc_final"], final["test_acc_best"])
    assert again["test_acc_final"] == json.loads(metrics.splitlines()[-1])["test_acc"]
    assert (runs / "good" / "metrics.jsonl").read_text() == metrics


def damage(run: Path, edit) -> Path:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")
    return run


DAMAGED = {  # (edit, message, the commands that read the entry: resume rebuilds the model from the config)
    "no weights": (lambda c: c.pop("state_dict"), "its 'state_dict' entry is missing or malformed",
                   ("export", "eval", "resume")),
    "no data kind": (lambda c: c["data"].pop("kind"), "its 'data.kind' entry is missing or malformed",
                     ("export", "eval", "resume")),
    "no model name": (lambda c: c["model"].pop("name"), "the checkpoint's model spec is damaged", ("export", "eval")),
    "a weight of another shape": (lambda c: c["state_dict"].update({"body.0.0.weight": torch.zeros(1)}),
                                  "the checkpoint's weights do not fit its model spec", ("export", "eval")),
}


@pytest.mark.parametrize("case,command", [(case, command) for case, (*_, commands) in DAMAGED.items()
                                          for command in commands])
def test_a_checkpoint_with_the_tag_but_missing_entries(runs, case, command):
    edit, message, _ = DAMAGED[case]
    run = damage(runs / "good", edit)
    before = snapshot(runs)
    args = ["train", "--resume", run] if command == "resume" else [command, run]
    one_line_error(cli(*args), 2, message)
    assert snapshot(runs) == before


def test_a_checkpoint_without_its_training_state_cannot_be_resumed(runs):
    def edit(ckpt):
        ckpt["train_state"]["epoch"] = 1  # one epoch to go
        del ckpt["train_state"]["optimizer"]

    run = damage(runs / "good", edit)
    before = snapshot(runs)
    one_line_error(cli("train", "--resume", run), 2, "the checkpoint's training state is damaged (KeyError",
                   f"{run} was left as it was")
    assert snapshot(runs) == before


# --- divergence ---------------------------------------------------------------------------------------
def test_a_huge_learning_rate_stops_at_the_first_non_finite_value_and_leaves_nothing(runs):
    """Whichever comes first stops it: an infinite loss, or a weight the step made non-finite."""
    before = snapshot(runs)
    line = one_line_error(train(runs, "--set", "optim.lr=1e20", "--name", "boom"), 2,
                          "; lower optim.lr (now 1e+20) and train again; "
                          f"{runs / 'boom'} had no checkpoint yet and was removed")
    assert re.search(r"training diverged at step \d+ of epoch 1: (the loss is inf|\S+ holds non-finite values);", line)
    assert snapshot(runs) == before


def test_a_huge_learning_rate_that_takes_epochs_to_overflow_keeps_the_last_finite_checkpoint(tmp_path):
    line = one_line_error(train(tmp_path, "--set", "optim.lr=1e6", "--name", "slow"), 2,
                          "holds non-finite values", f"{tmp_path / 'slow'} keeps its last good checkpoint (epoch ")
    # caught at a step, or after the epoch by the statistics BN recalibration re-estimates
    epoch, kept = map(int, re.search(r"(?:of|in) epoch (\d+): .* \(epoch (\d+)\)$", line).groups())
    ckpt = load_checkpoint(tmp_path / "slow")
    assert kept == epoch - 1 == ckpt["train_state"]["epoch"]
    assert all(t.isfinite().all() for t in ckpt["state_dict"].values())
    assert len((tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()) == kept
    one_line_error(cli("train", "--resume", tmp_path / "slow"), 2, f"epoch {epoch}: ", "holds non-finite values")


def poison_after(calls: int, name: str):
    """Trainer.step that, on its ``calls``-th call, leaves a NaN in the tensor ``name`` after stepping."""
    original, count = Trainer.step, [0]

    def step(self):
        original(self)
        count[0] += 1
        if count[0] == calls:
            with torch.no_grad():
                dict(self.net.state_dict(keep_vars=True))[name].view(-1)[0] = float("nan")

    return step


# TINY: 3 steps per epoch. A NaN weight is caught at its step (it need not make the next loss NaN:
# a NaN current never fires); a NaN running statistic of BN, which no step reads, after the epoch.
@pytest.mark.parametrize("calls,name,message", [
    (4, "body.0.0.weight", "training diverged at step 1 of epoch 2: body.0.0.weight holds non-finite values"),
    (6, "body.6.weight", "training diverged at step 3 of epoch 2: body.6.weight holds non-finite values"),
    (5, "body.0.1.running_mean", "training diverged in epoch 2: body.0.1.running_mean holds non-finite values"),
])
def test_nan_after_the_first_checkpoint_keeps_it(tmp_path, monkeypatch, calls, name, message):
    monkeypatch.setattr(Trainer, "step", poison_after(calls, name))
    one_line_error(train(tmp_path, "--epochs", "3", "--name", "nan"), 2, message,
                   f"{tmp_path / 'nan'} keeps its last good checkpoint (epoch 1)")
    ckpt = load_checkpoint(tmp_path / "nan")
    assert ckpt["train_state"]["epoch"] == 1 and all(t.isfinite().all() for t in ckpt["state_dict"].values())
    assert os.readlink(tmp_path / "latest") == "nan" and not temporaries(tmp_path)


def test_export_refuses_non_finite_weights(runs):
    run = damage(runs / "good", lambda c: c["state_dict"]["body.0.0.weight"].view(-1).__setitem__(0, float("inf")))
    one_line_error(cli("export", run), 2, "holds non-finite weights (body.0.0.weight): its run diverged")
    assert not (run / "model.onnx").exists() and not temporaries(runs)


# --- failures after start-up ----------------------------------------------------------------------
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:119] . DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 26214400000 bytes. Error code 12 (Cannot allocate memory)")


def test_an_allocation_failure_in_the_first_step(runs, monkeypatch):
    def allocate(*args):
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(METHODS.get("rate_m"), "train_step", allocate)
    before = snapshot(runs)
    one_line_error(train(runs, "-T", "100000", "--name", "big"), 2, "out of memory in epoch 1 ([enforce fail",
                   "lower data.batch_size or method.T", f"{runs / 'big'} had no checkpoint yet and was removed")
    assert snapshot(runs) == before


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_mid_epoch(tmp_path, workers):
    classes = [f"c{i}" for i in range(10)]
    write_image_folders(tmp_path / "images", ("train", "test"), classes)
    broken = tmp_path / "images" / "train" / "c3" / "0.png"
    broken.write_bytes(b"\x89PNG not really")
    result = train(tmp_path / "runs", "--set", "data.name=cifar10", "--set", f"data.root={tmp_path / 'images'}",
                   "--set", "model.name=mnist_convnet", "--set", f"data.workers={workers}", "--name", "img")
    one_line_error(result, 2, f"cannot read the image {broken} (not an image format PIL reads); replace or "
                   "remove it", "had no checkpoint yet and was removed")
    assert list((tmp_path / "runs").iterdir()) == []


def test_disk_full_after_the_first_checkpoint_then_resume(tmp_path, monkeypatch):
    run = tmp_path / "full"
    with monkeypatch.context() as m:
        m.setattr(snnkit.files, "os", DiskFull(full=lambda: (run / "checkpoint.pt").exists()))
        one_line_error(train(tmp_path, "--epochs", "2", "--name", "full"), 2,
                       f"cannot write {run / 'curves.png'} (No space left on device)",
                       f"{run} keeps the checkpoint of epoch 1: continue with `snnkit train --resume {run}`")
    assert load_checkpoint(run)["train_state"]["epoch"] == 1 and not temporaries(tmp_path)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert cli("train", "--resume", run).exit_code == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_disk_full_while_writing_the_first_checkpoint(runs, monkeypatch):
    before = snapshot(runs)
    monkeypatch.setattr(snnkit.files, "os", DiskFull(room=4096))  # small files fit, checkpoints do not
    one_line_error(train(runs, "--epochs", "1", "--name", "full"), 2,
                   f"cannot write {runs / 'full'}/", ".pt (No space left on device)", "was removed")
    assert snapshot(runs) == before


def test_ctrl_c_in_the_first_epoch(runs, monkeypatch):
    monkeypatch.setattr(Trainer, "step", raise_on_call(Trainer.step, 2, KeyboardInterrupt))
    before = snapshot(runs)
    one_line_error(train(runs, "--name", "stopped"), 130, f"interrupted; {runs / 'stopped'} had no checkpoint "
                   "yet and was removed")
    assert snapshot(runs) == before


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as in a terminal, also where the tests run as a background job
    (started with ``&``, which leaves SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_as_the_first_checkpoint_lands(runs, monkeypatch, ctrl_c_raises):
    """The signal comes the moment checkpoint.pt is renamed into place: the epoch is committed
    whole, and the line says what is on disk (a race CI once hit)."""
    def save_then_interrupt(obj, path):
        atomic_save(obj, path)
        if path.name == "checkpoint.pt":
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(snnkit.training.trainer, "atomic_save", save_then_interrupt)
    one_line_error(train(runs, "--epochs", "3", "--name", "cut"), 130, f"interrupted; {runs / 'cut'} keeps the "
                   f"checkpoint of epoch 1: continue with `snnkit train --resume {runs / 'cut'}`")
    assert load_checkpoint(runs / "cut")["train_state"]["epoch"] == 1
    assert (runs / "latest").resolve() == (runs / "cut").resolve()


def stop_after_first_checkpoint(cwd: Path, sig: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "snnkit.cli", "train", *TINY, "--epochs", "1000", "--name",
                             "long"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (cwd / "runs" / "long" / "checkpoint.pt").exists() and proc.poll() is None:  # no clock: load
        time.sleep(0.05)  # only makes the first checkpoint come later
    proc.send_signal(sig)
    return subprocess.CompletedProcess(proc.args, proc.wait(), None, proc.stderr.read())


@pytest.mark.slow
def test_sigterm_says_what_ctrl_c_says(tmp_path):
    (tmp_path / "int").mkdir()
    (tmp_path / "term").mkdir()
    interrupted = stop_after_first_checkpoint(tmp_path / "int", signal.SIGINT)
    terminated = stop_after_first_checkpoint(tmp_path / "term", signal.SIGTERM)
    assert (interrupted.returncode, terminated.returncode) == (130, 143)
    assert terminated.stderr == interrupted.stderr
    assert terminated.stderr.startswith("interrupted; runs/long keeps the checkpoint of epoch ")
    assert terminated.stderr.count("\n") == 1 and "--resume runs/long" in terminated.stderr
    assert load_checkpoint(tmp_path / "term" / "runs" / "long")["train_state"]["epoch"] >= 1


# --- deploy entry points ----------------------------------------------------------------------------
@pytest.fixture
def exported(tmp_path, monkeypatch) -> Path:
    """runs/tiny/checkpoint.pt and its model.onnx, cwd = tmp_path."""
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path, "tiny", model_and_checkpoint("digits_convnet", width=0.25)[1])
    assert cli("export").exit_code == 0
    return tmp_path / "runs" / "tiny" / "model.onnx"


def foreign_graph(path: Path, input_shape: list, classes: int, metadata: dict | None = None) -> Path:
    """A graph made elsewhere that happens to use snnkit's input and output names."""
    features = int(np.prod(input_shape))
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Cast", ["logits"], ["spike_counts"], to=TensorProto.INT64)]
    graph = helper.make_graph(
        nodes, "foreign", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
         helper.make_tensor_value_info("spike_counts", TensorProto.INT64, ["batch", classes])],
        [onnx.numpy_helper.from_array(np.ones((features, classes), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, metadata or {})
    onnx.save(model, path)
    return path


DEPLOY = {
    "export onto a folder": (lambda p: ["export", "-o", p.parent], "is a folder; give a file path"),
    "eval batch size 0": (lambda p: ["eval", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    "foreign graph, other input": (
        lambda p: ["eval", "--onnx", foreign_graph(p.with_name("f.onnx"), [3], 10), p.parent],
        "does not expose per-step membranes and spikes for layer '0.2' of this checkpoint"),
    "foreign graph, other classes": (
        lambda p: ["eval", "--onnx", foreign_graph(p.with_name("f.onnx"), [1, 8, 8], 5), p.parent],
        "does not expose per-step membranes and spikes for layer '0.2' of this checkpoint"),
    "metadata not JSON": (
        lambda p: ["eval", "--onnx", foreign_graph(p.with_name("f.onnx"), [1, 8, 8], 10,
                                                   {"snnkit_version": "0.1", "T": "four"})],
        "has snnkit metadata whose values are not JSON"),
    "snnkit metadata lacking what eval reads": (
        lambda p: ["eval", "--onnx", foreign_graph(p.with_name("f.onnx"), [1, 8, 8], 10,
                                                   {"snnkit_version": '"0.1.0"', "T": "4"})],
        "is an snnkit unrolled graph whose metadata lacks 'input_kind'; re-export it"),
}


@pytest.mark.parametrize("case", DEPLOY)
def test_deploy_bad_inputs(exported, case):
    make_args, message = DEPLOY[case]
    args = make_args(exported)
    before = snapshot(exported.parents[2])
    one_line_error(cli(*args), 2, message)
    assert snapshot(exported.parents[2]) == before


def test_disk_full_while_exporting(exported, monkeypatch):
    exported.unlink()
    monkeypatch.setattr(snnkit.files, "os", DiskFull(room=1000))
    one_line_error(cli("export"), 2, "cannot write runs/latest/model.onnx (No space left on device)")
    assert not exported.exists() and not temporaries(exported.parents[2])


# --- file modes ---------------------------------------------------------------------------------------
def test_every_file_a_run_writes_follows_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        assert train(tmp_path, "--epochs", "1", "--name", "modes").exit_code == 0
        (tmp_path / "plain").write_text("")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*(tmp_path / "modes").iterdir(), tmp_path / "plain"]}
    assert modes == dict.fromkeys(modes, 0o640) and len(modes) == 8
