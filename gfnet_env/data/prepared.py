"""The prepared evaluation cache: a split after its deterministic evaluation transform, as uint8 on disk.

Decoding and resizing an ImageNet JPEG costs milliseconds per image; the evaluation transform
(Resize → CenterCrop → ToTensor → Normalize) has no randomness, so its pixels can be computed once.
:func:`prepare_split` runs the transform's steps *before* ``ToTensor`` (the PIL image after Resize and
CenterCrop) and stores the uint8 pixels:

* ``PATH`` (``.npy``): uint8 array (N, 3, S, S), written through :func:`numpy.lib.format.open_memmap` to a
  temporary name and renamed when complete (a crash never leaves a half-written cache under the real name);
  50,000 × 3 × 224² bytes = 7.5 GB, read back memory-mapped (pages on demand, never loaded whole). The
  temporary file's blocks are reserved up front (``os.posix_fallocate``), so a disk too small for it is an
  ``OSError`` (ENOSPC) naming the size and the free space before any image is decoded, never a ``SIGBUS`` in
  the middle of writing the memory map. It is named after the writer (``PATH.tmp.<host>.<pid>.npy``); a
  writer first removes those left by writers of this host that are gone (``kill -9``, a crash), and holds
  ``PATH.lock`` (:mod:`feature_nets.folders`) while it writes, so two ``prepare-data`` runs never write one
  cache.
* ``PATH.json``: labels, classes, the indices of images that could not be decoded, and the fingerprint —
  the source file list with sizes and modification times, the transform and the image size.

:class:`PreparedDataset` reads it back: ``dataset[i]`` applies ``ToTensor`` + ``Normalize`` to the stored
pixels with the same float32 operations torchvision uses (uint8 → float32 / 255, then ``(x − mean) / std``),
so an item is bit-identical to ``ImageFolderDataset(root, eval_transform(config))[i]``.

:func:`open_prepared` finds the cache of an ImageFolder split (``<root>.gfnet-prepared.npy`` next to the
split folder, i.e. ``data_root/val.gfnet-prepared.npy``, or an explicit path) and refuses a stale one
(:class:`StalePreparedError`, naming what changed); a missing default cache is not an error.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from feature_nets.folders import FolderLock, pid_alive

from .image_folder import CorruptImageError, ImageFolderDataset
from .decoding import normalize_uint8, split_normalize

__all__ = ["PreparedDataset", "StalePreparedError", "default_prepared_path", "fingerprint", "open_prepared",
           "pixel_steps", "prepare_split", "remove_dead_temporaries"]

#: Bumped when the file format changes (an older cache is then stale).
FORMAT_VERSION = 1
SUFFIX = ".gfnet-prepared.npy"


class StalePreparedError(ValueError):
    """The prepared cache does not match the images or the transform it claims to hold."""


def default_prepared_path(dataset: ImageFolderDataset) -> Path:
    """``<split folder>.gfnet-prepared.npy`` beside the split folder (``data_root/val`` →
    ``data_root/val.gfnet-prepared.npy``)."""
    return dataset.root.parent / (dataset.root.name + SUFFIX)


def pixel_steps(transform: Any) -> tuple[Callable, tuple[float, ...], tuple[float, ...]]:
    """Split an evaluation transform ``Compose([..., ToTensor(), Normalize(mean, std)])`` into its PIL steps
    (a callable PIL → PIL) and the normalisation constants.

    Raises:
        ValueError: the transform is not of that form, or has random steps (no cache can be exact then).
    """
    split = split_normalize(transform)
    if split is None:
        raise ValueError("a prepared cache needs a transform Compose([..., ToTensor(), Normalize(...)]); "
                         f"got {transform!r}")
    head, mean, std = split
    allowed = (transforms.Resize, transforms.CenterCrop)
    odd = [s for s in head.transforms if not isinstance(s, allowed)]
    if odd:
        raise ValueError(f"a prepared cache holds deterministic pixels only (Resize, CenterCrop); the transform has "
                         f"{odd!r} (is this the train split?)")
    return head, mean, std


def fingerprint(dataset: ImageFolderDataset, image_size: int) -> dict:
    """What the cache must match: each source file (path relative to the root, size in bytes, mtime in ns), the
    class names, the transform (its repr) and the image size S."""
    files = []
    for path, _label in dataset.samples:
        st = os.stat(path)
        files.append([os.path.relpath(path, dataset.root), int(st.st_size), int(st.st_mtime_ns)])
    return {"format": FORMAT_VERSION, "image_size": int(image_size), "transform": repr(dataset.transform),
            "classes": list(dataset.classes), "files": files}


def _pixels(dataset: ImageFolderDataset, steps: Callable, index: int, size: int) -> np.ndarray | None:
    """uint8 (3, S, S) pixels of one image after the PIL steps, or None when it cannot be decoded."""
    try:
        img = steps(dataset.load_image(index))
    except CorruptImageError:
        return None
    arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"{dataset.samples[index][0]}: the transform gave {arr.shape}, expected ({size}, {size}, 3)")
    return arr.transpose(2, 0, 1)


def prepare_split(dataset: ImageFolderDataset, out: str | os.PathLike | None = None, threads: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the prepared cache of an ImageFolder split (its transform must be an evaluation transform).

    Args:
        dataset: the split, with ``eval_transform(config)`` as its transform.
        out: the ``.npy`` path (default :func:`default_prepared_path`); the sidecar is ``out + ".json"``.
        threads: decoding threads (default: the CPU count).
        progress: called as ``progress(done, total)`` every 1,000 images.

    Returns:
        the path written. Corrupt images are recorded (their pixels stay zero) and raise
        :class:`CorruptImageError` when read back, as the JPEG would.
    """
    steps, mean, std = pixel_steps(dataset.transform)
    size = next(s.size for s in reversed(steps.transforms) if isinstance(s, transforms.CenterCrop))
    size = int(size[0]) if isinstance(size, (tuple, list)) else int(size)
    out = Path(out) if out is not None else default_prepared_path(dataset)
    if not str(out).endswith(".npy"):
        raise ValueError(f"the prepared cache must be a .npy file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(out.with_name(out.name + ".lock"), "prepare-data", f"--out {out}"):
        remove_dead_temporaries(out)
        return _write_cache(dataset, out, steps, mean, std, size, threads, progress)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temporaries(out: Path) -> list[tuple[Path, str | None, int]]:
    """(file, host tag or None for the older ``PATH.tmp<pid>.npy`` names, pid) of every temporary file of ``out``."""
    pattern = re.compile(re.escape(out.name) + r"\.tmp(?:\.([A-Za-z0-9_-]+)\.|)(\d+)\.npy(?:\.json)?")
    found = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return []
    for path in entries:
        m = pattern.fullmatch(path.name)
        if m:
            found.append((path, m.group(1), int(m.group(2))))
    return found


def remove_dead_temporaries(out: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of the cache ``out`` whose writer, a process of this host, is gone (killed while
    writing: a full-size ``.npy`` that nothing else removes); returns them. Those of live processes and of other
    hosts are left alone."""
    out = Path(out)
    removed = []
    for path, host, pid in _temporaries(out):
        if host not in (None, _host_tag()):
            continue
        if pid != os.getpid() and pid_alive(pid):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def _preallocate(path: Path, out: Path) -> None:
    """Reserve the blocks of the memory-mapped file ``path`` now, so that a full disk is an ``OSError`` here and
    not a ``SIGBUS`` when a page of the map is written."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        allocate(fd, 0, size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # this file system cannot reserve blocks: written as before
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            try:
                free = f"{shutil.disk_usage(path.parent).free / 1e9:.2f} GB free"
            except OSError:
                free = "free space unknown"
            raise OSError(e.errno, f"no space left on device for the prepared cache {out}: it needs "
                                   f"{size / 1e9:.2f} GB ({size} bytes) in {out.parent}, {free} ({e.strerror}); free "
                                   "some space or write it elsewhere with --out") from None
        raise
    finally:
        os.close(fd)


def _write_cache(dataset: ImageFolderDataset, out: Path, steps, mean, std, size: int, threads: int | None,
                 progress: Callable[[int, int], None] | None) -> Path:
    meta = fingerprint(dataset, size)
    tmp = out.with_name(out.name + f".tmp.{_host_tag()}.{os.getpid()}.npy")
    n = len(dataset)
    arr = None
    corrupt: list[int] = []
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        _preallocate(tmp, out)
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            for start in range(0, n, 1000):
                idx = range(start, min(n, start + 1000))
                for i, px in zip(idx, pool.map(lambda i: _pixels(dataset, steps, i, size), idx)):
                    if px is None:
                        corrupt.append(i)
                    else:
                        arr[i] = px
                if progress is not None:
                    progress(idx[-1] + 1, n)
        arr.flush()
        arr = None  # unmapped before the rename
        meta.update(labels=[int(y) for y in dataset.targets], corrupt=corrupt, mean=list(mean), std=list(std),
                    shape=[n, 3, size, size])
        side_tmp = Path(str(tmp) + ".json")
        side_tmp.write_text(json.dumps(meta))
        os.replace(tmp, out)
        os.replace(side_tmp, Path(str(out) + ".json"))
    finally:
        arr = None
        for leftover in (tmp, Path(str(tmp) + ".json")):
            if leftover.exists():
                leftover.unlink()
    return out


def _compare(meta: dict, now: dict, path: Path) -> None:
    """Raise :class:`StalePreparedError` naming the first difference between a cache's fingerprint and now."""
    redo = f"; rebuild it with `gfnet prepare-data` or delete {path}"
    for key in ("format", "image_size", "transform", "classes"):
        if meta.get(key) != now[key]:
            raise StalePreparedError(f"prepared cache {path} is stale: its {key} is {meta.get(key)!r:.200}, the "
                                     f"dataset's is {now[key]!r:.200}{redo}")
    old = {f[0]: tuple(f[1:]) for f in meta.get("files", [])}
    new = {f[0]: tuple(f[1:]) for f in now["files"]}
    if old != new:
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
                 (("added", added), ("removed", removed), ("changed (size or mtime)", changed)) if v]
        raise StalePreparedError(f"prepared cache {path} is stale: the image files changed since it was written: "
                                 + ", ".join(parts) + redo)


class PreparedDataset(Dataset):
    """A split read from its prepared cache: ``dataset[i]`` = (float32 (3, S, S) normalised image, int label).

    The pixels stay memory-mapped; each item is converted as ``ToTensor`` + ``Normalize`` would (float32
    ``x / 255``, then ``(x − mean) / std`` per channel). The env takes the uint8 pixels instead
    (:meth:`uint8_item`) and normalises a whole reset at once on its device, with the same operations. Attributes as :class:`ImageFolderDataset`: ``root``,
    ``classes``, ``targets``, ``mean``, ``std``, and ``path`` (the ``.npy``).
    """

    #: Reads are page-cache copies, not decodes: the env loads them in the caller (no threads).
    decodes_files = False
    seeded_augmentation = False

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, root: Path | None = None) -> None:
        self.path = Path(path)
        self.meta = meta if meta is not None else json.loads(Path(str(self.path) + ".json").read_text())
        self.pixels = np.load(self.path, mmap_mode="r")
        if list(self.pixels.shape) != list(self.meta["shape"]) or self.pixels.dtype != np.uint8:
            raise StalePreparedError(f"prepared cache {self.path} holds {self.pixels.dtype} {self.pixels.shape}, its "
                                     f"sidecar says uint8 {tuple(self.meta['shape'])}; rebuild it")
        self.root = root
        self.classes = list(self.meta["classes"])
        self.targets = list(self.meta["labels"])
        self.mean = tuple(self.meta["mean"])
        self.std = tuple(self.meta["std"])
        self._corrupt = set(self.meta.get("corrupt", []))
        self._files = [f[0] for f in self.meta["files"]]

    def __getstate__(self) -> dict:  # pickled (DataLoader workers): reopen the map, never copy the pixels
        return {k: v for k, v in self.__dict__.items() if k != "pixels"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.pixels = np.load(self.path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.targets)

    def raw(self, index: int) -> torch.Tensor:
        """The stored uint8 pixels (3, S, S) of item ``index`` (a copy out of the memory map)."""
        if index in self._corrupt:
            raise CorruptImageError.for_file(self._files[index], "recorded as undecodable when the cache was prepared")
        return torch.from_numpy(np.array(self.pixels[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return normalize_uint8(self.raw(index), self.mean, self.std), self.targets[index]  # ToTensor + Normalize

    # --- the env's uint8 item protocol (gfnet_env/data/loading.py): the env stacks the raw pixels and normalises the
    # batch on its device in one op, instead of converting every item to float on the host
    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel, applied to ``uint8_item`` pixels as ``(x / 255 − mean) / std``."""
        return self.mean, self.std

    def uint8_item(self, index: int) -> tuple[torch.Tensor, int]:
        """(uint8 (3, S, S) stored pixels, label) of item ``index`` (:class:`CorruptImageError` if recorded so)."""
        return self.raw(index), self.targets[index]

    @property
    def source(self) -> str:
        """Where the images are read from (reported by the benchmark)."""
        return f"prepared cache {self.path}"

    def __repr__(self) -> str:
        return f"PreparedDataset(path={str(self.path)!r}, samples={len(self)}, image_size={self.pixels.shape[-1]})"


def open_prepared(dataset: ImageFolderDataset, path: str | os.PathLike | None = None,
                  image_size: int | None = None) -> PreparedDataset | None:
    """The prepared cache of ``dataset`` checked against its files and transform, or None when the default
    cache does not exist (an explicit ``path`` must exist).

    Raises:
        StalePreparedError: the cache was written for other files (added, removed, resized or touched), another
            transform or image size; the message says which and how to rebuild.
        FileNotFoundError: an explicit ``path`` is missing.
    """
    explicit = path is not None
    path = Path(path) if explicit else default_prepared_path(dataset)
    side = Path(str(path) + ".json")
    if not path.exists() or not side.exists():
        if explicit:
            raise FileNotFoundError(f"prepared cache {path} (or its sidecar {side.name}) does not exist; write it "
                                    "with `gfnet prepare-data`")
        return None
    meta = json.loads(side.read_text())
    size = image_size if image_size is not None else int(meta.get("image_size", -1))
    _compare(meta, fingerprint(dataset, size), path)
    return PreparedDataset(path, meta, root=dataset.root)
