"""The trainer: seeded runs are deterministic on CPU; weight decay reaches conv/linear weights only."""
import json

import torch

from snnkit.config import resolve_config
from snnkit.training import Trainer
from snnkit.training.optim import param_groups
from snnkit.training.progress import EpochProgress


def one_epoch(tmp_path, name):
    cfg = resolve_config(None, ["optim.epochs=1", "model.width=0.25", "data.batch_size=256",
                                f"run.out_dir={tmp_path}"])
    trainer = Trainer(cfg, tmp_path / name)
    (tmp_path / name).mkdir()
    trainer.fit(EpochProgress(enabled=False))
    return trainer


def test_seeded_runs_are_identical(tmp_path):
    a, b = one_epoch(tmp_path, "a"), one_epoch(tmp_path, "b")
    for (name, p), q in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    assert untimed_metrics(tmp_path / "a") == untimed_metrics(tmp_path / "b")


def untimed_metrics(run):
    timing = {"train_seconds", "train_it_per_s"}
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_weight_decay_only_on_conv_and_linear_weights():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(2, 3))
    decayed, plain = param_groups(net, 5e-4)
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert len(plain["params"]) == 4  # conv bias, BN weight and bias, linear bias
