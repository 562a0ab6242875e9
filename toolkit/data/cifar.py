"""CIFAR-10 and CIFAR-100, from torchvision's on-disk layout or from image folders.

Under ``data.root``: the unpacked python archive (``cifar-10-batches-py/`` or
``cifar-100-python/``; ``data.root`` may also be that folder itself), or ``train/<class>/*`` and
``test/<class>/*`` images. Files are read directly (torchvision would check the archives' MD5 sums).
Training uses the paper's augmentation (:func:`~snnkit.data.augment.cifar_train`).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import DataError
from . import DataBundle, register_dataset
from .augment import cifar_test, cifar_train
from .local import ImageTensors, dataset_root, split_folders


@dataclass(frozen=True)
class Variant:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str
    labels_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int

    def expected(self) -> str:
        files = ", ".join((*self.train_files, *self.test_files, self.meta_file))
        return f"{self.folder}/ holding {files}, or train/<class>/* and test/<class>/* image folders"


CIFAR10 = Variant("cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                  ("test_batch",), "batches.meta", "label_names", "labels",
                  (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), 10)
CIFAR100 = Variant("cifar100", "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names",
                   "fine_labels", (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 100)


class BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR batch holds (dicts, lists, bytes, str, numbers, NumPy arrays) and
    refuses any other global, so a crafted file cannot run code: plain ``pickle.load`` would call
    whatever callable the file names (``os.system``, ``builtins.eval``, ...)."""

    ALLOWED = {  # NumPy 1 names numpy.core, NumPy 2 numpy._core
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),  # arrays
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # arrays, protocol 5
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),  # NumPy scalars
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"), ("__builtin__", "bytes"), ("builtins", "bytes"),  # bytes, Python 3's protocol 2
    }

    def __init__(self, f, path: Path, v: Variant):
        super().__init__(f, encoding="latin1")
        self.path, self.variant = path, v

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"{self.variant.name}: {self.path} asks to load {module}.{name}, which a CIFAR "
                            "batch never holds, so it was not unpickled; replace it with the file from "
                            "the original python archive")
        return super().find_class(module, name)


def unpickle(path: Path, keys: tuple[str, ...], v: Variant) -> dict:
    if not path.is_file():
        raise DataError(f"{v.name}: {path} is missing; expected {v.expected()} under data.root")
    try:
        with open(path, "rb") as f:
            d = BatchUnpickler(f, path, v).load()
    except DataError:
        raise
    except Exception as e:  # any unpickling failure means the file is not a CIFAR batch
        raise DataError(f"{v.name}: cannot read {path} ({type(e).__name__}); replace it with the "
                        f"file from the original python archive") from None
    if not isinstance(d, dict) or any(k not in d for k in keys):
        raise DataError(f"{v.name}: {path} is not a CIFAR python batch (it needs keys {', '.join(keys)})")
    return d


def read_batches(folder: Path, files: tuple[str, ...], v: Variant) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``[N, 3, 32, 32]`` (the pickles store each row as 3 planes of 32×32) and labels."""
    batches = [unpickle(folder / f, ("data", v.labels_key), v) for f in files]
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[v.labels_key], dtype=np.int64) for b in batches])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels) \
            or not ((labels >= 0) & (labels < v.num_classes)).all():
        raise DataError(f"{v.name}: the batches in {folder} are malformed (expected rows of 3072 bytes "
                        f"and one label 0..{v.num_classes - 1} per row)")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


def load_cifar(v: Variant, root: Optional[str]) -> DataBundle:
    path = dataset_root(v.name, root, v.expected())
    folder = path if path.name == v.folder else path / v.folder
    transforms = cifar_train(v.mean, v.std), cifar_test(v.mean, v.std)
    if folder.is_dir():
        names = unpickle(folder / v.meta_file, (v.names_key,), v)[v.names_key]
        if len(names) != v.num_classes:
            raise DataError(f"{v.name}: {folder / v.meta_file} lists {len(names)} classes, not {v.num_classes}")
        (train_x, train_y), (test_x, test_y) = (read_batches(folder, f, v) for f in (v.train_files, v.test_files))
        train, test = ImageTensors(train_x, train_y, transforms[0]), ImageTensors(test_x, test_y, transforms[1])
        plain = ImageTensors(train_x, train_y, transforms[1])
    elif (path / "train").is_dir() and (path / "test").is_dir():
        train, test = split_folders(v.name, path, ("train", "test"), transforms, v.expected(), v.num_classes)
        plain, names = None, train.classes
    else:
        raise DataError(f"{v.name}: {path} holds neither layout; expected {v.expected()}")
    return DataBundle(train=train, test=test, input_shape=(3, 32, 32), class_names=list(names),
                      normalization={"scale": 1 / 255, "mean": list(v.mean), "std": list(v.std)}, train_plain=plain)


@register_dataset("cifar10")
def cifar10(root: Optional[str] = None) -> DataBundle:
    return load_cifar(CIFAR10, root)


@register_dataset("cifar100")
def cifar100(root: Optional[str] = None) -> DataBundle:
    return load_cifar(CIFAR100, root)
