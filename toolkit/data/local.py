"""Shared by the datasets read from local files: the root check, image folders, uint8 images."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
from torch.utils.data import Dataset
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from ..errors import DataError


def dataset_root(name: str, root: Optional[str], expected: str) -> Path:
    """``root`` as a directory, or a :class:`DataError` that says what belongs there."""
    if root is None:
        raise DataError(f"{name} reads local files and never downloads: set data.root (--set "
                        f"data.root=PATH) to the folder holding {expected}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{name}: data.root {path} is not a directory; it should hold {expected}")
    return path


def read_image(path: str) -> Image.Image:
    """torchvision's image loader, with an unreadable file (truncated, not an image, no permission)
    made one sentence naming it; called by the loader workers, mid-epoch."""
    try:
        return default_loader(path)
    except UnidentifiedImageError:
        reason = "not an image format PIL reads"
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        reason = getattr(e, "strerror", None) or str(e)
    raise DataError(f"cannot read the image {path} ({reason}); replace or remove it")


def image_folder(name: str, path: Path, transform: Callable, expected: str) -> ImageFolder:
    """torchvision's ``ImageFolder`` (``path/<class>/<image>``) with its errors made one sentence."""
    if not path.is_dir():
        raise DataError(f"{name}: {path} is missing; expected {expected} under data.root")
    try:
        return ImageFolder(str(path), transform=transform, loader=read_image)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"{name}: {path} is not an image folder ({e}); expected {expected}") from None


def split_folders(name: str, root: Path, splits: tuple[str, str], transforms: tuple[Callable, Callable],
                  expected: str, num_classes: Optional[int] = None) -> tuple[ImageFolder, ImageFolder]:
    """The train and test image folders under ``root``, checked to hold the same classes."""
    train, test = (image_folder(name, root / s, t, expected) for s, t in zip(splits, transforms))
    if train.classes != test.classes:
        raise DataError(f"{name}: {root / splits[0]} and {root / splits[1]} hold different class "
                        f"folders; both need one folder per class with the same names")
    if num_classes is not None and len(train.classes) != num_classes:
        raise DataError(f"{name}: {root / splits[0]} holds {len(train.classes)} class folders; "
                        f"expected {num_classes}")
    return train, test


class ImageTensors(Dataset):
    """Images held in memory as uint8 ``[N, C, H, W]`` with integer labels; ``transform`` takes one
    uint8 image (a ``tv_tensors.Image``) and returns the float sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("ImageTensors takes uint8 images [N, C, H, W] and one label per image")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(tv_tensors.Image(self.images[i])), int(self.labels[i])
