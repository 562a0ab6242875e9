"""Data-parallel training under ``torchrun``: one process per device, the model left unwrapped.

Methods call ``net.body`` directly, some several times per backward (BPTT single-step) or with
several backwards per batch (OTTT), so wrapping the net in ``DistributedDataParallel`` and calling
its forward does not fit every method. Instead the trainer keeps the model as it is and:

- broadcasts parameters and buffers from rank 0 at the start (every rank starts identical);
- averages gradients in its ``step()`` before the optimiser steps (flattened buckets, one
  all-reduce each), whatever the method did to produce them;
- broadcasts buffers from rank 0 before evaluating (BN running statistics, as DDP does);
- all-reduces metrics, and logs, draws progress and writes files on rank 0 only;
- with ``run.sync_bn``, replaces every BatchNorm by :class:`SyncBatchNorm` (global-batch statistics).

Every rank sees ``data.batch_size / world size`` samples per step, so the optimiser sees the
gradient of the global batch: 512 over 8 GPUs is the paper's 512. A single process is a world of
size one and takes the same code path, with every collective a no-op.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset, DistributedSampler, Subset

from ..errors import ConfigError, SnnkitError
from ..methods.rate.batchnorm import channel_moments, syncs

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size
R = TypeVar("R")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, base: int) -> int:
        """A seed for this rank derived from ``base``; rank 0 of any world gets ``base`` itself."""
        return base * self.size + self.rank

    def per_rank_batch(self, global_batch: int) -> int:
        if global_batch % self.size:
            raise ConfigError(f"data.batch_size={global_batch} is the global batch and must split evenly "
                              f"over {self.size} processes; use a multiple of {self.size}")
        return global_batch // self.size

    def sampler(self, dataset: Dataset, seed: int) -> DistributedSampler:
        """This rank's shuffled share of ``dataset``; call ``set_epoch`` before each epoch."""
        return DistributedSampler(dataset, num_replicas=self.size, rank=self.rank, shuffle=True, seed=seed)

    def shard(self, dataset: Dataset) -> Dataset:
        """This rank's share for evaluation: every sample exactly once over all ranks, no padding."""
        return dataset if self.size == 1 else Subset(dataset, range(self.rank, len(dataset), self.size))

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Replace every gradient by its mean over ranks. The set of parameters holding a gradient
        is the same on every rank (it follows from the model, not the data)."""
        self.average([p.grad for p in params if p.grad is not None])

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Replace every tensor by its mean over ranks, in place (the same list on every rank)."""
        if self.size == 1:
            return
        with torch.no_grad():
            for bucket in buckets(tensors):
                flat = torch.cat([t.reshape(-1) for t in bucket])
                dist.all_reduce(flat)
                flat /= self.size
                for t, value in zip(bucket, flat.split([t.numel() for t in bucket])):
                    t.copy_(value.view_as(t))

    def broadcast_state(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Copy rank 0's buffers (and parameters, unless ``buffers_only``) to every rank."""
        if self.size == 1:
            return
        tensors = [*module.buffers(), *([] if buffers_only else module.parameters())]
        with torch.no_grad():
            for bucket in buckets(tensors):
                flat = torch.cat([t.reshape(-1) for t in bucket])
                dist.broadcast(flat, src=0)
                for t, value in zip(bucket, flat.split([t.numel() for t in bucket])):
                    t.copy_(value.view_as(t))

    def on_main(self, fn: Callable[[], R]) -> R:
        """Run ``fn`` on rank 0 only and hand its result, or its user error, to every rank."""
        if self.size == 1:
            return fn()
        box: list = [None]
        if self.is_main:
            try:
                box[0] = fn()
            except SnnkitError as e:
                box[0] = e
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], SnnkitError):
            raise box[0]
        return box[0]


def buckets(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of same-dtype tensors of at most ``BUCKET_BYTES`` (at least one tensor)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (size + nbytes > BUCKET_BYTES or t.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as set by ``torchrun``; (0, 1, 0) outside it."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return torchrun_env()[0] == 0


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``run.device`` for this process; under torchrun, ``auto``/``cuda`` mean ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name} but this machine has no CUDA device; use --device cpu or auto")
    if world_size > 1 and name.startswith("cuda:"):
        raise ConfigError(f"run.device={name} pins every process to one GPU; under torchrun use "
                          "run.device=cuda (or auto) and each process takes cuda:LOCAL_RANK")
    if name == "cuda" and world_size > 1:
        name = f"cuda:{local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


@contextmanager
def process_group(device_name: str) -> Iterator[World]:
    """This process's :class:`World`, joining torchrun's process group (NCCL on CUDA, gloo on CPU)
    for the block when ``WORLD_SIZE`` > 1; the group is left again on exit."""
    rank, size, local_rank = torchrun_env()
    device = resolve_device(device_name, local_rank, size)
    if size == 1:
        yield World(device=device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    logger = logging.getLogger("snnkit")
    level = logger.level
    if rank != 0:
        logger.setLevel(logging.WARNING)
    try:
        yield World(rank, size, local_rank, device)
    finally:
        logger.setLevel(level)
        if joined:
            dist.destroy_process_group()


class SyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` that also runs on CPU (gloo), where PyTorch's refuses: there, training
    statistics come from the rate method's ``channel_moments`` over all ranks. Elsewhere PyTorch's fused kernels
    run unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or not self.training or not syncs(self):
            return super().forward(x)
        mean, var, count = channel_moments(x, sync=True)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * count / (count - 1).clamp_min(1), factor)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` by :class:`SyncBatchNorm`, keeping its parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
