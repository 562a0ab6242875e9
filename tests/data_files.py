"""Tiny datasets in the real on-disk formats, written by the tests (never downloaded)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from snnkit.data.cifar10_dvs import FRAMES_DIR

DVS_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_idx(path: Path, array: np.ndarray) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def write_idx_set(root: Path) -> dict[str, np.ndarray]:
    """MNIST-style idx files: the training pair gzipped, the test pair plain."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": np.arange(12, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5], dtype=np.uint8)}
    for name, array in arrays.items():
        write_idx(root / name, array)
    return arrays


def dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    """torchvision's cifar-10-batches-py/: five training batches, a test batch, the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        dump(folder / name, {"batch_label": name, "data": data, "labels": labels,
                             "filenames": [f"{i}.png" for i in range(per_batch)]})
        written[name] = (data, labels)
    dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    return written


def write_image_folders(root: Path, splits: tuple[str, ...], classes: list[str], size=(32, 32),
                        suffix=".png") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    pixels = {}
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            img = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(img).save(root / split / c / f"0{suffix}")
            pixels[f"{split}/{c}"] = img
    return pixels


def write_dvs_frames(root: Path, per_class: int) -> dict[str, np.ndarray]:
    """Frames as SpikingJelly's CIFAR10DVS(frames_number=10, split_by='number') saves them."""
    rng = np.random.default_rng(4)
    frames = {}
    for c in DVS_CLASSES:
        (root / FRAMES_DIR / c).mkdir(parents=True)
        for i in range(per_class):
            f = (rng.random((10, 2, 128, 128)) < 0.01).astype(np.float32)
            np.savez_compressed(root / FRAMES_DIR / c / f"cifar10_{c}_{i}.npz", frames=f)
            frames[f"{c}/{i}"] = f
    return frames
