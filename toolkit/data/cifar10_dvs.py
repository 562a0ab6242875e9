"""CIFAR10-DVS as 10 frames of 2×48×48, through SpikingJelly's frame integration.

``data.root`` is the folder given to SpikingJelly's ``CIFAR10DVS(root, data_type='frame',
frames_number=10, split_by='number')``: it holds ``frames_number_10_split_by_number/<class>/*.npz``
(each ``frames`` [10, 2, 128, 128]); if only the converted events ``events_np/<class>/*.npz`` are
there, SpikingJelly integrates them into frames once (it would download when neither is present, so
snnkit never calls it then). Frames are resized to 48×48 (bilinear, antialiased).

The dataset has no official split. snnkit uses a fixed 9:1 split per class: the files of each class,
in sorted order, are permuted with ``torch.Generator().manual_seed(0)``; the first ⌊n/10⌋ are the
test set, the rest the training set (:func:`split_per_class`). Training adds the paper's random
flip and ±5 px roll (:class:`~snnkit.data.augment.EventAugment`). Samples are ``[T, C, H, W]``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Subset
from torchvision.datasets import DatasetFolder

from ..errors import DataError
from . import DataBundle, register_dataset
from .augment import EventAugment
from .local import dataset_root

log = logging.getLogger("snnkit.data")

FRAMES, SIZE, SPLIT_SEED = 10, 48, 0
FRAMES_DIR = f"frames_number_{FRAMES}_split_by_number"
EXPECTED = (f"{FRAMES_DIR}/<class>/*.npz (frames written by SpikingJelly's CIFAR10DVS(root, "
            f"data_type='frame', frames_number={FRAMES}, split_by='number')) or events_np/<class>/*.npz")


def load_frames(path: str) -> torch.Tensor:
    """One sample's frames ``[10, 2, 48, 48]`` (float32 event counts, resized)."""
    from spikingjelly.datasets.utils import load_npz_frames

    try:
        frames = torch.from_numpy(load_npz_frames(path))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read frames from {path} ({e}); rebuild {FRAMES_DIR} with SpikingJelly") from None
    if frames.dim() != 4 or frames.shape[:2] != (FRAMES, 2):
        raise DataError(f"{path} holds frames of shape {list(frames.shape)}; expected [{FRAMES}, 2, H, W]")
    return F.interpolate(frames, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)


def integrate_events(root: Path) -> None:
    """Let SpikingJelly integrate ``events_np`` into frames (it skips its download step because the
    converted events already exist)."""
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    log.info("integrating the CIFAR10-DVS events in %s into %d frames per sample (once)", root, FRAMES)
    try:
        CIFAR10DVS(str(root), data_type="frame", frames_number=FRAMES, split_by="number")
    except RuntimeError as e:
        raise DataError(f"SpikingJelly could not integrate {root / 'events_np'} into frames: {e}") from None


def split_per_class(targets: list[int], seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Indices (train, test): per class, a seeded permutation; the first ⌊n/10⌋ are test."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in sorted(set(targets)):
        members = [i for i, t in enumerate(targets) if t == c]
        order = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        n_test = len(members) // 10
        test += order[:n_test]
        train += order[n_test:]
    return sorted(train), sorted(test)


def frame_folder(frames: Path, transform=None) -> DatasetFolder:
    try:
        return DatasetFolder(str(frames), loader=load_frames, extensions=(".npz",), transform=transform)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"cifar10_dvs: {frames} holds no frames ({e}); expected {EXPECTED}") from None


@register_dataset("cifar10_dvs")
def cifar10_dvs(root: Optional[str] = None) -> DataBundle:
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS_CLASS_NAMES as CLASSES

    path = dataset_root("cifar10_dvs", root, EXPECTED)
    if not (path / FRAMES_DIR).is_dir():
        if not (path / "events_np").is_dir():
            raise DataError(f"cifar10_dvs: {path} holds neither {FRAMES_DIR}/ nor events_np/; expected {EXPECTED}")
        integrate_events(path)
    train_folder, test_folder = frame_folder(path / FRAMES_DIR, EventAugment(5)), frame_folder(path / FRAMES_DIR)
    if train_folder.classes != list(CLASSES):
        raise DataError(f"cifar10_dvs: {path / FRAMES_DIR} has class folders {', '.join(train_folder.classes)}; "
                        f"expected one per class: {', '.join(CLASSES)}")
    train_idx, test_idx = split_per_class(train_folder.targets)
    return DataBundle(train=Subset(train_folder, train_idx), test=Subset(test_folder, test_idx),
                      input_shape=(2, SIZE, SIZE), class_names=list(train_folder.classes), kind="event",
                      train_plain=Subset(test_folder, train_idx))
