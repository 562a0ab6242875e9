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
from ..errors import SnnkitError
from ..files import atomic_write_text
from ..methods import Method, build_method
from ..methods.batchnorm import convert_sync_batchnorm
from ..models import ModelSpec, build_model
from ..spiking import SpikingNet, firing_rate
from .curves import write_curves
from .distributed import World, process_group, resolve_device
from .optim import make_optimizer
from .precision import Precision, configure_backends
from .progress import EpochProgress, Meter

log = logging.getLogger("snnkit.train")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    final_acc: float
    best_acc: float
    best_epoch: int
    seconds: float


def make_loader(dataset, batch_size: int, workers: int, device, sampler=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=False)


@torch.no_grad()
def evaluate(net: SpikingNet, loader: DataLoader, T: int, kind: str, device, world: World = World()) -> dict:
    """Accuracy, loss and firing rate of the plain spiking network (Heaviside, no surrogate), summed
    over the ranks' shards of the test set."""
    net.eval()
    n = correct = loss = spikes = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits_seq, modes = net.run_multistep(encode(x, T, kind))
        logits = logits_seq.mean(0)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += float((logits.argmax(1) == y).sum())
        n += y.shape[0]
        spikes += firing_rate(modes) * y.shape[0]
    n, correct, loss, spikes = world.all_reduce_sum([n, correct, loss, spikes])
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1), "firing_rate": spikes / max(n, 1)}


class Trainer:
    """One run on one process of a (possibly single-process) world; see ``distributed.py``."""

    def __init__(self, cfg: Config, run_dir: Path, data: Optional[DataBundle] = None,
                 world: Optional[World] = None):
        self.cfg = cfg
        self.world = world or World(device=resolve_device(cfg.run.device))
        self.device = self.world.device
        self.batch_size = self.world.per_rank_batch(cfg.data.batch_size)
        configure_backends(cfg.run, self.device)
        self.data = data if data is not None else load_dataset(cfg.data.name, cfg.data.root)
        self.spec = ModelSpec(cfg.model.name, self.data.num_classes, self.data.in_channels,
                              cfg.neuron, cfg.model.width)
        torch.manual_seed(cfg.run.seed)
        self.net = build_model(self.spec)
        if cfg.run.sync_bn:
            convert_sync_batchnorm(self.net)
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.preserve_format
        self.net.to(self.device, memory_format=memory_format)  # channels_last: 4-D conv weights only
        self.world.broadcast_state(self.net)
        self.precision = Precision(cfg.run.amp, self.device)
        self.precision.install(self.net)
        self.method: Method = build_method(cfg.method.name, cfg.method.T, cfg.method.options)
        self.method.check(self.net)
        self.optimizer, self.scheduler = make_optimizer(self.net, cfg.optim)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.run_dir = run_dir
        self.epoch = 0
        self.best_acc, self.best_epoch = 0.0, -1

    # --- one epoch: the loop that never asks which method it holds ------------------------------
    def train_epoch(self, progress: EpochProgress) -> dict:
        cfg, T, kind = self.cfg, self.cfg.method.T, self.data.kind
        torch.manual_seed(self.world.seed(cfg.run.seed + self.epoch))  # per-epoch seeding: resume is exact
        sampler = self.world.sampler(self.data.train, cfg.run.seed)
        sampler.set_epoch(self.epoch)
        # A fresh loader each epoch: its workers are seeded from the epoch's seed, so resume is exact.
        loader = make_loader(self.data.train, self.batch_size, cfg.data.workers, self.device, sampler)
        self.net.train()
        meter = Meter()
        for x, y in progress.track(loader, meter, f"epoch {self.epoch + 1}/{cfg.optim.epochs}"):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            out = self.method.train_step(self.net, encode(x, T, kind), y, self.step)
            meter.update(out.loss, out.logits, y, out.firing_rate)
        return meter.reduce(self.world.all_reduce_sum).summary()

    def step(self) -> None:
        self.world.average_gradients(self.params)
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)

    # --- the run ---------------------------------------------------------------------------------
    def fit(self, progress: EpochProgress) -> RunResult:
        cfg = self.cfg
        start = time.perf_counter()
        test_loader = make_loader(self.world.shard(self.data.test), self.batch_size, cfg.data.workers,
                                  self.device)
        metrics = {}
        while self.epoch < cfg.optim.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_epoch(progress)
            self.world.broadcast_state(self.net, buffers_only=True)  # BN running statistics
            test = evaluate(self.net, test_loader, cfg.method.T, self.data.kind, self.device, self.world)
            self.scheduler.step()
            self.epoch += 1
            if test["acc"] > self.best_acc:
                self.best_acc, self.best_epoch = test["acc"], self.epoch
            metrics = {"epoch": self.epoch, "lr": lr, **{f"train_{k}": v for k, v in train.items()},
                       **{f"test_{k}": v for k, v in test.items()},
                       "best_acc": self.best_acc, "best_epoch": self.best_epoch}
            if self.world.is_main:
                self.save(metrics)
            log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test acc %.2f%% (best %.2f%%)  "
                     "fr %.3f  %.1fs", self.epoch, cfg.optim.epochs, train["loss"], 100 * train["acc"],
                     100 * test["acc"], 100 * self.best_acc, test["firing_rate"], train["seconds"])
        result = RunResult(self.run_dir, metrics.get("test_acc", 0.0), self.best_acc, self.best_epoch,
                           time.perf_counter() - start)
        if self.world.is_main:
            self.write_results(result)
        return result

    def write_results(self, result: RunResult) -> None:
        """results.json: final and best accuracy beside the conventions needed to compare them."""
        cfg = self.cfg
        summary = {"final_acc": result.final_acc, "best_acc": result.best_acc, "best_epoch": result.best_epoch,
                   "seconds": result.seconds, "epochs": cfg.optim.epochs, "dataset": cfg.data.name,
                   "model": cfg.model.name, "method": cfg.method.name, "T": cfg.method.T,
                   "method_options": cfg.method.options, "neuron": cfg.neuron.as_dict(),
                   "device": str(self.device), "processes": self.world.size, "config_digest": cfg.digest()}
        atomic_write_text(self.run_dir / "results.json", json.dumps(summary, indent=2) + "\n")

    def checkpoint(self) -> dict:
        return make_checkpoint(
            self.net, self.spec, self.cfg.method.T, {"name": self.cfg.data.name, **self.data.describe()},
            self.cfg.to_dict(),
            {"epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict(), "grad_scaler": self.precision.state_dict(),
             "best_acc": self.best_acc, "best_epoch": self.best_epoch})

    def save(self, metrics: dict) -> None:
        """Metrics line, best.pt, then checkpoint.pt last: the checkpoint commits the epoch, and a
        run stopped before it is resumed from the previous epoch (see :meth:`restore`)."""
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        write_curves(self.run_dir, self.cfg)
        ckpt = self.checkpoint()
        if self.best_epoch == self.epoch:
            atomic_save(ckpt, self.run_dir / "best.pt")
        atomic_save(ckpt, self.run_dir / CHECKPOINT_NAME)

    def restore(self, ckpt: dict) -> None:
        """Continue from ``ckpt``: every rank loads the same state; metrics lines of epochs after
        the checkpoint (a run stopped between writing them and the checkpoint) are dropped."""
        state = ckpt["train_state"]
        self.net.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("grad_scaler", {}))
        self.epoch, self.best_acc, self.best_epoch = state["epoch"], state["best_acc"], state["best_epoch"]
        metrics = self.run_dir / "metrics.jsonl"
        if self.world.is_main and metrics.exists():
            kept = [line for line in metrics.read_text().splitlines()
                    if json.loads(line)["epoch"] <= self.epoch]
            atomic_write_text(metrics, "".join(f"{line}\n" for line in kept))


def run_dir_for(cfg: Config) -> Path:
    """The new run's directory, checked to hold no run yet; nothing is written."""
    name = cfg.run.name or f"{cfg.recipe}-{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.run.out_dir) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SnnkitError(f"run directory {run_dir} already holds a run; choose another --name or "
                          f"continue it with --resume {run_dir}")
    return run_dir


def create_run_dir(run_dir: Path, cfg: Config) -> None:
    """Make ``run_dir`` with its resolved ``config.yaml`` and point ``<out_dir>/latest`` at it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, run_dir.parent / "latest")


def train(cfg: Config, progress: Optional[EpochProgress] = None,
          data: Optional[DataBundle] = None) -> RunResult:
    """Train ``cfg`` in a new run directory (``<out_dir>/<name>``, ``<out_dir>/latest`` -> it), on
    ``data`` if given, else on the dataset ``cfg.data`` names. Under torchrun, every process calls this."""
    with process_group(cfg.run.device) as world:
        run_dir = world.on_main(lambda: run_dir_for(cfg))
        trainer = Trainer(cfg, run_dir, data, world)  # every start-up error comes before any file
        if world.is_main:
            create_run_dir(run_dir, cfg)
        log.info("run %s: %s on %s with %s, T=%d, %d epochs, device %s, %d process(es)", run_dir,
                 cfg.model.name, cfg.data.name, cfg.method.name, cfg.method.T, cfg.optim.epochs,
                 trainer.device, world.size)
        return run(trainer, progress)


def resume(run_dir: str | Path, progress: Optional[EpochProgress] = None,
           data: Optional[DataBundle] = None) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, with the config it was started with
    (on as many processes as now launched: the global batch, and so the result, is unchanged)."""
    ckpt = load_checkpoint(run_dir)
    run_dir = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    cfg = config_from_dict(ckpt["config"])
    with process_group(cfg.run.device) as world:
        trainer = Trainer(cfg, run_dir, data, world)
        trainer.restore(ckpt)
        log.info("resuming %s at epoch %d/%d", run_dir, trainer.epoch, cfg.optim.epochs)
        return run(trainer, progress)


def run(trainer: Trainer, progress: Optional[EpochProgress]) -> RunResult:
    progress = progress or EpochProgress(enabled=trainer.world.is_main)
    with progress.running():
        return trainer.fit(progress)
