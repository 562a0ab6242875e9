"""bench/figure4.py: the three panels come from the measurements they name, memory and time are
kept apart from the accuracy runs, and a finished figure is read back, not rerun."""
import json
import sys
from pathlib import Path

import pytest

from png_files import png_size

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import accuracy  # noqa: E402
import figure4  # noqa: E402
import train_cost  # noqa: E402

ARGV = ["--recipe", "digits", "--T", "1,2", "--cost", "bptt,rate_m", "--accuracy", "rate_m",
        "--train-subset", "64", "--iters", "1"]


@pytest.fixture
def in_process(monkeypatch):
    """Every measurement and training in this process (the bench gives each its own), rate_m's
    spike pass eager (the bench compiles it, as a long run would)."""
    monkeypatch.setattr(train_cost, "COMPILED", {})
    monkeypatch.setattr(train_cost, "run_child", train_cost.measure)
    monkeypatch.setattr(accuracy, "launch", accuracy.run_row)


def test_figure4_measures_every_row_at_every_T_and_trains_the_accuracy_rows(tmp_path, in_process, monkeypatch):
    figure4.main([*ARGV, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "figure4-digits.json").read_text())
    saved = {(r["row"], r["T"]): r["saved_bytes"] for r in report["cost"]}
    assert sorted(saved) == [("bptt", 1), ("bptt", 2), ("rate_m", 1), ("rate_m", 2)]
    assert saved["rate_m", 2] == saved["rate_m", 1] and saved["bptt", 2] > saved["bptt", 1]  # the paper's claim
    assert all(r["x_bptt"] > 0 for r in report["cost"])
    assert [(r["method"], r["T"]) for r in report["accuracy"]] == [("rate_m", 1), ("rate_m", 2)]
    for r in report["accuracy"]:
        run = tmp_path / "accuracy" / "digits-1ep-n64" / f"rate_m@method.T={r['T']}"
        cfg = json.loads((run / "results.json").read_text())
        assert r["final_acc"] == cfg["test_acc_final"]
    assert report["budget"] == "1 epoch on 64 training samples, seed 0" and report["unfinished"] == []
    assert "| 2 | rate_m |" in (tmp_path / "figure4-digits.md").read_text()
    assert png_size(tmp_path / "figure4-digits.png") == (1540, 462)

    monkeypatch.setattr(train_cost, "run_child", lambda s: pytest.fail(f"{s.row} T={s.T} measured again"))
    monkeypatch.setattr(accuracy, "launch", lambda row: pytest.fail(f"{row.label} trained again"))
    figure4.main([*ARGV, "--out", str(tmp_path)])  # the kept measurement and the finished runs


def test_other_settings_measure_again(tmp_path, in_process):
    alone = [*ARGV, "--accuracy", "", "--cost", "bptt", "--out", str(tmp_path)]
    figure4.main(alone)
    figure4.main([*alone, "--T", "1"])
    kept = json.loads((tmp_path / "figure4-digits-cost.json").read_text())
    assert kept["settings"]["T"] == [1] and {r["T"] for r in kept["results"]} == {1}


def test_an_unknown_cost_row_stops_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        figure4.main(["--recipe", "digits", "--cost", "bptt,nope", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "unknown rows nope" in capsys.readouterr().err
    assert not tmp_path.joinpath("accuracy").exists()
