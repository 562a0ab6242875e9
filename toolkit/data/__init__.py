"""Datasets, each a registered loader returning a :class:`DataBundle`; and the input encoding.

Training holds out a validation split of the training set for model selection
(:func:`validation_split`: ``data.val_fraction`` of it, drawn with ``run.seed``); the test split is
only ever reported. Tensors inside the toolkit are time-major: :func:`encode` turns a batch from a
loader into ``[T, B, ...]``. Static images are fed unchanged at every step (direct encoding); event data
arrives as ``[B, T, ...]`` frames and is fed one frame per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError
from ..registry import Registry

KINDS = ("static", "event")


@dataclass
class DataBundle:
    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]  # one sample, one step: (C, H, W)
    class_names: list[str]
    kind: str = "static"
    normalization: dict = field(default_factory=dict)  # {"mean": [...], "std": [...]} as applied
    train_plain: Optional[Dataset] = None  # the training samples without augmentation, when it augments

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def describe(self) -> dict:
        """What a checkpoint records about the data the model was trained on."""
        return {"input_shape": list(self.input_shape), "class_names": list(self.class_names),
                "kind": self.kind, "normalization": dict(self.normalization)}


DATASETS: Registry[Callable[..., DataBundle]] = Registry("dataset")
register_dataset = DATASETS.register


def load_dataset(name: str, root: Optional[str] = None) -> DataBundle:
    return DATASETS.get(name)(root)


def validation_split(data: DataBundle, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """(train, validation): ``round(fraction · N)`` of the N training samples (at least one), drawn
    by a generator seeded with ``seed`` alone, so the split is a pure function of the seed and the
    dataset (resume sees the same one). Validation samples come without augmentation."""
    n = len(data.train)
    held = max(1, round(fraction * n))
    if held >= n:
        raise DataError(f"the training set has {n} samples, too few to hold out {held} for validation; "
                        "lower data.val_fraction or give more training data")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    plain = data.train_plain if data.train_plain is not None else data.train
    return Subset(data.train, order[held:]), Subset(plain, sorted(order[:held]))


def encode(x: torch.Tensor, T: int, kind: str) -> torch.Tensor:
    """A loader batch -> ``[T, B, ...]``: static ``[B, C, H, W]`` repeated T times (a view), event
    ``[B, T, C, H, W]`` transposed to time-major."""
    if kind == "static":
        return x.unsqueeze(0).expand(T, *x.shape)
    if x.shape[1] != T:
        raise ValueError(f"event data has {x.shape[1]} frames per sample but T = {T}")
    return x.transpose(0, 1)


from . import cifar, cifar10_dvs, digits, idx, imagenet  # noqa: E402,F401  (registration)
