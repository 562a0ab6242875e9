"""The training loop: a method is handed batches and a ``step``; the loop never asks which it is."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..checkpoint import CHECKPOINT_NAME, atomic_save, load_checkpoint, make_checkpoint
from ..config import Config, config_from_dict, dump_yaml
from ..data import DataBundle, encode, load_dataset
from ..errors import ConfigError, SnnkitError
from ..methods import Method, build_method
from ..models import ModelSpec, build_model
from ..spiking import SpikingNet, firing_rate
from .optim import make_optimizer
from .progress import EpochProgress, Meter

log = logging.getLogger("snnkit.train")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    final_acc: float
    best_acc: float
    best_epoch: int
    seconds: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name} but this machine has no CUDA device; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def make_loader(dataset, batch_size: int, workers: int, shuffle: bool, seed: int, device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0, drop_last=False)


@torch.no_grad()
def evaluate(net: SpikingNet, loader: DataLoader, T: int, kind: str, device) -> dict:
    """Accuracy, loss and firing rate of the plain spiking network (Heaviside, no surrogate)."""
    net.eval()
    n = correct = loss = spikes = 0.0
    slots = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits_seq, modes = net.run_multistep(encode(x, T, kind))
        logits = logits_seq.mean(0)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        n += y.shape[0]
        spikes += firing_rate(modes) * y.shape[0]
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1), "firing_rate": spikes / max(n, 1)}


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, data: Optional[DataBundle] = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device)
        self.data = data if data is not None else load_dataset(cfg.data.name, cfg.data.root)
        self.spec = ModelSpec(cfg.model.name, self.data.num_classes, self.data.in_channels,
                              cfg.neuron, cfg.model.width)
        torch.manual_seed(cfg.run.seed)
        self.net = build_model(self.spec).to(self.device)
        self.method: Method = build_method(cfg.method.name, cfg.method.T, cfg.method.options)
        self.method.check(self.net)
        self.optimizer, self.scheduler = make_optimizer(self.net, cfg.optim)
        self.run_dir = run_dir
        self.epoch = 0
        self.best_acc, self.best_epoch = 0.0, -1

    # --- one epoch: the loop that never asks which method it holds ------------------------------
    def train_epoch(self, progress: EpochProgress) -> dict:
        cfg, T, kind = self.cfg, self.cfg.method.T, self.data.kind
        torch.manual_seed(cfg.run.seed + self.epoch)  # per-epoch seeding: resume is exact
        loader = make_loader(self.data.train, cfg.data.batch_size, cfg.data.workers, True,
                             cfg.run.seed + self.epoch, self.device)
        self.net.train()
        meter = Meter()
        for x, y in progress.track(loader, meter, f"epoch {self.epoch + 1}/{cfg.optim.epochs}"):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            out = self.method.train_step(self.net, encode(x, T, kind), y, self.step)
            meter.update(out.loss, out.logits, y, out.firing_rate)
        return meter.summary()

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # --- the run ---------------------------------------------------------------------------------
    def fit(self, progress: EpochProgress) -> RunResult:
        cfg = self.cfg
        start = time.perf_counter()
        test_loader = make_loader(self.data.test, cfg.data.batch_size, cfg.data.workers, False, 0, self.device)
        metrics = {}
        while self.epoch < cfg.optim.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_epoch(progress)
            test = evaluate(self.net, test_loader, cfg.method.T, self.data.kind, self.device)
            self.scheduler.step()
            self.epoch += 1
            if test["acc"] > self.best_acc:
                self.best_acc, self.best_epoch = test["acc"], self.epoch
            metrics = {"epoch": self.epoch, "lr": lr, **{f"train_{k}": v for k, v in train.items()},
                       **{f"test_{k}": v for k, v in test.items()},
                       "best_acc": self.best_acc, "best_epoch": self.best_epoch}
            self.save(metrics)
            log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test acc %.2f%% (best %.2f%%)  "
                     "fr %.3f  %.1fs", self.epoch, cfg.optim.epochs, train["loss"], 100 * train["acc"],
                     100 * test["acc"], 100 * self.best_acc, test["firing_rate"], train["seconds"])
        return RunResult(self.run_dir, metrics.get("test_acc", 0.0), self.best_acc, self.best_epoch,
                         time.perf_counter() - start)

    def checkpoint(self) -> dict:
        return make_checkpoint(
            self.net, self.spec, self.cfg.method.T, {"name": self.cfg.data.name, **self.data.describe()},
            self.cfg.to_dict(),
            {"epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict(), "best_acc": self.best_acc,
             "best_epoch": self.best_epoch})

    def save(self, metrics: dict) -> None:
        ckpt = self.checkpoint()
        atomic_save(ckpt, self.run_dir / CHECKPOINT_NAME)
        if self.best_epoch == self.epoch:
            atomic_save(ckpt, self.run_dir / "best.pt")
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")

    def restore(self, ckpt: dict) -> None:
        state = ckpt["train_state"]
        self.net.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.best_acc, self.best_epoch = state["epoch"], state["best_acc"], state["best_epoch"]


def new_run_dir(cfg: Config) -> Path:
    root = Path(cfg.run.out_dir)
    name = cfg.run.name or f"{cfg.recipe}-{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = root / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SnnkitError(f"run directory {run_dir} already holds a run; choose another --name or "
                          f"continue it with --resume {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    tmp = root / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(name)
    os.replace(tmp, latest)
    return run_dir


def train(cfg: Config, progress: Optional[EpochProgress] = None) -> RunResult:
    """Train ``cfg`` in a new run directory (``<out_dir>/<name>``, ``<out_dir>/latest`` -> it)."""
    run_dir = new_run_dir(cfg)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    trainer = Trainer(cfg, run_dir)
    log.info("run %s: %s on %s with %s, T=%d, %d epochs, device %s", run_dir, cfg.model.name,
             cfg.data.name, cfg.method.name, cfg.method.T, cfg.optim.epochs, trainer.device)
    progress = progress or EpochProgress()
    with progress.running():
        return trainer.fit(progress)


def resume(run: str | Path, progress: Optional[EpochProgress] = None) -> RunResult:
    """Continue the run in ``run`` from its last checkpoint, with the config it was started with."""
    run_dir = Path(run)
    ckpt = load_checkpoint(run_dir)
    run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    trainer = Trainer(config_from_dict(ckpt["config"]), run_dir)
    trainer.restore(ckpt)
    log.info("resuming %s at epoch %d/%d", run_dir, trainer.epoch, trainer.cfg.optim.epochs)
    progress = progress or EpochProgress()
    with progress.running():
        return trainer.fit(progress)
