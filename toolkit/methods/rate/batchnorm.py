"""BatchNorm treatment of the rate methods (docs/spec/rate_backprop.md §2.1, §2.2).

The spike pass records, per BN layer, the per-channel mean and biased variance of every input it
normalises (one record for rate_M's [T·B] call, T records for rate_S). The rate pass then runs
each BN in the straight-through form: value from the spike-pass statistics, gradient from the
rate-pass batch statistics. Both are modes of :func:`snnkit.spiking.layer_modes`, like the
neurons'; BN's own forward (and its running statistics) is untouched outside these blocks.

Under torchrun with ``run.sync_bn``, every BN is a SyncBatchNorm
(:func:`snnkit.training.distributed.convert_sync_batchnorm`), and both the recorded statistics and
the straight-through batch statistics are taken over the global batch.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...spiking import layer_modes, plain_forward

BNStats = dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks: every rank's input reaches
    every rank's loss through the global statistics."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def channel_moments(a: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, biased variance and sample count of ``a`` ``[N, C, ...]``, in at least fp32
    whatever the dtype of ``a`` (autocast); over all ranks, differentiably, if ``sync``."""
    a = a.to(torch.promote_types(a.dtype, torch.float32))
    dims = [0, *range(2, a.dim())]
    count = a.new_tensor([a.numel() / a.shape[1]])
    mean, sq = a.mean(dims), (a * a).mean(dims)
    if sync:
        packed = _AllReduceSum.apply(torch.cat([mean * count, sq * count, count]))
        c = a.shape[1]
        count = packed[-1:]
        mean, sq = packed[:c] / count, packed[c:2 * c] / count
    return mean, (sq - mean * mean).clamp_min(0), count


def channel_stats(a: torch.Tensor, sync: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``a`` ``[N, C, ...]``; over all ranks if ``sync``."""
    return channel_moments(a, sync)[:2]


def syncs(bn: _BatchNorm) -> bool:
    """``bn`` takes its statistics over the ranks of a running process group."""
    return isinstance(bn, nn.SyncBatchNorm) and dist.is_available() and dist.is_initialized() \
        and dist.get_world_size() > 1


def _recorded(records: list[tuple[torch.Tensor, torch.Tensor]], bn: _BatchNorm,
              x: torch.Tensor) -> torch.Tensor:
    """The spike pass's BN mode: keep the statistics of ``x``, then normalise as BN does."""
    with torch.no_grad():
        records.append(channel_stats(x, syncs(bn)))
    return plain_forward(bn, x)


@contextmanager
def record_batchnorm(module: nn.Module) -> Iterator[BNStats]:
    """Record the statistics of every BN input seen inside the block (no autograd)."""
    stats: BNStats = {bn: [] for bn in batchnorm_layers(module)}
    with layer_modes({bn: partial(_recorded, records) for bn, records in stats.items()}):
        yield stats


def spike_statistics(records: list[tuple[torch.Tensor, torch.Tensor]], eps: float):
    """Combine per-call statistics into (μ_spike, σ²_spike): μ is the mean of the means and
    1/sqrt(σ² + ε) the mean of the inverse deviations (rate_S); one call passes through (rate_M)."""
    if len(records) == 1:
        return records[0]
    means = torch.stack([m for m, _ in records]).mean(0)
    inv_std = torch.stack([torch.rsqrt(v + eps) for _, v in records]).mean(0)
    return means, inv_std.pow(-2) - eps


class _StraightThrough(torch.autograd.Function):
    """BN with the straight-through statistics (docs/spec/rate_backprop.md §2.2): the value
    γ(a − μ_spike)/sqrt(σ²_spike + ε) + β; the gradient of
    μ̂ = μ_spike + (μ_b − sg(μ_b)), σ̂² = σ²_spike + (σ²_b − sg(σ²_b)) in that formula, μ_b and σ²_b
    the batch statistics of a (over all ranks if ``sync``). Written out, it saves what BN saves
    (a and per-channel vectors) where the formula under autograd kept three activations:

        ∂L/∂a = γ·istd·(go − mean(go) − (a − μ_b)·istd·mean(go·x̂)),  x̂ = (a − μ_spike)·istd,
        ∂L/∂γ = Σ go·x̂,  ∂L/∂β = Σ go,  istd = 1/sqrt(σ²_spike + ε), means over the batch.
    """

    @staticmethod
    def forward(ctx, a, weight, bias, mean_spike, var_spike, eps: float, sync: bool):
        a32 = a.to(torch.promote_types(a.dtype, torch.float32))
        mean_b, _ = channel_stats(a32, sync)
        istd = torch.rsqrt(var_spike + eps)
        ctx.save_for_backward(a, weight, mean_spike, istd, mean_b)
        ctx.sync = sync
        with torch.autocast(a.device.type, enabled=False):
            return F.batch_norm(a32, mean_spike, var_spike, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, go):
        a, weight, mean_spike, istd, mean_b = ctx.saved_tensors
        a32 = a.to(go.dtype)
        dims, shape = [0, *range(2, a.dim())], (1, -1) + (1,) * (a.dim() - 2)
        sum_go = go.sum(dims)
        sum_go_xhat = (go * (a32 - mean_spike.view(shape))).sum(dims) * istd
        grad_a = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_go, sum_go_xhat, go.new_tensor([a.numel() / a.shape[1]])])
            if ctx.sync:
                dist.all_reduce(sums)
            c = sum_go.numel()
            mean_go, mean_go_xhat = sums[:c] / sums[-1], sums[c:2 * c] / sums[-1]
            k = istd if weight is None else istd * weight
            grad_a = (go - mean_go.view(shape) - (a32 - mean_b.view(shape)) * (istd * mean_go_xhat).view(shape))
            grad_a = (grad_a * k.view(shape)).to(a.dtype)
        grad_w = sum_go_xhat if ctx.needs_input_grad[1] else None
        grad_b = sum_go if ctx.needs_input_grad[2] else None
        return grad_a, grad_w, grad_b, None, None, None, None


def _straight_through(mean_spike: torch.Tensor, var_spike: torch.Tensor, bn: _BatchNorm,
                      a: torch.Tensor) -> torch.Tensor:
    """The rate pass's BN mode."""
    return _StraightThrough.apply(a, bn.weight, bn.bias, mean_spike, var_spike, bn.eps, syncs(bn))


@contextmanager
def straight_through_batchnorm(stats: BNStats) -> Iterator[None]:
    """Inside the block every recorded BN normalises with the straight-through statistics."""
    if any(not records for records in stats.values()):
        raise RuntimeError("a BatchNorm layer saw no input in the spike pass")
    with layer_modes({bn: partial(_straight_through, *spike_statistics(records, bn.eps))
                      for bn, records in stats.items()}):
        yield
