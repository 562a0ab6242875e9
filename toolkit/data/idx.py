"""MNIST and Fashion-MNIST from the original idx files, ``.gz`` or not.

Fashion-MNIST defaults to ``/usr/share/datasets/fashion-mnist``, where Debian's
``dataset-fashion-mnist`` package installs it. Pixels are scaled to [0, 1] and normalised with the
training split's mean and standard deviation (as for digits); no augmentation.
"""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torchvision.transforms import v2

from ..errors import DataError
from . import DataBundle, register_dataset
from .augment import to_float
from .local import ImageTensors, dataset_root

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
EXPECTED = ", ".join(f for pair in FILES.values() for f in pair) + " (each optionally .gz)"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes: magic 0, 0, 0x08, ndim; ndim big-endian uint32 sizes; data."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path} ({e}); replace it with the original idx file") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != UBYTE:
        raise DataError(f"{path} is not an idx file of unsigned bytes; replace it with the original")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    if len(dims) != ndim or len(data) - header != math.prod(dims):
        raise DataError(f"{path} is truncated or malformed (its header and size disagree); "
                        f"replace it with the original idx file")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def find(root: Path, stem: str, name: str) -> Path:
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            return path
    raise DataError(f"{name}: {root} has no {stem}[.gz]; expected {EXPECTED} there")


def read_split(root: Path, split: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_path, labels_path = (find(root, stem, name) for stem in FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DataError(f"{name}: {images_path.name} and {labels_path.name} do not pair up as "
                        f"N images [N, H, W] and N labels 0..9; replace them with the originals")
    if len(images) == 0:
        raise DataError(f"{name}: {images_path} holds no images; replace it with the original idx file")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def pixel_statistics(pixels: torch.Tensor, scale: int) -> tuple[float, float]:
    """The mean and sample standard deviation of ``pixels / scale`` (uint8 pixels) from exact integer
    sums, the mean rounded once and the deviation twice: the same two numbers on every CPU, whatever
    order its kernels add in."""
    counts = torch.bincount(pixels.flatten(), minlength=256).tolist()
    n = sum(counts)
    s1 = sum(v * c for v, c in enumerate(counts))
    s2 = sum(v * v * c for v, c in enumerate(counts))
    return s1 / (n * scale), math.sqrt((n * s2 - s1 * s1) / (n * (n - 1) * scale * scale))


def idx_bundle(name: str, root: Path, class_names: list[str]) -> DataBundle:
    (train_x, train_y), (test_x, test_y) = (read_split(root, s, name) for s in FILES)
    mean, std = pixel_statistics(train_x, 255)
    transform = v2.Compose(to_float([mean], [std]))
    return DataBundle(train=ImageTensors(train_x, train_y, transform), test=ImageTensors(test_x, test_y, transform),
                      input_shape=tuple(train_x.shape[1:]), class_names=class_names,
                      normalization={"scale": 1 / 255, "mean": [mean], "std": [std]})


@register_dataset("mnist")
def mnist(root: Optional[str] = None) -> DataBundle:
    return idx_bundle("mnist", dataset_root("mnist", root, EXPECTED), [str(i) for i in range(10)])


@register_dataset("fashion_mnist")
def fashion_mnist(root: Optional[str] = None) -> DataBundle:
    """Reads ``root`` or, by default, the Debian package's folder."""
    path = dataset_root("fashion_mnist", root or FASHION_MNIST_ROOT,
                        f"{EXPECTED} (apt-get install dataset-fashion-mnist puts them in {FASHION_MNIST_ROOT})")
    return idx_bundle("fashion_mnist", path, FASHION_CLASSES)
