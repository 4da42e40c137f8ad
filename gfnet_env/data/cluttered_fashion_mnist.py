"""Cluttered Fashion-MNIST: the project's embedded, CPU-sized default task.

Each sample is a ``canvas_size`` x ``canvas_size`` grey canvas (112 px by default) holding **one** 28x28
Fashion-MNIST item at a uniformly random position (fully inside the canvas) plus ``num_clutter`` fragments
(16 by default): random ``fragment_size`` x ``fragment_size`` crops (9 px by default) of *other* random
items of the same split, each at a uniformly random position. Overlapping pixels are combined with ``max``,
so values stay in [0, 1]. The label is the class of the item. Finding the item in the clutter is the point:
a glance at the down-sampled canvas sees only a small blurred object among similar-looking fragments, and a
focus patch on the item classifies it well — the setting GFNet is built for.

Fragment size: 9 px (a third of an item side). Smaller fragments (the 8 px of cluttered MNIST) are mostly
single strokes; 9 px crops of clothing items carry texture and edges that look like parts of real items,
yet stay clearly smaller than a whole item.

Data files
----------
The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each gzipped or not) are looked up, in this order, in

1. the folder passed as ``root=`` (also its torchvision layout ``root/FashionMNIST/raw``),
2. the folder named by the environment variable ``FASHION_MNIST_DIR``,
3. the Debian package location ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``),
4. with ``download=True``: torchvision's ``FashionMNIST`` download into ``root`` (default
   ``~/.cache/gfnet/fashion-mnist``), read back from ``root/FashionMNIST/raw``.

If none has them, :class:`FashionMNISTNotFoundError` (a ``FileNotFoundError``) says how to get them.
The IDX files are parsed with numpy; torchvision is only needed for the download.

Splits
------
``"train"``: the 60,000 training items minus the last ``val_size`` (5,000 by default); ``"val"``: those last
``val_size`` items (threshold fitting, early stopping); ``"test"``: the 10,000 test items. Clutter for a
canvas is always cut from items of the same split, so validation and test canvases contain no training
pixels at all.

Determinism
-----------
Canvas ``i`` of a split is a pure function of ``(seed, split, i, epoch)`` (and of the geometry arguments):
its random numbers come from ``np.random.default_rng(np.random.SeedSequence([seed, split_id, epoch, i]))``.
Random access is therefore deterministic and independent of DataLoader workers. Canvas ``i`` always holds
item ``i`` of the split (labels and item order never change); :meth:`ClutteredFashionMNIST.set_epoch` draws
new positions and clutter for every epoch, which is what training should do (the networks cannot memorise a
fixed set of canvases). Evaluation leaves the epoch at 0.

Normalisation
-------------
Pixels are scaled to [0, 1] and, with ``normalize=True``, standardised with the pixel mean and standard
deviation of the 60,000 Fashion-MNIST training images, :data:`FASHION_MNIST_MEAN` = 0.2860405969887955 and
:data:`FASHION_MNIST_STD` = 0.35302424451492254 (computed once from ``train-images-idx3-ubyte``; a test checks
them). Canvases and clean items (:class:`FashionMNISTItems`) use the *same* constants on purpose: a pixel
value maps to the same input in both, so an encoder pretrained on clean items sees the same numbers in a
focus patch on a canvas. The grey channel is repeated ``channels`` times (3 by default) so ImageNet-style
encoders apply unchanged.
"""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "DEBIAN_DIR",
    "ENV_VAR",
    "ITEM_SIZE",
    "FashionMNISTNotFoundError",
    "find_fashion_mnist_dir",
    "load_fashion_mnist",
    "read_idx",
    "ClutteredFashionMNIST",
    "FashionMNISTItems",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: pixel mean / std (pixels / 255) over all 60,000 Fashion-MNIST training images
FASHION_MNIST_MEAN = 0.2860405969887955
FASHION_MNIST_STD = 0.35302424451492254

#: where the Debian package ``dataset-fashion-mnist`` installs the IDX files
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: environment variable naming a folder with the IDX files
ENV_VAR = "FASHION_MNIST_DIR"
#: side of a Fashion-MNIST item, pixels
ITEM_SIZE = 28

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}

PathLike = Union[str, os.PathLike]



def _check_index(i, length: int) -> int:
    """A valid non-negative index into ``length`` samples (negative indices count from the end)."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(i).__name__}")
    i = int(i)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {i} out of range for {length} samples")
    return i

class FashionMNISTNotFoundError(FileNotFoundError):
    """The Fashion-MNIST IDX files were found nowhere; the message says how to get them."""


def _default_download_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "gfnet" / "fashion-mnist"


def _file_in(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def _has_all_files(folder: Path) -> bool:
    return all(_file_in(folder, stem) is not None for stem in _FILES.values())


def _layouts(base: Path) -> list[Path]:
    """The folder itself and torchvision's layout below it."""
    return [base, base / "FashionMNIST" / "raw"]


def _candidate_dirs(root: Optional[PathLike]) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        dirs += _layouts(Path(root).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += _layouts(Path(env).expanduser())
    dirs.append(Path(DEBIAN_DIR))
    if root is None:
        dirs += _layouts(_default_download_root())
    return dirs


def _not_found_message(searched: Sequence[Path]) -> str:
    where = ", ".join(str(p) for p in searched)
    return (
        "Fashion-MNIST IDX files not found (looked in: " + where + "). Get them in one of three ways:\n"
        "  1. Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (installs them in "
        f"{DEBIAN_DIR}/);\n"
        f"  2. pass `root=` or set the environment variable {ENV_VAR} to a folder holding the four IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
        "each optionally .gz);\n"
        "  3. pass `download=True` (needs torchvision and internet access) to download them into `root`."
    )


def find_fashion_mnist_dir(root: Optional[PathLike] = None, download: bool = False) -> Path:
    """The folder holding the four IDX files (see the module docstring for the search order).

    Raises:
        FashionMNISTNotFoundError: nothing found and ``download`` is False (or the download failed).
    """
    searched = _candidate_dirs(root)
    for folder in searched:
        if _has_all_files(folder):
            return folder
    if download:
        target = Path(root).expanduser() if root is not None else _default_download_root()
        try:
            from torchvision.datasets import FashionMNIST
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise FashionMNISTNotFoundError(
                _not_found_message(searched) + "\n(download=True needs torchvision, which is not installed)"
            ) from e
        target.mkdir(parents=True, exist_ok=True)
        try:
            FashionMNIST(root=str(target), train=True, download=True)
            FashionMNIST(root=str(target), train=False, download=True)
        except Exception as e:  # pragma: no cover - network
            raise FashionMNISTNotFoundError(
                _not_found_message(searched) + f"\n(download into {target} failed: {e})"
            ) from e
        raw = target / "FashionMNIST" / "raw"
        if _has_all_files(raw):
            return raw
        searched = list(searched) + [raw]
    raise FashionMNISTNotFoundError(_not_found_message(searched))


def read_idx(path: PathLike) -> np.ndarray:
    """Parse an IDX file (gzipped or not) of unsigned bytes into a numpy uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4].hex()})")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: IDX data type 0x{dtype_code:02x} is not unsigned byte (0x08)")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) if shape else 1
    if len(data) - header != expected:
        raise ValueError(f"{path}: {len(data) - header} data bytes for shape {shape} (expected {expected})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


_cache: dict[Path, dict[str, np.ndarray]] = {}
_cache_lock = threading.Lock()


def load_fashion_mnist(root: Optional[PathLike] = None, download: bool = False) -> dict[str, np.ndarray]:
    """The four arrays (uint8): ``train_images`` (60000, 28, 28), ``train_labels`` (60000,),
    ``test_images`` (10000, 28, 28), ``test_labels`` (10000,). Parsed once per folder and process."""
    folder = find_fashion_mnist_dir(root, download).resolve()
    with _cache_lock:
        if folder not in _cache:
            arrays = {}
            for key, stem in _FILES.items():
                arr = read_idx(_file_in(folder, stem))
                arr.setflags(write=False)
                arrays[key] = arr
            for kind in ("train", "test"):
                imgs, labels = arrays[f"{kind}_images"], arrays[f"{kind}_labels"]
                if imgs.ndim != 3 or imgs.shape[1:] != (ITEM_SIZE, ITEM_SIZE) or labels.shape != imgs.shape[:1]:
                    raise ValueError(
                        f"{folder}: unexpected {kind} shapes {imgs.shape} / {labels.shape} "
                        f"(expected (n, 28, 28) / (n,))"
                    )
            _cache[folder] = arrays
        return _cache[folder]


def _split_arrays(
    split: str, root: Optional[PathLike], download: bool, val_size: int
) -> tuple[np.ndarray, np.ndarray]:
    if split not in _SPLIT_IDS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
    data = load_fashion_mnist(root, download)
    n_train = len(data["train_labels"])
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or not 0 <= val_size < n_train:
        raise ValueError(f"val_size must be an int in [0, {n_train}), got {val_size!r}")
    if split == "test":
        return data["test_images"], data["test_labels"]
    cut = n_train - int(val_size)
    if split == "train":
        return data["train_images"][:cut], data["train_labels"][:cut]
    return data["train_images"][cut:], data["train_labels"][cut:]


def _resolve_length(num_samples: Optional[int], available: int, split: str) -> int:
    if num_samples is None:
        return available
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or not (
        0 <= num_samples <= available
    ):
        raise ValueError(
            f"num_samples must be an int in [0, {available}] for split {split!r}, got {num_samples!r}"
        )
    return int(num_samples)


def _to_tensor(gray_u8: np.ndarray, normalize: bool, channels: int) -> torch.Tensor:
    x = torch.from_numpy(gray_u8.astype(np.float32) * np.float32(1.0 / 255.0))
    if normalize:
        x = (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    return x.unsqueeze(0).repeat(channels, 1, 1)


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    return int(channels)


class ClutteredFashionMNIST(Dataset):
    """Cluttered Fashion-MNIST canvases (see the module docstring).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder with the IDX files (searched first), and the download target with ``download=True``.
        canvas_size: side C of the square canvas, pixels (>= 28).
        num_clutter: number K of clutter fragments per canvas (>= 0).
        fragment_size: side of each fragment, pixels (1..28; default 9).
        seed: base seed; canvas i is a pure function of (seed, split, i, epoch).
        download: download with torchvision if the files are found nowhere.
        val_size: number of training items held out (the last ones) as the ``"val"`` split.
        num_samples: use only the first ``num_samples`` canvases of the split (clutter is still cut from
            the whole split, so canvas i does not depend on it).
        normalize: standardise with :data:`FASHION_MNIST_MEAN` / :data:`FASHION_MNIST_STD`.
        channels: number of (identical) channels of the returned image.

    ``dataset[i]`` is ``(image, label)``: float32 tensor (channels, C, C) and int.
    """

    classes = list(FASHION_MNIST_CLASSES)

    def __init__(
        self,
        split: str = "train",
        root: Optional[PathLike] = None,
        canvas_size: int = 112,
        num_clutter: int = 16,
        fragment_size: int = 9,
        seed: int = 0,
        download: bool = False,
        val_size: int = 5000,
        num_samples: Optional[int] = None,
        normalize: bool = True,
        channels: int = 3,
    ):
        if isinstance(canvas_size, bool) or not isinstance(canvas_size, (int, np.integer)) or canvas_size < ITEM_SIZE:
            raise ValueError(f"canvas_size must be an int >= {ITEM_SIZE}, got {canvas_size!r}")
        if isinstance(num_clutter, bool) or not isinstance(num_clutter, (int, np.integer)) or num_clutter < 0:
            raise ValueError(f"num_clutter must be an int >= 0, got {num_clutter!r}")
        if (
            isinstance(fragment_size, bool)
            or not isinstance(fragment_size, (int, np.integer))
            or not 1 <= fragment_size <= ITEM_SIZE
        ):
            raise ValueError(f"fragment_size must be an int in [1, {ITEM_SIZE}], got {fragment_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.split = split
        self.canvas_size = int(canvas_size)
        self.num_clutter = int(num_clutter)
        self.fragment_size = int(fragment_size)
        self.seed = int(seed)
        self.val_size = int(val_size)
        self.normalize = bool(normalize)
        self.channels = _check_channels(channels)
        self._images, self._labels = _split_arrays(split, root, download, val_size)
        self._split_id = _SPLIT_IDS[split]
        self._length = _resolve_length(num_samples, len(self._labels), split)
        self.labels = np.array(self._labels[: self._length], dtype=np.int64)
        self._epoch = 0

    # -- epochs ------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh positions and clutter (labels and item order unchanged). Training calls this once per
        epoch; evaluation keeps epoch 0 so its canvases are fixed."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._epoch = int(epoch)

    # -- generation --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def _index(self, i: int) -> int:
        return _check_index(i, self._length)

    def _draws(self, i: int) -> np.ndarray:
        """All random numbers of canvas i, in one call: item row, col, then per fragment
        (source item, crop row, crop col, canvas row, canvas col)."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._split_id, self._epoch, i]))
        C, f, K = self.canvas_size, self.fragment_size, self.num_clutter
        n_src = max(len(self._labels) - 1, 1)  # "another" item: drawn among the others
        per_fragment = [n_src, ITEM_SIZE - f + 1, ITEM_SIZE - f + 1, C - f + 1, C - f + 1]
        highs = np.array([C - ITEM_SIZE + 1, C - ITEM_SIZE + 1] + per_fragment * K, dtype=np.int64)
        return rng.integers(0, highs)

    def render(self, i: int) -> tuple[np.ndarray, int, tuple[int, int]]:
        """Canvas i as a uint8 array (C, C) in 0..255, its label and the item's top-left (row, col)."""
        i = self._index(i)
        d = self._draws(i)
        C, f = self.canvas_size, self.fragment_size
        canvas = np.zeros((C, C), dtype=np.uint8)
        images = self._images
        n = len(images)
        for j in range(self.num_clutter):
            src, cr, cc, r, c = d[2 + 5 * j : 7 + 5 * j]
            if n > 1 and src >= i:
                src += 1
            frag = images[src, cr : cr + f, cc : cc + f]
            region = canvas[r : r + f, c : c + f]
            np.maximum(region, frag, out=region)
        row, col = int(d[0]), int(d[1])
        region = canvas[row : row + ITEM_SIZE, col : col + ITEM_SIZE]
        np.maximum(region, images[i], out=region)
        return canvas, int(self._labels[i]), (row, col)

    def item_position(self, i: int) -> tuple[int, int]:
        """Top-left (row, col) of the item on canvas i (at the current epoch)."""
        d = self._draws(self._index(i))
        return int(d[0]), int(d[1])

    def item(self, i: int) -> tuple[torch.Tensor, int, tuple[int, int]]:
        """``(image, label, (row, col))``: what ``dataset[i]`` returns plus the item's top-left corner."""
        canvas, label, pos = self.render(i)
        return _to_tensor(canvas, self.normalize, self.channels), label, pos

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        canvas, label, _ = self.render(i)
        return _to_tensor(canvas, self.normalize, self.channels), label

    def clean_item(self, i: int) -> np.ndarray:
        """The bare 28x28 uint8 item drawn on canvas i."""
        return self._images[self._index(i)]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={self._length}, canvas_size={self.canvas_size}, "
            f"num_clutter={self.num_clutter}, fragment_size={self.fragment_size}, seed={self.seed}, "
            f"epoch={self._epoch})"
        )


class FashionMNISTItems(Dataset):
    """Clean 28x28 Fashion-MNIST items (same splits as :class:`ClutteredFashionMNIST`), for encoder
    pretraining. ``dataset[i]`` is ``(image, label)``: float32 tensor (channels, 28, 28) and int, normalised
    with the same constants as the canvases."""

    classes = list(FASHION_MNIST_CLASSES)

    def __init__(
        self,
        split: str = "train",
        root: Optional[PathLike] = None,
        download: bool = False,
        val_size: int = 5000,
        num_samples: Optional[int] = None,
        normalize: bool = True,
        channels: int = 3,
    ):
        self.split = split
        self.val_size = int(val_size)
        self.normalize = bool(normalize)
        self.channels = _check_channels(channels)
        self._images, self._labels = _split_arrays(split, root, download, val_size)
        self._length = _resolve_length(num_samples, len(self._labels), split)
        self.labels = np.array(self._labels[: self._length], dtype=np.int64)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = _check_index(i, self._length)
        return _to_tensor(self._images[i], self.normalize, self.channels), int(self._labels[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={self._length})"
