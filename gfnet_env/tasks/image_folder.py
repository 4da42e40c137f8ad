"""Building blocks for tasks whose images are an ImageFolder (``ROOT/<split>/<class>/*.png|jpg``).

* :func:`image_folder_split`: one split with the model's transform (training augmentation for ``train``, the
  evaluation transform otherwise) — what a task loader returns as its images;
* :func:`image_folder_training_sets`: ``train/`` and ``val/`` for ``gfnet train-features`` (also its
  ``--data-root`` path).
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from feature_nets.gfnet import GFNet
from feature_nets.sampling import spread_subset

from ..data.image_folder import ImageFolderDataset, eval_transform, train_transform
from .task import TrainingOptions

__all__ = ["image_folder_split", "image_folder_training_sets"]

PathLike = str | os.PathLike


def _config(model: GFNet):
    """The model's backbone config at the model's own image size (a small CNN may use any S)."""
    return model.spec.config.with_overrides(image_size=model.image_size)


def image_folder_split(root: PathLike, split: str, model: GFNet) -> ImageFolderDataset:
    """``root/split`` as (3×S×S float tensor, label) items for ``model`` (S = ``model.image_size``).

    ``train`` gets the seeded training augmentation, any other split the evaluation transform.
    """
    cfg = _config(model)
    transform = train_transform(cfg) if split == "train" else eval_transform(cfg)
    return ImageFolderDataset(Path(root) / split, transform=transform)


def image_folder_training_sets(root: PathLike, model: GFNet, options: TrainingOptions) -> tuple[Dataset, Dataset]:
    """(train, val) of ``root/train`` and ``root/val`` for training ``model`` (``options``' crop interpolation
    applied; its sample caps take items spread evenly over each split, :func:`feature_nets.sampling.spread_subset`)."""
    cfg = _config(model)
    root = Path(root)
    train: Dataset = ImageFolderDataset(root / "train",
                                        transform=train_transform(cfg, options.train_crop_interpolation))
    val: Dataset = ImageFolderDataset(root / "val", transform=eval_transform(cfg))
    # subsets spread evenly over each split, which is sorted by class: every class in proportion
    return spread_subset(train, options.train_samples), spread_subset(val, options.val_samples)
