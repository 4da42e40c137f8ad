"""Image loading for the batched core: parallel decoding and prefetch of each slot's next image.

Decoding a JPEG costs milliseconds, as much as several env steps, so the loader (a) decodes the images of
one reset in parallel threads (PIL releases the GIL while decoding), and (b) as soon as a slot starts an
episode, draws the slot's *next* random image index and starts decoding it in the background, so the next
reset finds it ready. Draws stay in the same order per slot, so episodes are identical with or without
prefetch; re-seeding a slot drops its pending draw.
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset


class SlotImageLoader:
    """Loads (image, label) for env slots, skipping corrupt files, optionally in threads with prefetch.

    Args:
        dataset: torch Dataset of (3×S×S tensor, label).
        num_slots: N, number of env slots.
        threads: decoding threads; 0 loads synchronously in the caller (best for in-memory datasets).
    """

    def __init__(self, dataset: Dataset, num_slots: int, threads: int = 0) -> None:
        self.dataset = dataset
        self.threads = threads
        self.rngs: list[np.random.Generator] = [np.random.default_rng() for _ in range(num_slots)]
        self._pending: dict[int, tuple[int, Future]] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="gfnet-load") if threads > 0 else None
        self._lock = threading.Lock()
        self.skipped_images = 0

    # --- randomness ----------------------------------------------------------------------------------
    def set_rng(self, slot: int, rng: np.random.Generator) -> None:
        """Use ``rng`` for the slot's image draws (a new generator drops any prefetched draw)."""
        if self.rngs[slot] is not rng:
            self.rngs[slot] = rng
            self._pending.pop(slot, None)

    def _draw(self, slot: int) -> int:
        return int(self.rngs[slot].integers(len(self.dataset)))

    # --- loading -------------------------------------------------------------------------------------
    def load_one(self, index: int) -> tuple[torch.Tensor, int, int]:
        """dataset[index], moving on to the next image past corrupt files (warned and counted)."""
        from .datasets import CorruptImageError  # local: datasets imports PIL/torchvision

        n = len(self.dataset)
        tries = min(n, 1000)
        for attempt in range(tries):
            i = (index + attempt) % n
            try:
                image, label = self.dataset[i]
                return torch.as_tensor(image), int(label), i
            except CorruptImageError as e:
                with self._lock:
                    self.skipped_images += 1
                    count = self.skipped_images
                warnings.warn(f"skipping corrupt image ({count} so far): {e}", stacklevel=2)
        raise RuntimeError(f"no readable image found after {tries} tries starting at index {index}")

    def _start(self, index: int) -> Future:
        """Begin loading ``index``: in a thread, or right here when there are none."""
        if self._pool is not None:
            return self._pool.submit(self.load_one, index)
        done: Future = Future()
        done.set_result(self.load_one(index))
        return done

    def load(self, slots: np.ndarray, indices: list[int | None] | None) -> list[tuple[torch.Tensor, int, int]]:
        """Images for new episodes in ``slots``: the given index, or the slot's next random draw."""
        n = len(self.dataset)
        jobs = []
        for k, slot in enumerate(int(s) for s in slots):
            fixed = indices[k] if indices is not None else None
            if fixed is not None:
                if not 0 <= int(fixed) < n:
                    raise IndexError(f"image index {fixed} is outside the dataset (size {n})")
                jobs.append(self._start(int(fixed)))
            elif slot in self._pending:
                jobs.append(self._pending.pop(slot)[1])
            else:
                jobs.append(self._start(self._draw(slot)))
        out = [job.result() for job in jobs]
        if self._pool is not None:  # start decoding each slot's next random image now
            for slot in (int(s) for s in slots):
                if slot not in self._pending:
                    idx = self._draw(slot)
                    self._pending[slot] = (idx, self._pool.submit(self.load_one, idx))
        return out

    def close(self) -> None:
        """Stop the decoding threads and wait for them to exit (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()
