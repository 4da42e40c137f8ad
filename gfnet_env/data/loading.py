"""Image loading for the batched core: parallel decoding and prefetch of each slot's next image.

Decoding a JPEG costs milliseconds, as much as several env steps, so the loader (a) decodes the images of one reset
in parallel threads (PIL releases the GIL while decoding), the calling thread taking its share of the ones no thread
has started, and (b) where decoding has cores of its own (the networks on a GPU, or torch's threads leaving cores
free: :func:`default_loading`), draws each slot's *next* random image index as soon as the slot starts an episode
and decodes it in the background, so the next reset finds it ready. Loader threads run torch on one thread. Each
slot's next draw is made right after each load whether or not it is prefetched, so draws stay in the same order per
slot and episodes are identical with any number of threads (0 included) and with or without prefetch; re-seeding a
slot drops its pending draw.

A dataset whose ``seeded_augmentation`` is true (the train split's random crop and flip) also gets one seed per
load, drawn from the slot's generator with the index, and is decoded inside
:func:`gfnet_env.data.seeded.seeded_randomness`, so ``reset(seed=s)`` repeats its augmentation too. Every item is
checked (float tensor, or the raw uint8 tensors below, and an integer label) as it is loaded.

**Raw items, normalised in batches.** Converting every item to float32 on the host costs host time and four
times the bytes of the uint8 pixels on the way to the device. A dataset may therefore hand out raw items
through this small protocol (all of it optional; duck-typed, no base class):

* ``dataset.normalization -> (mean, std) | None``: per-channel float tuples. When not None the dataset also
  has ``dataset.uint8_item(index) -> (uint8 tensor (3, S, S), int label)``: the pixels *before* ``ToTensor`` +
  ``Normalize``. The loader then stacks uint8 items and :meth:`SlotImageLoader.load_batch` normalises the
  batch on the env's device in one op, ``(x / 255 − mean) / std`` in float32
  (:func:`gfnet_env.data.decoding.normalize_uint8`, the same operations as ``ToTensor`` + ``Normalize``: on the CPU
  bit-identical to the per-item float path). ``PreparedDataset`` and ``ImageFolderDataset`` (with a
  transform ending in ``ToTensor(), Normalize``) implement it.
* ``dataset.jpeg_geometry -> (R, S, interpolation) | None`` and ``dataset.encoded_item(index) -> (uint8 1-D tensor
  of the file's bytes, int label)``: with the env's ``jpeg_decoder="torchvision"`` and the env on a GPU the loader
  threads only read the files; :meth:`SlotImageLoader.load_batch` decodes the whole batch with
  ``torchvision.io.decode_jpeg`` on the GPU (nvJPEG), resizes the shorter side to R and centre-crops S × S there,
  and normalises. With the env on the CPU a batch decode would run serially at reset, so there the loader threads
  decode each file with the same functions as they load it (prefetched like PIL's path). Files the decoder rejects
  (CMYK, grayscale on some decoders, a PNG named .jpg, corrupt) go through ``uint8_item`` (PIL), skipping corrupt
  files as every other path does; :attr:`SlotImageLoader.fallbacks` counts them. ``ImageFolderDataset`` with the
  evaluation transform implements it.

Which kind of item the loader asks for is fixed when it is built (:func:`item_kind`): ``"encoded"`` for
``jpeg_decoder="torchvision"`` and a dataset with a ``jpeg_geometry``, else ``"uint8"`` when the dataset has a
``normalization``, else ``"float"`` (``dataset[i]``, as any torch Dataset).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import check_int, check_sample
from .decoding import decode_jpegs, decode_resize_crop, normalize_uint8, resize_crop
from .seeded import seeded_randomness
from ..settings import JPEG_DECODERS


def default_decode_threads(cpus: int | None = None, torch_threads: int | None = None, cap: int = 8) -> int:
    """Decoding threads that leave torch its own: the cores left after ``torch.get_num_threads()``, at least 1,
    at most ``cap``. 2 cores with torch's 2 threads → 1; 16 cores with 8 torch threads → 8.

    With the networks on a GPU the host's torch threads are mostly idle, so all cores but one may decode; pass
    ``torch_threads=1`` there."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    torch_threads = torch_threads if torch_threads is not None else torch.get_num_threads()
    return max(1, min(cap, cpus - torch_threads))


def default_loading(device_type: str = "cpu", cpus: int | None = None, torch_threads: int | None = None,
                    cap: int = 8) -> tuple[int, bool]:
    """(decoding threads, prefetch) for a dataset that decodes files, by where the networks run.

    Prefetching decodes the next images while the networks step the current ones; it pays when decoding has cores
    of its own: the networks on a GPU (their host threads mostly wait), or torch's CPU threads leaving cores free
    (:func:`default_decode_threads` threads then). When torch's threads fill every core, as they do by default, a
    decoding thread beside them slows the networks by more than the time it saves (benchmarks/RESULTS.md); then
    each reset decodes its images when it starts, in
    ``cpus − 1`` threads (at least 1, at most ``cap``) and the caller, with every core.
    """
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if device_type != "cpu":
        return default_decode_threads(cpus, torch_threads=1, cap=cap), True
    torch_threads = torch_threads if torch_threads is not None else torch.get_num_threads()
    if cpus > torch_threads:
        return default_decode_threads(cpus, torch_threads, cap), True
    return max(1, min(cap, cpus - 1)), False


@contextmanager
def torch_on_one_thread() -> Iterator[None]:
    """Within the block, torch ops of the calling thread run on that thread alone.

    For loader threads: a multi-threaded torch op there (a tensor resize, a user dataset's transform) gives the
    thread its own OpenMP team, whose threads compete with the networks' in the same process and slow them
    (benchmarks/RESULTS.md). The count is restored on exit, every time: ``torch.set_num_threads`` also sets the
    default that threads started later take, which must stay the caller's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


#: What the loader asks a dataset for: ``dataset[i]``, ``uint8_item(i)`` or ``encoded_item(i)``.
ITEM_KINDS = ("float", "uint8", "encoded")


def item_kind(dataset: Dataset, jpeg_decoder: str = "pil") -> str:
    """The kind of item the loader takes from ``dataset`` (see the module docstring).

    Raises:
        ValueError: an unknown ``jpeg_decoder``, or ``"torchvision"`` for a dataset that decodes files but not
            with the evaluation transform (the train split's random crop, a custom dataset).
    """
    if jpeg_decoder not in JPEG_DECODERS:
        raise ValueError(f"unknown jpeg_decoder {jpeg_decoder!r}; choose 'pil' (PIL in the loader threads) or "
                         "'torchvision' (batched torchvision.io.decode_jpeg on the env's device)")
    uint8 = getattr(dataset, "normalization", None) is not None
    if jpeg_decoder == "torchvision":
        if uint8 and getattr(dataset, "jpeg_geometry", None) is not None:
            return "encoded"
        if getattr(dataset, "decodes_files", False):
            tf = getattr(dataset, "transform", None)
            steps = " → ".join(type(t).__name__ for t in getattr(tf, "transforms", [tf]))
            raise ValueError(
                f"jpeg_decoder='torchvision' decodes ImageFolder JPEGs under the evaluation transform (Resize → "
                f"CenterCrop → ToTensor → Normalize) only; this {type(dataset).__name__} has {steps} (the train "
                "split's random crop runs in PIL): pass jpeg_decoder='pil'")
    return "uint8" if uint8 else "float"


class SlotImageLoader:
    """Loads (image, label) for env slots, skipping corrupt files, optionally in threads with prefetch.

    Args:
        dataset: torch Dataset of (3×S×S float tensor, int label).
        num_slots: N, number of env slots.
        threads: decoding threads; 0 loads synchronously in the caller (best for in-memory datasets).
        image_size: S, when every image must be (3, S, S) (checked per item).
        jpeg_decoder: ``"pil"`` or ``"torchvision"`` (:func:`item_kind`).
        device: where :meth:`load_batch` will put the batches, when known. With encoded items (``"torchvision"``)
            and a CPU device each file is decoded in the loader threads as it is loaded (prefetched); otherwise
            a reset's files are decoded together in :meth:`load_batch` on the device.
        prefetch: with threads, start decoding each slot's next image as soon as it is drawn (see
            :func:`default_loading` for when that pays); without, a reset decodes its images then, in the threads
            and the caller together.
    """

    def __init__(self, dataset: Dataset, num_slots: int, threads: int = 0, image_size: int | None = None,
                 jpeg_decoder: str = "pil", device: torch.device | str | None = None, prefetch: bool = True) -> None:
        self.dataset = dataset
        self.image_size = image_size
        self.threads = threads
        self.prefetch = prefetch
        self.kind = item_kind(dataset, jpeg_decoder)
        #: encoded files are decoded as they are loaded (on the CPU), not in one batch by load_batch
        self.decodes_items = self.kind == "encoded" and device is not None and torch.device(device).type == "cpu"
        self._normalization = getattr(dataset, "normalization", None)
        self.fallbacks = 0  #: files torchvision's decoder rejected, decoded by PIL instead (kind "encoded")
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_slots)]
        self._seeded = bool(getattr(dataset, "seeded_augmentation", False))
        self._next: dict[int, tuple[int, int | None]] = {}  # slot -> its next random (index, seed), drawn early
        self._pending: dict[int, Future] = {}  # slot -> the decoding of _next[slot] (with threads only)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="gfnet-load") if threads > 0 else None
        self._lock = threading.Lock()
        self.skipped_images = 0

    # --- randomness ----------------------------------------------------------------------------------
    def set_rng(self, slot: int, rng: np.random.Generator) -> None:
        """Use ``rng`` for the slot's image draws (a new generator drops any prefetched draw)."""
        if self.rngs[slot] is not rng:
            self.rngs[slot] = rng
            self._next.pop(slot, None)
            self._pending.pop(slot, None)

    def _seed(self, slot: int) -> int | None:
        """A seed for one load's random augmentation (None when the dataset has none)."""
        return int(self.rngs[slot].integers(2**63)) if self._seeded else None

    def _draw(self, slot: int) -> tuple[int, int | None]:
        index = int(self.rngs[slot].integers(len(self.dataset)))
        return index, self._seed(slot)

    # --- loading -------------------------------------------------------------------------------------
    def load_one(self, index: int, seed: int | None = None, kind: str | None = None) -> tuple[torch.Tensor, int, int]:
        """Item ``index`` of the loader's kind (or ``kind``; its augmentation seeded with ``seed``), checked,
        moving on to the next image past corrupt files (warned and counted).

        Returns:
            (image, label, index used): a float (3, S, S), uint8 (3, S, S) or uint8 (bytes,) tensor by kind
            (encoded files come back decoded, uint8 (3, S, S), when :attr:`decodes_items`).

        Raises:
            ValueError: the item is not (float tensor, integer label) (:func:`gfnet_env.checks.check_sample`), or
                not (uint8 tensor of the right shape, integer label) for raw kinds.
        """
        kind = kind or self.kind
        decode = kind == "encoded" and self.decodes_items
        returned = "uint8" if decode else kind  # what the item is once loaded
        from .image_folder import CorruptImageError  # local: datasets imports PIL/torchvision

        n = len(self.dataset)
        tries = min(n, 1000)
        for attempt in range(tries):
            i = (index + attempt) % n
            try:
                with seeded_randomness(seed):
                    if decode:
                        sample = self._decoded_item(i)
                    else:
                        sample = (self.dataset[i] if kind == "float" else self.dataset.uint8_item(i)
                                  if kind == "uint8" else self.dataset.encoded_item(i))
            except CorruptImageError as e:
                with self._lock:
                    self.skipped_images += 1
                    count = self.skipped_images
                warnings.warn(f"skipping corrupt image ({count} so far): {e}", stacklevel=2)
                continue
            if not isinstance(sample, (tuple, list)) or len(sample) != 2:
                raise ValueError(f"dataset[{i}] is a {type(sample).__name__}, not an (image, label) pair")
            if returned != "float":
                return (*_check_raw(sample, returned, f"dataset.{kind}_item({i})", self.image_size), i)
            image = torch.as_tensor(sample[0]) if isinstance(sample[0], np.ndarray) else sample[0]
            image, label = check_sample(image, sample[1], f"dataset[{i}]", self.image_size, finite=False)
            return image, label, i
        raise RuntimeError(f"no readable image found after {tries} tries starting at index {index}")

    def _decoded_item(self, index: int) -> tuple[torch.Tensor, int]:
        """(uint8 (3, S, S), label) of a file decoded on the CPU as :meth:`_decode` does it for a batch, PIL
        (``uint8_item``) where torchvision's decoder rejects the file."""
        data, label = self.dataset.encoded_item(index)
        pixels = decode_resize_crop(data, *self.dataset.jpeg_geometry)
        if pixels is None:
            with self._lock:
                self.fallbacks += 1
            return self.dataset.uint8_item(index)
        return pixels, label

    def _load_in_thread(self, index: int, seed: int | None) -> tuple[torch.Tensor, int, int]:
        """:meth:`load_one` in a loader thread, torch on that thread alone (:func:`torch_on_one_thread`)."""
        with torch_on_one_thread():
            return self.load_one(index, seed)

    def _start(self, index: int, seed: int | None) -> Future:
        """Begin loading ``index``: in a thread, or right here when there are none."""
        if self._pool is not None:
            return self._pool.submit(self._load_in_thread, index, seed)
        done: Future = Future()
        try:
            done.set_result(self.load_one(index, seed))
        except Exception as e:  # raised by result(), as a thread's error would be
            done.set_exception(e)
        return done

    def load(self, slots: np.ndarray, indices: list[int | None] | None) -> list[tuple[torch.Tensor, int, int]]:
        """Images for new episodes in ``slots``: the given index, or the slot's next random draw.

        Raises:
            TypeError, IndexError: a given index is not an integer (1.7, "3", True) or is outside the dataset.
        """
        n = len(self.dataset)
        jobs: list[tuple[Future, tuple[int, int | None]]] = []  # (the loading, its (index, seed))
        for k, slot in enumerate(int(s) for s in slots):
            fixed = indices[k] if indices is not None else None
            if fixed is not None:
                try:
                    fixed = check_int(fixed, "image index", hint=" (options 'index'/'indices' take dataset positions)")
                except ValueError as e:
                    raise IndexError(str(e)) from None
                if not 0 <= fixed < n:
                    raise IndexError(f"image index {fixed} is outside the dataset (size {n}): use 0..{n - 1}")
                job = (fixed, self._seed(slot))
                jobs.append((self._start(*job), job))
            elif slot in self._pending:
                jobs.append((self._pending.pop(slot), self._next.pop(slot)))
            else:
                job = self._next.pop(slot, None) or self._draw(slot)
                jobs.append((self._start(*job), job))
        for slot in (int(s) for s in slots):  # each slot's next random draw, now (and its decoding, when prefetching)
            if slot not in self._next:
                self._next[slot] = self._draw(slot)
                if self._pool is not None and self.prefetch:
                    self._pending[slot] = self._pool.submit(self._load_in_thread, *self._next[slot])
        # the loadings no thread has started yet run here, in order, while the threads take the others: the caller
        # would otherwise wait idle for them
        loaded: list[tuple[torch.Tensor, int, int] | None] = [
            self.load_one(*job) if future.cancel() else None for future, job in jobs]
        return [done if done is not None else future.result() for done, (future, _job) in zip(loaded, jobs)]

    def load_batch(self, slots: np.ndarray, indices: list[int | None] | None,
                   device: torch.device) -> tuple[torch.Tensor, list[int], list[int]]:
        """:meth:`load`, then the batch as float32 (B, 3, S, S) on ``device``: float items stacked on the host
        and copied; uint8 items stacked, copied (4× fewer bytes) and normalised there in one op; encoded files
        decoded there as one batch (module docstring).

        Returns:
            (images, labels, dataset indices used) — an index differs from the one drawn when a corrupt file was
            skipped.
        """
        loaded = self.load(slots, indices)
        labels, used = [y for _, y, _ in loaded], [i for _, _, i in loaded]
        if self.kind == "encoded" and not self.decodes_items:
            pixels = self._decode([x for x, _, _ in loaded], labels, used, device)
        else:
            pixels = _to_device(torch.stack([x for x, _, _ in loaded]), device)
        if self.kind == "float":
            return pixels.float(), labels, used
        return normalize_uint8(pixels, *self._normalization), labels, used

    def _decode(self, data: list[torch.Tensor], labels: list[int], used: list[int],
                device: torch.device) -> torch.Tensor:
        """Encoded files → uint8 (B, 3, S, S) on ``device``: one batched decode, then per image (their sizes
        differ) the resize and centre crop there. Rejected files go through PIL (``uint8_item``) and may move on
        past a corrupt file, so ``labels`` and ``used`` are updated in place."""
        resize, crop, interpolation = self.dataset.jpeg_geometry
        out = []
        for k, image in enumerate(decode_jpegs(data, device)):
            if image is None:
                with self._lock:
                    self.fallbacks += 1
                pixels, labels[k], used[k] = self.load_one(used[k], kind="uint8")
                out.append(pixels.to(device))
            else:
                out.append(resize_crop(image, resize, crop, interpolation))
        return torch.stack(out)

    def close(self) -> None:
        """Stop the decoding threads and wait for them to exit (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self._next.clear()


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The host batch on ``device`` (through pinned memory to a GPU, so the copy is asynchronous)."""
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def _check_raw(sample, kind: str, where: str, image_size: int | None) -> tuple[torch.Tensor, int]:
    """Check a raw item: uint8 (3, S, S) pixels (kind ``"uint8"``) or uint8 (bytes,) (``"encoded"``), int label."""
    image, label = sample
    want = "(bytes,)" if kind == "encoded" else f"(3, {image_size or 'S'}, {image_size or 'S'})"
    ok = isinstance(image, torch.Tensor) and image.dtype == torch.uint8
    if ok and kind == "encoded":
        ok = image.dim() == 1
    elif ok:
        ok = image.dim() == 3 and image.shape[0] == 3 and (image_size is None
                                                            or tuple(image.shape[1:]) == (image_size, image_size))
    if not ok:
        found = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{where}[0] is {found}; the raw item protocol (gfnet_env/data/loading.py) needs a uint8 tensor "
                         f"{want}" + (" (resize/crop it to the checkpoint's image size)" if kind == "uint8" else ""))
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise ValueError(f"{where}[1] (the label) is {label!r:.40} ({type(label).__name__}); labels must be integer "
                         "class indices")
    return image, int(label)
