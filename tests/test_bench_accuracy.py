"""bench/accuracy.py: rows are methods with their own overrides, and a killed bench continues
every row where it stopped."""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pytest
from torch.utils.data import Subset

from snnkit.data import load_dataset
from snnkit.methods import METHODS
from snnkit.training import Trainer, train
from snnkit.training.progress import EpochProgress
from png_files import png_size
from training_helpers import raise_on_call

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import accuracy  # noqa: E402


def rows(tmp_path, methods=None, recipe="digits", epochs=2, train_subset=160, shared=()):
    return accuracy.parse_rows(argparse.Namespace(recipe=recipe, methods=methods, epochs=epochs,
                                                  train_subset=train_subset, out=tmp_path, set=list(shared)))


def test_default_rows_are_every_method_on_the_fashion_mnist_recipe_at_its_length(tmp_path):
    default = rows(tmp_path, recipe="fashion_mnist", epochs=None, train_subset=None)
    assert [r.label for r in default] == METHODS.names()
    for row in default:
        cfg = row.config()
        assert (cfg.recipe, cfg.method.name, cfg.optim.epochs, cfg.run.seed) == ("fashion_mnist", row.label, 30, 0)
        assert row.run_dir == tmp_path / "accuracy" / "fashion_mnist-30ep" / row.label


def test_a_row_carries_its_own_overrides(tmp_path):
    (row,) = rows(tmp_path, "rate_m@method.divide_grad_by_T=true@optim.lr=0.4")
    cfg = row.config()
    assert (cfg.method.name, cfg.method.options, cfg.optim.lr) == ("rate_m", {"divide_grad_by_T": True}, 0.4)
    assert (cfg.optim.epochs, cfg.run.name) == (2, row.label)
    assert row.run_dir.parent.name == "digits-2ep-n160"


def test_set_reaches_every_row_and_a_row_override_wins_over_it(tmp_path):
    plain, own = rows(tmp_path, "bptt,rate_m@data.batch_size=8", shared=["data.batch_size=16", "run.seed=3"])
    assert [(r.config().data.batch_size, r.config().run.seed) for r in (plain, own)] == [(16, 3), (8, 3)]


def test_a_train_subset_holds_every_class_of_a_class_sorted_dataset():
    """An image folder lists its samples class by class: its first N would be a few classes."""
    data = load_dataset("digits")
    labels = data.train.tensors[1]
    by_class = dataclasses.replace(data, train=Subset(data.train, labels.argsort(stable=True).tolist()))
    drawn = accuracy.subset(by_class, 100)
    assert sorted({int(y) for _, y in drawn.train}) == list(range(10))
    assert drawn.train.indices == accuracy.subset(by_class, 100).train.indices  # seeded
    assert len(set(drawn.train.indices)) == 100 and drawn.test is data.test


def test_an_unknown_method_stops_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        accuracy.main(["--recipe", "digits", "--methods", "bptt,nope", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "accuracy").exists()


def killed_in_epoch(row, epoch, data):
    """Train ``row`` in this process and stop it as a kill would, during ``epoch``."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "train_epoch", raise_on_call(Trainer.train_epoch, epoch, KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            train(row.config(), EpochProgress(enabled=False), data)


@pytest.mark.slow
def test_a_killed_bench_continues_every_row_where_it_stopped(tmp_path, monkeypatch):
    bptt, rate_m = rows(tmp_path, "bptt,rate_m")
    data = accuracy.subset(load_dataset("digits"), 160)
    killed_in_epoch(bptt, 1, data)  # nothing completed: the row starts again
    killed_in_epoch(rate_m, 2, data)  # epoch 1 completed: the row continues from it
    epoch_1 = (rate_m.run_dir / "metrics.jsonl").read_text()
    argv = ["--recipe", "digits", "--methods", "bptt,rate_m", "--epochs", "2", "--train-subset", "160",
            "--out", str(tmp_path)]
    accuracy.main(argv)
    assert (rate_m.run_dir / "metrics.jsonl").read_text().startswith(epoch_1)  # resumed, not redone
    group = "digits-2ep-n160"
    report = json.loads((tmp_path / f"accuracy-{group}.json").read_text())
    assert [r["row"] for r in report["results"]] == ["bptt", "rate_m"] and report["unfinished"] == []
    for r, row in zip(report["results"], (bptt, rate_m)):
        results = json.loads((row.run_dir / "results.json").read_text())
        assert r["epochs"] == 2 and len(r["test_acc"]) == len(r["epoch_seconds"]) == 2
        assert (r["final_acc"], r["best_acc"]) == (results["test_acc_final"], results["test_acc_best"]) == \
            (r["test_acc"][-1], r["test_acc"][results["best_epoch"] - 1])  # best.pt: selected on validation
        assert r["peak_rss_bytes"] > 100 * 2 ** 20 and r["cuda_max_allocated_bytes"] is None
    table = (tmp_path / f"accuracy-{group}.md").read_text()
    gap = 100 * (report["results"][1]["final_acc"] - report["results"][0]["final_acc"])
    assert f"| rate_m | 2 | {100 * report['results'][1]['final_acc']:.2f} |" in table and f"{gap:+.2f}" in table
    assert png_size(tmp_path / f"accuracy-{group}.png") == (1210, 440)

    monkeypatch.setattr(accuracy, "launch", lambda row: pytest.fail(f"{row.label} ran again"))
    accuracy.main(argv)  # both rows finished: read back, not rerun
