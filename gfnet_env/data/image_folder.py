"""Image datasets for the GFNet environment: ImageNet in ImageFolder layout and user datasets.

* :func:`eval_transform` / :func:`train_transform`: the per-backbone transforms (docs/gfnet.md, "Backbone settings"):
  (evaluation: Resize(int(S / crop_pct)) → CenterCrop(S) → ToTensor → Normalize with the ImageNet
  constants; training: RandomResizedCrop(S) → RandomHorizontalFlip → ToTensor → Normalize).
* :class:`ImageFolderDataset`: ``root/<class>/<image files>``, class indices in sorted folder order exactly as
  ``torchvision.datasets.ImageFolder`` assigns them (so ImageNet wnids map to the usual 0..999). An image
  that cannot be decoded raises :class:`CorruptImageError` naming the file; the dataset never skips
  silently — the environment's core catches the error, warns, counts it and moves on to the next image.
* :func:`imagenet_split`: ``data_root/train`` or ``data_root/val`` with the right transform.
* :func:`check_image_dataset`: a cheap sanity check of a user dataset passed to the environment (the tasks
  run it on every ``dataset=`` argument); defined in :mod:`gfnet_env.checks`, re-exported here.
* :func:`denormalizer_for`: normalised tensor → uint8 RGB array, for rendering.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from feature_nets.configs import BackboneConfig

from ..checks import check_image_dataset  # noqa: F401  (re-exported)
from . import decoding, seeded

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "IMAGENET_LAYOUT",
    "CorruptImageError",
    "ImageFolderDataset",
    "eval_transform",
    "train_transform",
    "imagenet_split",
    "check_image_dataset",
    "denormalizer_for",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: File name endings :class:`ImageFolderDataset` accepts by default (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: The layout :func:`imagenet_split` expects, quoted in its errors.
IMAGENET_LAYOUT = "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"

PathLike = Union[str, os.PathLike]

_INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def _interpolation(name: str) -> InterpolationMode:
    try:
        return _INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset interpolation {name!r}; expected one of {sorted(_INTERPOLATIONS)}"
        ) from None


def _normalize() -> transforms.Normalize:
    return transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)


# --------------------------------------------------------------------------------------------- transforms


def eval_transform(config: BackboneConfig) -> transforms.Compose:
    """The evaluation transform of one backbone (docs/gfnet.md, "Backbone settings").

    Resize the shorter side to ``int(image_size / crop_pct)`` with the backbone's dataset interpolation,
    centre-crop ``image_size`` × ``image_size``, convert to a float tensor in [0, 1] and normalise with the
    ImageNet mean and standard deviation. Input: a PIL RGB image; output: float32 (3, S, S).
    """
    size = config.image_size
    return transforms.Compose(
        [
            transforms.Resize(int(size / config.crop_pct), interpolation=_interpolation(config.dataset_interpolation)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            _normalize(),
        ]
    )


def train_transform(config: BackboneConfig, interpolation: str = "bilinear") -> transforms.Compose:
    """The training transform: RandomResizedCrop(S), horizontal flip, ToTensor, ImageNet normalisation.
    Input: a PIL RGB image; output: float32 (3, S, S).

    ``interpolation`` of the crop's resize: ``bilinear`` (default) for every backbone, as GFNet's training code
    does (torchvision's RandomResizedCrop default), or ``dataset`` for the backbone's evaluation interpolation
    (bicubic for ResNet-50, MobileNet-V3, EfficientNet). S is the model's image size: 224 for every released
    configuration but EfficientNet-B2/B3 (260/300), which the original trains at 224 and evaluates at 260/300;
    here a model has one input size, so they train at their own (docs/training.md).

    The two random steps are the seeded ones of :mod:`gfnet_env.data.seeded`: inside the env each load is seeded
    from the slot's generator (so seeded resets repeat), elsewhere they draw from torch's global RNG."""
    if interpolation not in ("bilinear", "dataset"):
        raise ValueError(f"interpolation must be 'bilinear' (the original's) or 'dataset' (the backbone's), "
                         f"got {interpolation!r}")
    mode = config.dataset_interpolation if interpolation == "dataset" else "bilinear"
    return transforms.Compose(
        [
            seeded.RandomResizedCrop(config.image_size, interpolation=_interpolation(mode)),
            seeded.RandomHorizontalFlip(),
            transforms.ToTensor(),
            _normalize(),
        ]
    )


# --------------------------------------------------------------------------------------------- ImageFolder


class CorruptImageError(OSError):
    """An image file could not be opened or decoded. The message names the file; ``.path`` holds it too
    (``None`` when torch's DataLoader re-raises the error from a worker process with only a message)."""

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)

    @classmethod
    def for_file(cls, path: PathLike, reason: str = "") -> "CorruptImageError":
        """The error for ``path``, with the decoder's ``reason`` appended."""
        msg = f"cannot read or decode image file {path}" + (f": {reason}" if reason else "")
        return cls(msg, path)

    def __reduce__(self):  # keep .path when pickled (e.g. across processes)
        return (type(self), (str(self.args[0]) if self.args else "", self.path))


def _layout_hint() -> str:
    return "expected an ImageFolder layout: root/<class>/<image files>"


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_ancestor(real: str, folder: str) -> bool:
    """Whether the real path ``real`` is ``folder``'s real path or one of its parents (following it would loop)."""
    own = os.path.realpath(folder)
    return own == real or own.startswith(real.rstrip(os.sep) + os.sep)


class ImageFolderDataset(decoding.FolderRawItems, Dataset):
    """Images in ``root/<class>/<image files>`` (class folders may hold sub-folders; files are found recursively).

    Symlinks are followed, but each folder is listed once (by its real path) and never one that leads back to the
    root, another class or an ancestor (a warning counts the links skipped); only regular files are listed, so a
    FIFO or device named like an image is never opened.

    Class indices follow the sorted class-folder names, as in ``torchvision.datasets.ImageFolder``. Hidden
    entries (names starting with ``.``, e.g. ``.ipynb_checkpoints``) are ignored. Files are matched by
    ``extensions``, case-insensitively, and listed in sorted order within each class.

    Attributes:
        root: the dataset folder.
        classes: sorted class-folder names.
        class_to_idx: class name → label.
        samples: list of ``(path, label)``.
        targets: the labels, in sample order.
        mean, std: the normalisation constants of the transforms built here (ImageNet's), used by
            :func:`denormalizer_for`. Change them if you pass a transform with other constants.

    ``dataset[i]`` is ``(transform(image), label)``; the image is opened with PIL and converted to RGB. An
    image that cannot be decoded raises :class:`CorruptImageError` naming the file.

    ``decoder="torchvision"`` (opt-in) decodes with ``torchvision.io.decode_jpeg`` and resizes/crops with tensor
    kernels (:mod:`gfnet_env.data.decoding`) when the transform is the evaluation transform; files it rejects, and
    other transforms, use PIL. Pixels differ slightly from PIL's (tests/gfnet_env/test_decoding.py states by how much).
    For the env it hands out raw items (:class:`decoding.FolderRawItems`, :meth:`encoded_item`), normalised in
    batches on its device (:mod:`gfnet_env.data.loading`).

    Raises:
        FileNotFoundError: ``root`` is missing, has no class folders, a class folder holds no image, or no image
            was found at all. The message names the path and the expected layout.
        NotADirectoryError: ``root`` is a file.
    """

    #: Samples are decoded from files (the env decodes them in threads; in-memory datasets need none).
    decodes_files = True

    def __init__(
        self,
        root: PathLike,
        transform: Callable[[Image.Image], Any] | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        decoder: str = "pil",
    ) -> None:
        if decoder not in ("pil", "torchvision"):
            raise ValueError(f"decoder must be 'pil' or 'torchvision', got {decoder!r}")
        self.root = Path(root).expanduser()
        self.transform = transform
        self.decoder = decoder
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        if not self.extensions:
            raise ValueError("extensions must not be empty")
        self.mean: tuple[float, ...] = IMAGENET_MEAN
        self.std: tuple[float, ...] = IMAGENET_STD

        if not self.root.exists():
            raise FileNotFoundError(f"dataset folder {self.root} does not exist; {_layout_hint()}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"dataset path {self.root} is not a folder; {_layout_hint()}")

        self.classes = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not _is_hidden(e.name)
        )
        if not self.classes:
            loose = self._image_files(self.root, recursive=False)
            extra = (
                f" (it holds {len(loose)} image files directly: move them into one sub-folder per class)"
                if loose
                else ""
            )
            raise FileNotFoundError(f"dataset folder {self.root} has no class sub-folders{extra}; {_layout_hint()}")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        self.samples: list[tuple[str, int]] = []
        empty: list[str] = []
        self._skipped_links = 0
        class_dirs = {os.path.realpath(self.root / c) for c in self.classes}
        for c in self.classes:
            # a class's walk never enters the root, another class or a folder it has already listed
            blocked = {os.path.realpath(self.root)} | (class_dirs - {os.path.realpath(self.root / c)})
            files = self._image_files(self.root / c, recursive=True, blocked=blocked)
            if not files:
                empty.append(c)
            self.samples.extend((f, self.class_to_idx[c]) for f in files)
        exts = ", ".join(self.extensions)
        if not self.samples:
            raise FileNotFoundError(
                f"no image files ({exts}) found in any class folder of {self.root}; {_layout_hint()}"
            )
        if empty:
            shown = ", ".join(repr(c) for c in empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            raise FileNotFoundError(
                f"class folder(s) {shown} of {self.root} hold no image files ({exts}); every class needs at least "
                f"one image ({_layout_hint()})"
            )
        if self._skipped_links:
            warnings.warn(f"{self.root}: skipped {self._skipped_links} symlinked folder(s) that lead back to a folder "
                          "already listed (a loop, the dataset root or another class)", stacklevel=2)
        self.targets = [label for _, label in self.samples]

    @property
    def seeded_augmentation(self) -> bool:
        """Whether the transform augments at random with :mod:`gfnet_env.data.seeded` transforms (the train split's);
        the env's loader then seeds each load from the slot's generator, so seeded resets repeat."""
        return seeded.has_seeded_transform(self.transform)

    def _image_files(self, folder: Path, recursive: bool, blocked: set[str] | None = None) -> list[str]:
        """Regular image files in ``folder`` (sorted; sub-folders after files, depth first when ``recursive``).

        Symlinks are followed, but a folder is listed at most once (by its real path) and never one in
        ``blocked``; FIFOs, sockets and devices are skipped (``DirEntry.is_file`` is true only for regular files,
        so opening one can never block)."""
        out: list[str] = []
        seen = set(blocked or ())
        stack = [str(folder)]
        seen.add(os.path.realpath(folder))
        while stack:
            with os.scandir(stack.pop()) as it:
                entries = sorted((e for e in it if not _is_hidden(e.name)), key=lambda e: e.name)
            subdirs = []
            for e in entries:
                try:
                    if recursive and e.is_dir():
                        real = os.path.realpath(e.path)
                        if real in seen or _is_ancestor(real, str(folder)):
                            self._skipped_links += 1
                            continue
                        seen.add(real)
                        subdirs.append(e.path)
                    elif e.is_file() and e.name.lower().endswith(self.extensions):
                        out.append(e.path)
                except OSError:  # a broken link or an entry removed meanwhile: not an image
                    continue
            stack.extend(reversed(subdirs))
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        """The decoded RGB image of sample ``index`` (no transform); :class:`CorruptImageError` if unreadable."""
        path = self.samples[index][0]
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # replaced by a FIFO or device since listing: never open
                raise CorruptImageError.for_file(path, "not a regular file")
            with open(path, "rb") as f:
                img = Image.open(f)
                return img.convert("RGB")  # forces the full decode while the file is open
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            if isinstance(err, CorruptImageError):
                raise
            raise CorruptImageError.for_file(path, f"{type(err).__name__}: {err}") from err

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if self.decoder == "torchvision" and self.normalization is not None:
            pixels, label = self.uint8_item(index)
            return decoding.normalize_uint8(pixels, *self.normalization), label
        img = self.load_image(index)
        return (self.transform(img) if self.transform is not None else img), self.samples[index][1]

    def encoded_item(self, index: int) -> tuple[torch.Tensor, int]:  # raw item protocol, gfnet_env/data/loading.py
        """(the file's bytes as a uint8 1-D tensor, label); :class:`CorruptImageError` if it cannot be read."""
        path = self.samples[index][0]
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)  # a FIFO would block the read: never open one
            data = decoding.read_bytes(path) if regular else None
        except OSError as err:
            raise CorruptImageError.for_file(path, f"{type(err).__name__}: {err}") from err
        if data is None:
            raise CorruptImageError.for_file(path, "not a regular file")
        return data, self.samples[index][1]

    @property
    def source(self) -> str:
        """Where the images are read from (reported by the benchmark)."""
        return f"image folder {self.root}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, classes={len(self.classes)}, "
            f"samples={len(self.samples)}, transform={self.transform!r})"
        )


# --------------------------------------------------------------------------------------------- ImageNet


def imagenet_split(data_root: PathLike, split: str, config: BackboneConfig) -> ImageFolderDataset:
    """ImageNet's ``train`` or ``val`` split from ``data_root`` in ImageFolder layout.

    ``train`` gets :func:`train_transform`, ``val`` gets :func:`eval_transform` (both for ``config``).

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"val"``.
        FileNotFoundError: ``data_root`` or ``data_root/split`` is missing or not in the expected layout
            (:data:`IMAGENET_LAYOUT`).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not isinstance(data_root, (str, os.PathLike)):
        raise TypeError(f"data_root must be a folder path, got {data_root!r:.100} ({type(data_root).__name__})")
    root = Path(data_root).expanduser()
    folder = root / split
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"data_root {root} is a file, not a folder; pass the ImageNet folder that holds "
                                 f"train/ and val/ ({IMAGENET_LAYOUT.replace('<root>', str(root))})")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; expected "
                                 f"{IMAGENET_LAYOUT.replace('<root>', str(root))}")
    if not folder.is_dir():
        what = f"ImageNet folder {root} does not exist" if not root.is_dir() else f"{folder} does not exist"
        raise FileNotFoundError(f"{what}; expected ImageNet in ImageFolder layout: {IMAGENET_LAYOUT.replace('<root>', str(root))}")
    transform = train_transform(config) if split == "train" else eval_transform(config)
    try:
        return ImageFolderDataset(folder, transform=transform)
    except FileNotFoundError as err:
        hint = ""
        if split == "val" and "no class sub-folders" in str(err):
            hint = (
                " The validation images must be sorted into one folder per wnid (e.g. with the widely used "
                "valprep.sh script)."
            )
        raise FileNotFoundError(
            f"{err}. Expected ImageNet in ImageFolder layout: {IMAGENET_LAYOUT.replace('<root>', str(root))}.{hint}"
        ) from err


# --------------------------------------------------------------------------------------------- rendering helper


def _stats(dataset: Any) -> tuple[Any, Any] | None:
    """(mean, std) of a dataset, looking through wrappers such as ``torch.utils.data.Subset``."""
    seen = 0
    while dataset is not None and seen < 8:
        mean, std = getattr(dataset, "mean", None), getattr(dataset, "std", None)
        if mean is not None and std is not None and not callable(mean) and not callable(std):
            return mean, std
        if isinstance(dataset, ImageFolderDataset):
            return IMAGENET_MEAN, IMAGENET_STD
        dataset = getattr(dataset, "dataset", None)
        seen += 1
    return None


def _per_channel(values: Any, channels: int, name: str) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise ValueError(f"dataset {name} has {arr.size} values for an image with {channels} channels")
    return arr.reshape(channels, 1, 1)


def denormalizer_for(dataset: Any) -> Callable[[Any], np.ndarray]:
    """A function mapping a normalised image tensor (C, S, S) to an (S, S, 3) uint8 RGB array for rendering.

    Normalisation constants come from the dataset's ``mean`` / ``std`` attributes (scalars or per-channel;
    wrappers with a ``.dataset`` attribute, such as ``Subset``, are looked through), else the ImageNet
    constants for an :class:`ImageFolderDataset`; otherwise each image is min–max scaled to [0, 255].
    One-channel images are repeated to RGB. Tensors on any device, and numpy arrays, are accepted.
    """
    stats = _stats(dataset)

    def denormalize(image: Any) -> np.ndarray:
        x = image.detach().to("cpu", torch.float32).numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
        if x.ndim != 3:
            raise ValueError(f"expected one image (C, H, W), got shape {x.shape}")
        c = x.shape[0]
        if c not in (1, 3):
            raise ValueError(f"expected 1 or 3 channels, got shape {x.shape}")
        if stats is not None:
            x = x * _per_channel(stats[1], c, "std") + _per_channel(stats[0], c, "mean")
        else:
            lo, hi = float(np.min(x)), float(np.max(x))
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        if c == 1:
            x = np.repeat(x, 3, axis=0)
        return np.ascontiguousarray(x.transpose(1, 2, 0))

    return denormalize
