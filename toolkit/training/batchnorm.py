"""BatchNorm recalibration (issue 20 point 3; docs/spec/rate_backprop.md §4.6).

A method whose training forward runs one step per call (rate_S, BPTT's single layout, the online
methods) normalises every step with that step's batch statistics and folds per-step statistics
into BN's running estimate; the evaluated network runs all T steps at once and normalises with one
estimate pooled over T·B, whose input distribution differs by step. A multi-step method (BPTT,
rate_M) records the evaluated forward's statistics, but as an EMA over iterations whose weights
moved: the estimate lags the final weights, and a network whose membranes sit near threshold (rate_M
at T = 2) loses test accuracy to that lag. Recalibration re-estimates every BN's running
statistics with the evaluated network's own forward: multi-step, each BN
normalising with the pooled T·B batch statistics, no gradient, a cumulative average over the
batches (not BN's EMA), with the current weights. The weights are not touched.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..data import encode
from ..spiking import SpikingNet
from .distributed import World


@torch.no_grad()
def recalibrate_batchnorm(net: SpikingNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], max_batches: int,
                          T: int, kind: str, device: torch.device | str = "cpu", world: World = World()) -> int:
    """Replace every BN's running mean and variance by the average, over the first ``max_batches``
    of ``batches`` (loader batches, see :func:`snnkit.data.encode`), of the batch statistics BN
    sees in ``net.run_multistep``; under several processes, averaged over the ranks. Every other
    layer runs in eval mode (dropout off); each BN's momentum is restored and its
    ``num_batches_tracked`` counts the batches of this estimate; ``net`` is left in eval mode.
    Returns the number of batches used on this process."""
    layers = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers or max_batches < 1:
        return 0
    momenta = [bn.momentum for bn in layers]
    net.eval()
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the plain mean over the batches
        bn.train()
    used = 0
    try:
        for x, _ in batches:
            if used == max_batches:
                break
            net.run_multistep(encode(x.to(device, net.dtype), T, kind))
            used += 1
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
        net.eval()
    world.average([t for bn in layers for t in (bn.running_mean, bn.running_var)])
    return used
