"""The training loop: a method is handed batches and a ``step``; the loop never asks which it is."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.nn.utils import get_total_norm
from torch.utils.data import DataLoader

from ..checkpoint import CHECKPOINT_NAME, atomic_save, make_checkpoint, nonfinite
from ..config import Config
from ..data import DataBundle, encode, load_dataset, validation_split
from ..errors import CheckpointError, DataError, DivergedError, one_line
from ..evaluation import evaluate_network
from ..files import append_line, atomic_write_text, uninterrupted
from ..methods import Method, build_method
from ..methods.base import RunShape
from ..models import ModelSpec, build_model, check_input_fits
from ..spiking import SpikingNet
from .batchnorm import recalibrate_batchnorm
from .curves import write_curves
from .distributed import World, convert_sync_batchnorm, process_group, resolve_device
from .optim import make_optimizer
from .precision import Precision, configure_backends
from .progress import EpochProgress, Meter
from .rundir import point_latest

log = logging.getLogger("snnkit.train")


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    final_acc: float  # test accuracy of the final model
    best_acc: float  # test accuracy of the model selected on the validation split (best.pt)
    best_epoch: int  # the epoch of best.pt
    seconds: float
    best_val_acc: float = float("nan")  # the validation accuracy that selected it
    already_finished: bool = False  # a --resume of a run that had finished: nothing was changed


def make_loader(dataset, batch_size: int, workers: int, device, sampler=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=False)


def evaluate(net: SpikingNet, loader: DataLoader, T: int, kind: str, device, world: World = World()) -> dict:
    """Accuracy, loss and firing rate of the plain spiking network, summed over the ranks' shards of
    a held-out set (validation or test)."""
    out = evaluate_network(net, loader, T, kind, device)
    n, correct, loss, spikes = world.all_reduce_sum([out.samples, out.correct, out.loss_sum,
                                                     out.firing_rate * out.samples])
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1), "firing_rate": spikes / max(n, 1)}


def check_samples(data: DataBundle, name: str, root: Optional[str]) -> None:
    for split, dataset in (("training", data.train), ("test", data.test)):
        if len(dataset) == 0:
            where = f" in {root}" if root else ""
            raise DataError(f"{name} has no {split} samples{where}; point data.root at a copy of the dataset")


class Trainer:
    """One run on one process of a (possibly single-process) world; see ``distributed.py``. Every
    check that can refuse the run happens here, before anything is written; ``run_dir`` may be
    set afterwards."""

    def __init__(self, cfg: Config, run_dir: Optional[Path] = None, data: Optional[DataBundle] = None,
                 world: Optional[World] = None):
        self.cfg = cfg
        self.world = world or World(device=resolve_device(cfg.run.device))
        self.device = self.world.device
        self.batch_size = self.world.per_rank_batch(cfg.data.batch_size)
        configure_backends(cfg.run, self.device)
        self.data = data if data is not None else load_dataset(cfg.data.name, cfg.data.root)
        check_samples(self.data, cfg.data.name, cfg.data.root)
        self.train_set, self.val_set = validation_split(self.data, cfg.data.val_fraction, cfg.run.seed)
        self.spec = ModelSpec(cfg.model.name, self.data.num_classes, self.data.in_channels,
                              cfg.neuron, cfg.model.width, cfg.model.kwargs)
        torch.manual_seed(cfg.run.seed)
        self.net = build_model(self.spec)
        check_input_fits(self.net, self.spec, self.data.input_shape, cfg.data.name)
        if cfg.run.sync_bn:
            convert_sync_batchnorm(self.net)
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.preserve_format
        # channels_last: 4-D conv weights only
        self.net.to(self.device, getattr(torch, cfg.run.dtype), memory_format=memory_format)
        self.world.broadcast_state(self.net)
        self.precision = Precision(cfg.run.amp, self.device)
        self.method: Method = build_method(cfg.method.name, cfg.method.T, cfg.method.options)
        self.method.check(self.net)
        self.method_plan = self.method.plan(self.net, self.run_shape())
        self.method.adopt(self.method_plan)
        self.optimizer, self.scheduler = make_optimizer(self.net, cfg.optim)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.run_dir = run_dir
        self.epoch = 0
        self.saved_epoch = 0  # the epoch of the last checkpoint written or restored; 0: none yet
        self.best_val_acc, self.best_epoch, self.test_acc_best = -1.0, -1, 0.0  # selected on validation

    def run_shape(self) -> RunShape:
        per_rank = math.ceil(len(self.train_set) / self.world.size)
        sizes = {min(self.batch_size, per_rank), per_rank % self.batch_size or self.batch_size}
        return RunShape(tuple(self.data.input_shape), tuple(sorted(sizes)), per_rank * self.cfg.optim.epochs,
                        self.device.type)

    # --- one epoch: the loop that never asks which method it holds ------------------------------
    def train_epoch(self, progress: EpochProgress) -> dict:
        cfg, T, kind = self.cfg, self.cfg.method.T, self.data.kind
        torch.manual_seed(self.world.seed(cfg.run.seed + self.epoch))  # per-epoch seeding: resume is exact
        loader = self.train_loader()
        self.net.train()
        meter = Meter()
        for x, y in progress.track(loader, meter, f"epoch {self.epoch + 1}/{cfg.optim.epochs}"):
            x, y = x.to(self.device, self.net.dtype, non_blocking=True), y.to(self.device, non_blocking=True)
            out = self.method.train_step(self.net, encode(x, T, kind), y, self.step)
            meter.update(out.loss, out.logits, y, out.firing_rate)
            where = f"at step {meter.steps} of epoch {self.epoch + 1}"
            if not math.isfinite(out.loss):
                raise self.diverged(f"{where}: the loss is {out.loss}")
            # A NaN weight need not make the next loss NaN (a NaN current never fires), so look at
            # the weights too: one fused norm over all of them (about 1 ms for resnet18 on a CPU)
            # screens them, and only a non-finite norm (perhaps an overflow) pays for the exact look.
            if not get_total_norm(self.params).isfinite():
                bad = nonfinite(dict(self.net.named_parameters()))
                if bad:
                    raise self.diverged(f"{where}: {bad[0]} holds non-finite values")
        return meter.reduce(self.world.all_reduce_sum).summary()

    def train_loader(self) -> DataLoader:
        """This rank's batches of the current epoch, in training order. A fresh loader each epoch:
        its workers are seeded from the epoch's seed, so resume is exact."""
        sampler = self.world.sampler(self.train_set, self.cfg.run.seed)
        sampler.set_epoch(self.epoch)
        return make_loader(self.train_set, self.batch_size, self.cfg.data.workers, self.device, sampler)

    def recalibrate_batchnorm(self) -> None:
        """Re-estimate BN's running statistics with the evaluated forward and the current weights
        on the first ``run.bn_recalibration_batches`` batches of the epoch just trained, for every
        method (docs/spec/rate_backprop.md §4.6). The global random state is saved and restored
        around it, so training after it draws what it would have drawn without it."""
        batches = self.cfg.run.bn_recalibration_batches
        if batches == 0:
            return
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.world.seed(self.cfg.run.seed + self.epoch))
            recalibrate_batchnorm(self.net, self.train_loader(), batches, self.cfg.method.T, self.data.kind,
                                  self.device, self.world)
        self.check_finite()  # finite weights can still overflow the forward that re-estimated them

    def diverged(self, where: str) -> DivergedError:
        return DivergedError(f"training diverged {where}; lower optim.lr (now {self.cfg.optim.lr:g}) and "
                             "train again")

    def check_finite(self) -> None:
        """After an epoch (and again after its BN recalibration), before its checkpoint: a NaN or
        infinity in any weight or statistic (BN's running statistics are not looked at every step)."""
        bad = nonfinite(self.net.state_dict())
        if bad:
            raise self.diverged(f"in epoch {self.epoch + 1}: {bad[0]} holds non-finite values")

    def step(self) -> None:
        self.world.average_gradients(self.params)
        self.precision.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)

    # --- the run ---------------------------------------------------------------------------------
    def fit(self, progress: EpochProgress) -> RunResult:
        cfg = self.cfg
        start = time.perf_counter()
        val_loader, test_loader = (make_loader(self.world.shard(d), self.batch_size, cfg.data.workers, self.device)
                                   for d in (self.val_set, self.data.test))
        with self.precision.applied(self.net):  # the body under autocast, if run.amp asks
            metrics = self.run_epochs(progress, val_loader, test_loader)
        result = RunResult(self.run_dir, metrics["test_acc"], self.test_acc_best, self.best_epoch,
                           time.perf_counter() - start, self.best_val_acc)
        if self.world.is_main:
            self.write_results(result)
        return result

    def run_epochs(self, progress: EpochProgress, val_loader: DataLoader, test_loader: DataLoader) -> dict:
        """Train, validate and test the epochs left (the model is selected on validation accuracy
        alone); returns the last epoch's metrics."""
        cfg = self.cfg
        metrics = {}
        while self.epoch < cfg.optim.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_epoch(progress)
            self.world.broadcast_state(self.net, buffers_only=True)  # BN running statistics
            self.check_finite()
            self.recalibrate_batchnorm()
            val, test = (evaluate(self.net, loader, cfg.method.T, self.data.kind, self.device, self.world)
                         for loader in (val_loader, test_loader))
            self.scheduler.step()
            self.epoch += 1
            if val["acc"] > self.best_val_acc:
                self.best_val_acc, self.best_epoch, self.test_acc_best = val["acc"], self.epoch, test["acc"]
            metrics = {"epoch": self.epoch, "lr": lr, **{f"train_{k}": v for k, v in train.items()},
                       **{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in test.items()},
                       "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                       "test_acc_best": self.test_acc_best}
            if self.world.is_main:
                self.save(metrics)
            else:
                self.saved_epoch = self.epoch
            if self.world.is_main:
                write_curves(self.run_dir, self.cfg)  # drawn from metrics.jsonl once the epoch is committed
            log.info("epoch %d/%d: train loss %.4f, train acc %.2f%%, train fr %.3f; val acc %.2f%% (best %.2f%%, "
                     "epoch %d); test acc %.2f%%; %.1fs", self.epoch, cfg.optim.epochs, train["loss"],
                     100 * train["acc"], train["firing_rate"], 100 * val["acc"], 100 * self.best_val_acc,
                     self.best_epoch, 100 * test["acc"], train["seconds"])
        if not metrics:  # no epoch left: resumed after the last checkpoint but before results.json
            metrics = {"test_acc": evaluate(self.net, test_loader, cfg.method.T, self.data.kind, self.device,
                                            self.world)["acc"]}
        return metrics

    def write_results(self, result: RunResult) -> None:
        """results.json: the test accuracy of the final model and of the one selected on the
        validation split (best.pt), beside the conventions needed to compare them."""
        cfg = self.cfg
        summary = {"test_acc_final": result.final_acc, "test_acc_best": result.best_acc,
                   "best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch,
                   "val_split": {"fraction": cfg.data.val_fraction, "samples": len(self.val_set),
                                 "seed": cfg.run.seed, "of": "the training set"},
                   "seconds": result.seconds, "epochs": cfg.optim.epochs, "dataset": cfg.data.name,
                   "model": cfg.model.name, "method": cfg.method.name, "T": cfg.method.T,
                   "method_options": cfg.method.options, "neuron": cfg.neuron.as_dict(),
                   "device": str(self.device), "processes": self.world.size, "config_digest": cfg.digest(),
                   "method_plan": self.method_plan}
        atomic_write_text(self.run_dir / "results.json", json.dumps(summary, indent=2) + "\n")

    def checkpoint(self) -> dict:
        return make_checkpoint(
            self.net, self.spec, self.cfg.method.T, {"name": self.cfg.data.name, **self.data.describe()},
            self.cfg.to_dict(),
            {"epoch": self.epoch, "optimizer": self.optimizer.state_dict(),
             "scheduler": self.scheduler.state_dict(), "grad_scaler": self.precision.state_dict(),
             "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch, "test_acc_best": self.test_acc_best,
             "method_plan": self.method_plan})

    def save(self, metrics: dict) -> None:
        """Metrics line, best.pt, then checkpoint.pt last: the checkpoint commits the epoch, and a
        run stopped before it is resumed from the previous epoch (see :meth:`restore`). The run's
        first checkpoint moves ``<out_dir>/latest`` to it. A signal cannot fall between the checkpoint
        and ``saved_epoch``, which says what a stopped run keeps."""
        append_line(self.run_dir / "metrics.jsonl", json.dumps(metrics))
        ckpt = self.checkpoint()
        if self.best_epoch == self.epoch:
            atomic_save(ckpt, self.run_dir / "best.pt")
        with uninterrupted():
            atomic_save(ckpt, self.run_dir / CHECKPOINT_NAME)
            first, self.saved_epoch = self.saved_epoch == 0, self.epoch
            if first:
                point_latest(self.run_dir)

    def restore(self, ckpt: dict) -> None:
        """Continue from ``ckpt``: every rank loads the same state; metrics lines of epochs after
        the checkpoint (a run stopped between writing them and the checkpoint) are dropped."""
        state = ckpt["train_state"]
        if isinstance(state, dict) and "epoch" in state and "best_val_acc" not in state:
            raise CheckpointError("this run was trained before snnkit held out a validation split, on a training set "
                                  "this version no longer uses, so it cannot be resumed; retrain it (export and eval "
                                  "still take its checkpoint)")
        try:
            self.net.load_state_dict(ckpt["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.precision.load_state_dict(state.get("grad_scaler", {}))
            self.epoch, self.best_val_acc, self.best_epoch = state["epoch"], state["best_val_acc"], state["best_epoch"]
            self.test_acc_best = state["test_acc_best"]
            self.method_plan = state.get("method_plan", self.method_plan)  # older checkpoints: a fresh one
            self.method.adopt(self.method_plan)
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"the checkpoint's training state is damaged ({type(e).__name__}: {one_line(e)}); "
                                  "resume from a copy of the run or retrain") from None
        self.saved_epoch = self.epoch
        metrics = self.run_dir / "metrics.jsonl"
        if self.world.is_main and metrics.exists():
            kept = [line for line in metrics.read_text().splitlines()
                    if json.loads(line)["epoch"] <= self.epoch]
            atomic_write_text(metrics, "".join(f"{line}\n" for line in kept))
