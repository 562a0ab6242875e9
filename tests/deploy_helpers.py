"""Builders shared by the deployment tests: tiny models, exact in float32 or real-valued.

:func:`make_exact`: every weight, BatchNorm statistic and input is a dyadic rational with few bits,
so a conv sums without rounding in any order and BN folding is exact, and PyTorch and onnxruntime
must agree bit for bit: any spike-count difference is a bug, not a 1-ulp flip at the threshold.
BN's running variance is 256, so that its ε = 1e-5 (not stored in checkpoints) vanishes below
float32's ulp and the scale γ/16 stays dyadic. :func:`make_realistic`: real-valued weights and
BatchNorm statistics, where float32 rounds differently on each side, as in a trained model.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from typer.testing import CliRunner

from snnkit.checkpoint import atomic_save, make_checkpoint
from snnkit.cli.main import app
from snnkit.deploy.graph import TimeUnrolled
from snnkit.deploy.parity import Observed
from snnkit.models import ModelSpec, build_model
from snnkit.spiking import SpikingNet

T = 4
# The models that :func:`make_exact` makes exact in float32. preact_resnet34's analog residual
# stream adds BN-scaled conv outputs (7 + 6 fractional bits per block on top of the input's 3) over
# 16 blocks, so its sums outgrow float32's 24-bit significand and round, differently on each side.
EXACT_IN_FLOAT32 = frozenset({"digits_convnet", "mnist_convnet", "resnet18", "resnet19", "sew_resnet34",
                              "vgg11", "vgg13", "vggsnn"})
SHAPES = {"digits_convnet": (1, 8, 8), "vggsnn": (2, 48, 48)}  # others CIFAR-shaped, 16×16 to stay fast
DEFAULT_SHAPE = (3, 16, 16)


def dyadic(t: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.round(t * 2**bits) / 2**bits


@torch.no_grad()
def make_exact(net: SpikingNet, gain: float = 1.0) -> SpikingNet:
    """Round parameters to dyadic values and give BatchNorm non-trivial statistics (scale γ/16)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.copy_(dyadic(m.weight * gain, 6))
            if m.bias is not None:
                m.bias.copy_(dyadic(m.bias, 6))
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(dyadic(torch.empty_like(m.running_mean).uniform_(-0.2, 0.2), 3))
            m.running_var.fill_(256.0)
            m.weight.copy_(dyadic(torch.empty_like(m.weight).uniform_(16.0, 32.0), 3))
            m.bias.copy_(dyadic(torch.empty_like(m.bias).uniform_(0.2, 0.8), 3))
    return net.eval()


@torch.no_grad()
def make_realistic(net: SpikingNet) -> SpikingNet:
    """PyTorch's default initialisation and random, non-trivial BatchNorm statistics, set so that
    every layer fires, even at T = 1."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            m.weight.mul_(4.0)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(1.0, 2.0)
            m.bias.uniform_(0.4, 1.0)
    return net.eval()


def exact_input(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    return dyadic(torch.randn(batch, *shape), 3)


def model_and_checkpoint(name: str, width: float = 0.125, dataset: str = "digits", num_classes: int = 10,
                         exact: bool = True, kind: str = "static") -> tuple[SpikingNet, dict]:
    shape = SHAPES.get(name, DEFAULT_SHAPE)
    spec = ModelSpec(name, num_classes, shape[0], width=width)
    net = (make_exact if exact else make_realistic)(build_model(spec))
    data = {"name": dataset, "input_shape": list(shape), "class_names": [str(i) for i in range(num_classes)],
            "kind": kind, "normalization": {}}
    return net, make_checkpoint(net, spec, T, data, {"model": {"name": name, "width": width}})


def write_run(root: Path, name: str, ckpt: dict) -> Path:
    """``root/runs/<name>/checkpoint.pt`` and ``root/runs/latest`` -> it, as the trainer lays them out."""
    run = root / "runs" / name
    atomic_save(ckpt, run / "checkpoint.pt")
    latest = root / "runs" / "latest"
    if latest.is_symlink():
        latest.unlink()
    os.symlink(name, latest)
    return run


def invoke(*args: str):
    """Run the ``snnkit`` CLI in-process."""
    return CliRunner().invoke(app, list(args))


def observed_from(twin: TimeUnrolled, x: torch.Tensor) -> Observed:
    """A PyTorch twin's run as a graph's (its probes in the order of ``probe_names``)."""
    with torch.no_grad():
        logits, counts, *probed = twin(x)
    u, s = iter(probed[0::2]), iter(probed[1::2])
    membranes = {layer: torch.stack([next(u) for _ in range(twin.T)]) for layer in twin.layer_names}
    spikes = {layer: torch.stack([next(s) for _ in range(twin.T)]) for layer in twin.layer_names}
    return Observed(logits, counts, membranes, spikes)
