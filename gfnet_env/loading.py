"""Image loading for the batched core: parallel decoding and prefetch of each slot's next image.

Decoding a JPEG costs milliseconds, as much as several env steps, so the loader (a) decodes the images of
one reset in parallel threads (PIL releases the GIL while decoding), and (b) as soon as a slot starts an
episode, draws the slot's *next* random image index and starts decoding it in the background, so the next
reset finds it ready. Each slot's next draw is made right after each load whether or not it is prefetched, so
draws stay in the same order per slot and episodes are identical with any number of threads (0 included);
re-seeding a slot drops its pending draw.

A dataset whose ``seeded_augmentation`` is true (the train split's random crop and flip) also gets one seed per
load, drawn from the slot's generator with the index, and is decoded inside
:func:`gfnet_env.seeded.seeded_randomness`, so ``reset(seed=s)`` repeats its augmentation too. Every item is
checked (float tensor, integer label) as it is loaded.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from .checks import check_int, check_sample
from .seeded import seeded_randomness


def default_decode_threads(cpus: int | None = None, torch_threads: int | None = None, cap: int = 8) -> int:
    """Decoding threads that leave torch its own: the cores left after ``torch.get_num_threads()``, at least 1,
    at most ``cap``. 2 cores with torch's 2 threads → 1; 16 cores with 8 torch threads → 8.

    With the networks on a GPU the host's torch threads are mostly idle, so all cores but one may decode; pass
    ``torch_threads=1`` there."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    torch_threads = torch_threads if torch_threads is not None else torch.get_num_threads()
    return max(1, min(cap, cpus - torch_threads))


class SlotImageLoader:
    """Loads (image, label) for env slots, skipping corrupt files, optionally in threads with prefetch.

    Args:
        dataset: torch Dataset of (3×S×S float tensor, int label).
        num_slots: N, number of env slots.
        threads: decoding threads; 0 loads synchronously in the caller (best for in-memory datasets).
        image_size: S, when every image must be (3, S, S) (checked per item).
    """

    def __init__(self, dataset: Dataset, num_slots: int, threads: int = 0, image_size: int | None = None) -> None:
        self.dataset = dataset
        self.image_size = image_size
        self.threads = threads
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
    def load_one(self, index: int, seed: int | None = None) -> tuple[torch.Tensor, int, int]:
        """dataset[index] (its augmentation seeded with ``seed``), checked, moving on to the next image past
        corrupt files (warned and counted).

        Raises:
            ValueError: the item is not (float tensor, integer label) (:func:`gfnet_env.checks.check_sample`).
        """
        from .datasets import CorruptImageError  # local: datasets imports PIL/torchvision

        n = len(self.dataset)
        tries = min(n, 1000)
        for attempt in range(tries):
            i = (index + attempt) % n
            try:
                with seeded_randomness(seed):
                    sample = self.dataset[i]
            except CorruptImageError as e:
                with self._lock:
                    self.skipped_images += 1
                    count = self.skipped_images
                warnings.warn(f"skipping corrupt image ({count} so far): {e}", stacklevel=2)
                continue
            if not isinstance(sample, (tuple, list)) or len(sample) != 2:
                raise ValueError(f"dataset[{i}] is a {type(sample).__name__}, not an (image, label) pair")
            image = torch.as_tensor(sample[0]) if isinstance(sample[0], np.ndarray) else sample[0]
            image, label = check_sample(image, sample[1], f"dataset[{i}]", self.image_size, finite=False)
            return image, label, i
        raise RuntimeError(f"no readable image found after {tries} tries starting at index {index}")

    def _start(self, index: int, seed: int | None) -> Future:
        """Begin loading ``index``: in a thread, or right here when there are none."""
        if self._pool is not None:
            return self._pool.submit(self.load_one, index, seed)
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
        jobs = []
        for k, slot in enumerate(int(s) for s in slots):
            fixed = indices[k] if indices is not None else None
            if fixed is not None:
                try:
                    fixed = check_int(fixed, "image index", hint=" (options 'index'/'indices' take dataset positions)")
                except ValueError as e:
                    raise IndexError(str(e)) from None
                if not 0 <= fixed < n:
                    raise IndexError(f"image index {fixed} is outside the dataset (size {n}): use 0..{n - 1}")
                jobs.append(self._start(fixed, self._seed(slot)))
            elif slot in self._pending:
                self._next.pop(slot, None)
                jobs.append(self._pending.pop(slot))
            else:
                jobs.append(self._start(*(self._next.pop(slot, None) or self._draw(slot))))
        for slot in (int(s) for s in slots):  # each slot's next random draw, now (and its decoding, with threads)
            if slot not in self._next:
                self._next[slot] = self._draw(slot)
                if self._pool is not None:
                    self._pending[slot] = self._pool.submit(self.load_one, *self._next[slot])
        return [job.result() for job in jobs]

    def close(self) -> None:
        """Stop the decoding threads and wait for them to exit (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
        self._next.clear()
