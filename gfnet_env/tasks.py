"""Tasks: which frozen networks and which images an env id stands for.

``GFNet-ImageNet-v0`` = a released (or user-trained) checkpoint + ImageNet in ImageFolder layout.
``GFNet-ClutteredFashionMNIST-v0`` = the project's shipped small GFNet + cluttered Fashion-MNIST canvases.
Both accept ``checkpoint=`` (a path or an already built :class:`~feature_nets.gfnet.GFNet`) and
``dataset=`` (any torch Dataset of (3×S×S tensor, label)) to override the defaults.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torch.utils.data import Dataset

from feature_nets.checkpoint import check_trusted_pickle, load_checkpoint
from feature_nets.gfnet import GFNet

from .data.image_folder import check_image_dataset, imagenet_split

WEIGHTS_DIR = Path(__file__).parent / "weights"
#: The small GFNet shipped for the embedded default task.
DEFAULT_FMNIST_CHECKPOINT = WEIGHTS_DIR / "cluttered_fmnist_gfnet.pth.tar"

IMAGENET_HELP = (
    "GFNet-ImageNet-v0 needs a released GFNet checkpoint and ImageNet. Download a checkpoint (*.pth.tar) from "
    "the links in the official GFNet README and pass checkpoint=PATH (or set GFNET_CHECKPOINT=PATH); put "
    "ImageNet in ImageFolder layout (ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG) and pass data_root=ROOT "
    "(or set GFNET_IMAGENET=ROOT), or pass dataset= any torch Dataset of (3×S×S tensor, label). Without ImageNet, "
    "try the embedded task: gym.make('GFNet-ClutteredFashionMNIST-v0')."
)


def load_model(checkpoint, trusted_pickle: bool = False) -> GFNet:
    """A GFNet from a path or an existing model.

    Raises:
        TypeError: ``checkpoint`` is neither a path nor a GFNet, or ``trusted_pickle`` is not True/False (only the
            bool True turns on full unpickling, which runs code stored in the file).
    """
    check_trusted_pickle(trusted_pickle)
    if isinstance(checkpoint, GFNet):
        return checkpoint
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path to a GFNet *.pth.tar file or a feature_nets GFNet model, got "
                        f"{checkpoint!r:.100} ({type(checkpoint).__name__})")
    return load_checkpoint(checkpoint, trusted_pickle=trusted_pickle).model


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
    from .data.prepared import open_prepared

    cache = open_prepared(dataset, prepared, image_size)
    if cache is None:
        return dataset
    logging.getLogger("gfnet_env").info("using the prepared cache %s (%d images) instead of decoding %s",
                                        cache.path, len(cache), dataset.root)
    return cache


def cluttered_fashion_mnist_task(checkpoint=None, data_root=None, dataset: Dataset | None = None,
                                 split: str = "test", trusted_pickle: bool = False,
                                 num_samples: int | None = None, seed: int = 0) -> tuple[GFNet, Dataset]:
    """Model and images of ``GFNet-ClutteredFashionMNIST-v0``.

    ``data_root`` is a folder with the four Fashion-MNIST IDX files (default: the Debian package's folder).
    ``split`` is ``train`` / ``val`` / ``test``; ``seed`` fixes the canvases.
    """
    if checkpoint is None:
        checkpoint = DEFAULT_FMNIST_CHECKPOINT
        if not Path(checkpoint).exists():
            raise FileNotFoundError(
                f"the shipped weights {checkpoint} are missing from this install; reinstall the package or "
                "train them with `gfnet train-default-task`"
            )
    model = load_model(checkpoint, trusted_pickle)
    if dataset is None:
        from .data.cluttered_fashion_mnist import ClutteredFashionMNIST

        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'")
        dataset = ClutteredFashionMNIST(split=split, root=data_root, canvas_size=model.image_size,
                                        seed=seed, num_samples=num_samples)
    else:
        check_image_dataset(dataset, model.image_size, model.num_classes)
    return model, dataset


TASKS = {
    "imagenet": imagenet_task,
    "cluttered_fashion_mnist": cluttered_fashion_mnist_task,
}
