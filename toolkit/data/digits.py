"""The scikit-learn digits: 1,797 real 8×8 handwritten digits, embedded in the wheel (no download).

Fixed stratified 80/20 split with seed 0; pixels scaled to [0, 1], then normalised with the
training split's mean and standard deviation.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import TensorDataset

from . import DataBundle, register_dataset


@register_dataset("digits")
def digits(root: Optional[str] = None) -> DataBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8]
    labels = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=0)
    train_x, test_x = images[train_idx], images[test_idx]
    mean, std = float(train_x.mean()), float(train_x.std())
    normalize = lambda x: (x - mean) / std  # noqa: E731
    return DataBundle(
        train=TensorDataset(normalize(train_x), labels[train_idx]),
        test=TensorDataset(normalize(test_x), labels[test_idx]),
        input_shape=(1, 8, 8),
        class_names=[str(i) for i in range(10)],
        normalization={"scale": 1 / 16.0, "mean": [mean], "std": [std]},
    )
