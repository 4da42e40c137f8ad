"""``GFNet-ImageNet-v0``: a released (or user-trained) GFNet checkpoint + ImageNet in ImageFolder layout.

``checkpoint=`` (a path or an already built :class:`~feature_nets.gfnet.GFNet`; default ``GFNET_CHECKPOINT``) and
``data_root=`` (default ``GFNET_IMAGENET``) or ``dataset=`` (any torch Dataset of (3×S×S tensor, label)); the
``val`` split may be read from its prepared cache (``prepared=``, :mod:`gfnet_env.data.prepared`).
"""

from __future__ import annotations

import logging
import os

from torch.utils.data import Dataset

from feature_nets.gfnet import GFNet

from ..data.image_folder import check_image_dataset, imagenet_split
from .image_folder import image_folder_training_sets
from .task import Task, TrainingOptions, load_model

__all__ = ["IMAGENET_HELP", "TASK", "imagenet_task"]

IMAGENET_HELP = (
    "GFNet-ImageNet-v0 needs a released GFNet checkpoint and ImageNet. Download a checkpoint (*.pth.tar) from "
    "the links in the official GFNet README and pass checkpoint=PATH (or set GFNET_CHECKPOINT=PATH); put "
    "ImageNet in ImageFolder layout (ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG) and pass data_root=ROOT "
    "(or set GFNET_IMAGENET=ROOT), or pass dataset= any torch Dataset of (3×S×S tensor, label). Without ImageNet, "
    "try the embedded task: gym.make('GFNet-ClutteredFashionMNIST-v0')."
)


def imagenet_task(checkpoint=None, data_root=None, dataset: Dataset | None = None, split: str = "val",
                  trusted_pickle: bool = False, prepared=None) -> tuple[GFNet, Dataset]:
    """Model and images of ``GFNet-ImageNet-v0`` (kwargs first, then GFNET_CHECKPOINT / GFNET_IMAGENET).

    ``prepared``: the val split's prepared cache (:mod:`gfnet_env.data.prepared`): None uses
    ``data_root/val.gfnet-prepared.npy`` when it exists (a stale one is refused), a path uses that file (it must
    exist), False always decodes the JPEGs. The train split (random augmentation) never uses one."""
    checkpoint = checkpoint if checkpoint is not None else os.environ.get("GFNET_CHECKPOINT")
    if checkpoint is None:
        raise ValueError("no checkpoint given. " + IMAGENET_HELP)
    if dataset is None:
        data_root = data_root if data_root is not None else os.environ.get("GFNET_IMAGENET")
        if data_root is None:
            raise ValueError("no data_root or dataset given. " + IMAGENET_HELP)
    if split not in ("train", "val"):
        raise ValueError(f"unknown split {split!r} for ImageNet; choose 'train' or 'val'")
    if prepared not in (None, False) and (split != "val" or dataset is not None):
        raise ValueError(f"prepared={prepared!r} applies to the val split read from data_root only (the train split's "
                         "augmentation is random, and a dataset= argument is used as given)")
    model = load_model(checkpoint, trusted_pickle)
    if dataset is None:
        dataset = imagenet_split(data_root, split, model.spec.config)
        if split == "val" and prepared is not False:
            dataset = _use_prepared(dataset, prepared, model.image_size)
    else:
        check_image_dataset(dataset, model.image_size, model.num_classes)
    return model, dataset


def _use_prepared(dataset, prepared, image_size: int):
    """The split's prepared cache when there is one (logged), else the ImageFolder itself."""
    from ..data.prepared import open_prepared

    cache = open_prepared(dataset, prepared, image_size)
    if cache is None:
        return dataset
    logging.getLogger("gfnet_env").info("using the prepared cache %s (%d images) instead of decoding %s",
                                        cache.path, len(cache), dataset.root)
    return cache


def imagenet_training_sets(model: GFNet, options: TrainingOptions) -> tuple[Dataset, Dataset]:
    """ImageNet's train/ and val/ for ``gfnet train-features --task imagenet`` (root: ``options.data_root``,
    else GFNET_IMAGENET)."""
    root = options.data_root if options.data_root is not None else os.environ.get("GFNET_IMAGENET")
    if root is None:
        raise ValueError("no ImageNet folder given: pass --task-root ROOT (or set GFNET_IMAGENET=ROOT), ROOT holding "
                         "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")
    return image_folder_training_sets(root, model, options)


TASK = Task(
    env_id="GFNet-ImageNet-v0",
    name="imagenet",
    loader=imagenet_task,
    eval_split="val",
    fit_split=None,  # held-out images of val: ImageNet has no third split
    validation_split="val",
    train_split="train",
    num_classes=1000,
    training_sets=imagenet_training_sets,
)
