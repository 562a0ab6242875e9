"""ImageNet-1k from the user's copy: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.

Train: RandomResizedCrop 224 and flip; test: resize 256, centre crop 224; ImageNet mean and std.
Class names are the folder names (WordNet ids), in sorted order as torchvision assigns labels.
"""
from __future__ import annotations

from typing import Optional

from . import DataBundle, register_dataset
from .augment import IMAGENET_MEAN, IMAGENET_STD, imagenet_test, imagenet_train
from .local import dataset_root, split_folders

EXPECTED = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the validation images sorted into class folders)"


@register_dataset("imagenet")
def imagenet(root: Optional[str] = None) -> DataBundle:
    path = dataset_root("imagenet", root, EXPECTED)
    train, test = split_folders("imagenet", path, ("train", "val"), (imagenet_train(), imagenet_test()), EXPECTED)
    return DataBundle(train=train, test=test, input_shape=(3, 224, 224), class_names=list(train.classes),
                      normalization={"scale": 1 / 255, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
