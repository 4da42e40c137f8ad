"""``GFNet-ClutteredFashionMNIST-v0``: the embedded default task — the project's shipped small GFNet over
cluttered Fashion-MNIST canvases (112×112, 10 classes; ``train`` / ``val`` / ``test`` splits).

``checkpoint=`` (default: the shipped weights) and ``dataset=`` override the defaults; ``data_root`` is a folder
with the four Fashion-MNIST IDX files (default: searched, e.g. the Debian package's folder).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from feature_nets.gfnet import GFNet
from feature_nets.sampling import spread_subset

from ..data.cluttered_fashion_mnist import FASHION_MNIST_CLASSES
from ..data.image_folder import check_image_dataset
from .task import Task, TrainingOptions, load_model

__all__ = ["DEFAULT_FMNIST_CHECKPOINT", "TASK", "WEIGHTS_DIR", "cluttered_fashion_mnist_task"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: The small GFNet shipped for the embedded default task.
DEFAULT_FMNIST_CHECKPOINT = WEIGHTS_DIR / "cluttered_fmnist_gfnet.pth.tar"
#: The encoder family the task's networks use (112×112 canvases, 10 classes).
TASK_FAMILY = "small_cnn"


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
        from ..data.cluttered_fashion_mnist import ClutteredFashionMNIST

        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose 'train', 'val' or 'test'")
        dataset = ClutteredFashionMNIST(split=split, root=data_root, canvas_size=model.image_size,
                                        seed=seed, num_samples=num_samples)
    else:
        check_image_dataset(dataset, model.image_size, model.num_classes)
    return model, dataset



def training_sets(model: GFNet, options: TrainingOptions) -> tuple[Dataset, Dataset]:
    """The train and val canvases at the model's image size (``options.seed`` fixes them); the sample caps take
    canvases spread evenly over each split (:func:`feature_nets.sampling.spread_subset`), as the benchmark does."""
    from ..data.cluttered_fashion_mnist import ClutteredFashionMNIST

    geo = dict(canvas_size=model.image_size, root=options.data_root, seed=options.seed)
    return (spread_subset(ClutteredFashionMNIST("train", **geo), options.train_samples),
            spread_subset(ClutteredFashionMNIST("val", **geo), options.val_samples))


def pretraining_set(options: TrainingOptions) -> Dataset:
    """Clean, uncluttered training items to pretrain a fresh encoder on."""
    from ..data.cluttered_fashion_mnist import FashionMNISTItems

    return FashionMNISTItems("train", root=options.data_root)


TASK = Task(
    env_id="GFNet-ClutteredFashionMNIST-v0",
    name="cluttered_fashion_mnist",
    loader=cluttered_fashion_mnist_task,
    eval_split="test",
    fit_split="val",  # a split of its own, disjoint from the evaluated test canvases
    validation_split="val",
    train_split="train",
    num_classes=10,
    image_size=112,
    model_families=(TASK_FAMILY,),
    training_sets=training_sets,
    pretraining_set=pretraining_set,
    training_workers=0,  # canvases are made in memory
    default_class_names=FASHION_MNIST_CLASSES,
)
