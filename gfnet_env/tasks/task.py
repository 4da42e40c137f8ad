"""What an env id stands for: the :class:`Task` record — its networks and images, its splits, its training data.

A task is one object (registered with :func:`gfnet_env.tasks.register_task`) that answers every question the
env, the benchmark, the trainers and ``gfnet train-features`` ask about an env id:

* which networks and images (``loader``: task kwargs → (GFNet, dataset); the kwargs it accepts are its
  keyword parameters, so an unknown one is refused with the valid ones listed);
* which split the env evaluates on by default (``eval_split``), which split the benchmark fits its budgeted
  thresholds on (``fit_split``; None: held-out images of the evaluation split), which split training holds out
  for validation and pictures (``validation_split``) and which split it trains on (``train_split``);
* how to train its networks (``training_sets``, optional ``pretraining_set``, and what a fresh model needs:
  ``num_classes``, ``image_size``, ``model_families``);
* what its classes are called (:meth:`Task.class_names`: the images' own names — an image folder's class
  folders, mapped to WordNet names where the data root has a synset list — else the task's
  ``default_class_names``).

Splits are chosen with the loader's ``split=`` keyword; a task without one has a single image set.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from torch.utils.data import Dataset

from feature_nets.checkpoint import check_trusted_pickle, load_checkpoint
from feature_nets.gfnet import GFNet

__all__ = ["SYNSET_LISTS", "Task", "TrainingOptions", "checkpoint_stage", "class_names_of", "dataset_class_names",
           "load_model"]

#: Gymnasium's id grammar (``Name-vN``; a ``namespace/`` prefix allowed), without the ``module:`` prefix.
_ENV_ID = re.compile(r"^(?:[\w:.-]+/)?[\w:.-]+?(?:-v\d+)?$")


@dataclass(frozen=True)
class TrainingOptions:
    """What ``gfnet train-features`` asks of a task's training data (every field optional)."""

    #: the task's own data folder instead of its default (Fashion-MNIST IDX files, an ImageNet root, ...)
    data_root: str | None = None
    #: use only N training / validation items, spread evenly over each split (quick runs;
    #: :func:`feature_nets.sampling.spread_subset`)
    train_samples: int | None = None
    val_samples: int | None = None
    #: fixes generated data (e.g. the cluttered canvases)
    seed: int = 0
    #: resize of the training RandomResizedCrop: "bilinear" or "dataset" (see gfnet_env.data.image_folder)
    train_crop_interpolation: str = "bilinear"


@dataclass(frozen=True)
class Task:
    """Everything one env id means (see the module docstring).

    Example (a task over an ImageFolder with ``train/`` and ``val/``, networks from a checkpoint)::

        def load(checkpoint=CKPT, split="val", trusted_pickle=False):
            model = load_model(checkpoint, trusted_pickle)
            return model, image_folder_split(ROOT, split, model)

        register_task(Task("MyTask-v0", "my_task", load, num_classes=2,
                           training_sets=lambda model, opts: image_folder_training_sets(ROOT, model, opts)))
        gym.make("MyTask-v0")
    """

    #: the Gymnasium id (``"GFNet-ImageNet-v0"``)
    env_id: str
    #: short name (``"imagenet"``; the CLI also accepts it with ``-`` for ``_``)
    name: str
    #: task kwargs → (GFNet model, dataset of (3×S×S float tensor, label)); its keyword parameters are the task
    #: kwargs the env id accepts
    loader: Callable[..., tuple[GFNet, Dataset]]
    #: the env's default split (what ``gym.make`` and the benchmark evaluate); None: the loader has no ``split``
    eval_split: str | None = "val"
    #: the split the benchmark fits budgeted thresholds on; None: held-out images of the evaluation split
    fit_split: str | None = None
    #: the split training holds out (SB3's evaluation env, the TensorBoard episode pictures)
    validation_split: str | None = "val"
    #: the split agents train on
    train_split: str | None = "train"
    #: classes and image side S of a fresh model for this task (``gfnet train-features``); None: not known
    num_classes: int | None = None
    image_size: int | None = None
    #: encoder families whose networks fit the images (empty: any)
    model_families: tuple[str, ...] = ()
    #: (model, options) → (train, val) datasets for ``gfnet train-features``; None: the task cannot be trained
    training_sets: Callable[[GFNet, TrainingOptions], tuple[Dataset, Dataset]] | None = None
    #: options → clean items to pretrain a fresh encoder on before stage 1 (None: no pretraining)
    pretraining_set: Callable[[TrainingOptions], Dataset] | None = None
    #: DataLoader workers ``gfnet train-features`` uses by default (0 for data made in memory), at most the cores
    #: present (:func:`feature_nets.devices.default_workers`)
    training_workers: int = 8
    #: names of classes 0..K−1 when the images do not carry their own (:meth:`class_names`); None: not known
    default_class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not _ENV_ID.match(self.env_id) or ":" in self.env_id:
            raise ValueError(f"env_id must be a Gymnasium id such as 'MyTask-v0', got {self.env_id!r}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name must be a Python identifier such as 'my_task', got {self.name!r}")
        if not callable(self.loader):
            raise TypeError(f"loader must be a function of the task kwargs, got {self.loader!r:.100}")
        params = inspect.signature(self.loader).parameters.values()
        if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            raise TypeError(f"the loader of {self.env_id} must name every task kwarg it accepts (no *args/**kwargs): "
                            "they are the env kwargs the env id accepts")
        if self.eval_split is not None and "split" not in self.kwargs:
            raise ValueError(f"{self.env_id}: eval_split={self.eval_split!r} needs a split= parameter in the loader "
                             "(or eval_split=None for a task with a single image set)")

    @property
    def kwargs(self) -> tuple[str, ...]:
        """The task kwargs this env id accepts (the loader's keyword parameters), in order."""
        return tuple(p.name for p in inspect.signature(self.loader).parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    @property
    def env_defaults(self) -> dict[str, Any]:
        """Task kwargs Gymnasium's registration passes by default: the evaluation split."""
        return {"split": self.eval_split} if self.eval_split is not None else {}

    @property
    def cli_name(self) -> str:
        """The name as the command line spells it (``cluttered-fashion-mnist``)."""
        return self.name.replace("_", "-")

    def load(self, **task_kwargs) -> tuple[GFNet, Dataset]:
        """(model, dataset) for these task kwargs; an unknown kwarg raises a ``TypeError`` listing the valid ones."""
        unknown = set(task_kwargs) - set(self.kwargs)
        if unknown:
            raise TypeError(f"unknown task arguments {sorted(unknown)} for {self.env_id}; "
                            f"valid: {sorted(self.kwargs)}")
        return self.loader(**task_kwargs)

    def class_names(self, dataset: Dataset | None = None, num_classes: int | None = None) -> list[str]:
        """The name of every class, by label: what ``gfnet show``, the benchmark's report and the training
        pictures print instead of class ids.

        The images' own names first (:func:`dataset_class_names`: an image folder's class-folder names, as WordNet
        names where its data root has a synset list), else the task's :attr:`default_class_names`, else
        ``"class i"``. ``num_classes`` (default: the dataset's or the task's) is how many names are returned;
        names missing from a shorter list are ``"class i"``."""
        return class_names_of(dataset, num_classes, self)

    def split_kwargs(self, split: str | None, **task_kwargs) -> dict[str, Any]:
        """``task_kwargs`` with ``split`` set (None, or a task without splits: unchanged)."""
        if split is None or "split" not in self.kwargs:
            return dict(task_kwargs)
        return {**task_kwargs, "split": split}


def load_model(checkpoint, trusted_pickle: bool = False) -> GFNet:
    """A GFNet from a path or an existing model (what task loaders call on their ``checkpoint=``).

    A model loaded from a path remembers where it came from: ``model.checkpoint_path`` (the path, as a string)
    and ``model.checkpoint_stage`` (the training stage that wrote the file — its ``stage`` entry: 1 for
    ``gfnet train-features --stage 1``, whose policy is untrained, 2 after ``gfnet train-policy``, 3 — or None
    for a released checkpoint, which stores none), so that an agent reading the stored policy can refuse an
    untrained one (:meth:`agents.paper_ppo.PaperPPOAgent.runs`). A model passed in is returned as it is.

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
    loaded = load_checkpoint(checkpoint, trusted_pickle=trusted_pickle)
    model = loaded.model
    model.checkpoint_path = os.fspath(checkpoint)
    model.checkpoint_stage = checkpoint_stage(loaded.extra)
    return model


def checkpoint_stage(entries: dict) -> int | None:
    """The training stage a checkpoint's entries say wrote it (its ``stage`` entry), or None when it says none
    (a released checkpoint) or says it in a form that is not a whole number."""
    stage = entries.get("stage")
    try:
        value = int(stage.item() if hasattr(stage, "item") else stage)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if not isinstance(stage, bool) else None


#: Files in an ImageNet-style data root that map WordNet ids to names, one ``n01440764 tench, Tinca tinca`` a line
#: (Kaggle's ``LOC_synset_mapping.txt``, Caffe's ``synset_words.txt``); the first name of each line is used.
SYNSET_LISTS = ("LOC_synset_mapping.txt", "synset_words.txt")


def class_names_of(dataset: Dataset | None, num_classes: int | None = None, task: Task | None = None) -> list[str]:
    """:meth:`Task.class_names` for a dataset whose task may be unknown (``task=None``: the dataset's own names,
    else ``"class i"``)."""
    names = dataset_class_names(dataset) if dataset is not None else None
    if not names and task is not None:
        names = list(task.default_class_names or ())
    names = names or []
    k = num_classes if num_classes is not None else (len(names) or (task.num_classes if task else 0) or 0)
    return [names[i] if i < len(names) else f"class {i}" for i in range(int(k))]


def dataset_class_names(dataset: Dataset) -> list[str] | None:
    """The class names a dataset carries (``dataset.classes``, looked for through ``Subset``-style wrappers), or
    None. Class folders named by WordNet id (``n01440764``) are given their WordNet names when a synset list
    (:data:`SYNSET_LISTS`) lies in the folder holding the split or above it."""
    seen = 0
    while dataset is not None and not hasattr(dataset, "classes") and seen < 8:
        dataset, seen = getattr(dataset, "dataset", None), seen + 1
    classes = getattr(dataset, "classes", None)
    if not classes:
        return None
    names = [str(c) for c in classes]
    root = getattr(dataset, "root", None) or getattr(dataset, "path", None)  # an image folder, a prepared cache
    if root is not None and all(re.fullmatch(r"n\d{8}", n) for n in names):
        words = _synset_words(os.fspath(root))
        names = [words.get(n, n) for n in names]
    return names


def _synset_words(root: str) -> dict[str, str]:
    """WordNet id → its first name, from a synset list beside the split folder ``root`` or one level above."""
    for folder in (os.path.dirname(os.path.abspath(root)), os.path.dirname(os.path.dirname(os.path.abspath(root)))):
        for name in SYNSET_LISTS:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and os.path.getsize(path) < 10_000_000:
                words = {}
                with open(path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        wnid, _, rest = line.strip().partition(" ")
                        if wnid and rest:
                            words[wnid] = rest.split(",")[0].strip()
                return words
    return {}
