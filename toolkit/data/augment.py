"""The paper's input pipelines (docs/spec/rate_backprop.md §5), as torchvision v2 transforms.

Random choices draw from torch's global generator, so the trainer's per-epoch seeding (and the
DataLoader's per-worker seeds) make them reproducible.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.transforms import v2

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Cutout(nn.Module):
    """Zero one ``size``×``size`` square at a uniformly random centre, clipped at the borders
    (DeVries & Taylor 2017; one hole, as the reference applies it: after scaling to [0, 1], before
    normalisation, so the hole is black)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # [C, H, W]
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        half = self.size // 2
        out = img.clone()
        out[..., max(cy - half, 0):cy + half, max(cx - half, 0):cx + half] = 0
        return out


def to_float(mean: Sequence[float], std: Sequence[float]) -> list[nn.Module]:
    """uint8 image (PIL or tensor) -> normalised float32 plain tensor ``[C, H, W]``."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]


def cifar_train(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Crop 32 with padding 4, horizontal flip, AutoAugment (CIFAR-10 policy), Cutout 16."""
    return v2.Compose([
        v2.ToImage(), v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
        v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
        v2.ToDtype(torch.float32, scale=True), Cutout(16), v2.Normalize(mean, std), v2.ToPureTensor(),
    ])


def cifar_test(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    return v2.Compose(to_float(mean, std))


def imagenet_train() -> v2.Compose:
    """RandomResizedCrop 224 and horizontal flip (on the decoded PIL image, the cheap place)."""
    return v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(),
                       *to_float(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_test() -> v2.Compose:
    """Resize the short side to 256, centre crop 224."""
    return v2.Compose([v2.Resize(256), v2.CenterCrop(224), *to_float(IMAGENET_MEAN, IMAGENET_STD)])


class EventAugment(nn.Module):
    """For event frames ``[T, C, H, W]``: a horizontal flip with probability 1/2, then a roll by
    (dy, dx), each uniform in [−shift, shift] pixels; the same for every frame of the sample."""

    def __init__(self, shift: int = 5):
        super().__init__()
        self.shift = shift

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < 0.5:
            frames = frames.flip(-1)
        dy, dx = (int(d) for d in torch.randint(-self.shift, self.shift + 1, (2,)))
        return frames.roll((dy, dx), dims=(-2, -1))
