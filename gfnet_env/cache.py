"""Feature cache for grid actions: the encoders are frozen, so a cell's features never change.

With ``action_mode="grid"`` an image has only G² possible patches. :class:`GridFeatureCache` runs the local
encoder on all of them once (as one batch per image set) and keeps the pooled vectors and feature maps, so a
later step on the same image — in this episode, a later one, or another agent's — costs a lookup plus one
classifier step. The in-memory store is an LRU over image indices; :meth:`GridFeatureCache.save` /
:meth:`GridFeatureCache.load` keep a fixed evaluation set on disk, guarded by a fingerprint of checkpoint
weights, dataset and grid so that a stale file is never used.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from feature_nets.crop import crop_corners, crop_patches
from feature_nets.files import atomic_save
from feature_nets.trust import load_torch_file


class StaleCacheError(RuntimeError):
    """An on-disk cache was made for other weights, data or grid."""


def model_fingerprint(model) -> str:
    """Hash of the local encoder's weights and the patch geometry (what cell features depend on)."""
    h = hashlib.sha256()
    h.update(f"{model.patch_size}/{model.image_size}".encode())
    for k, v in sorted(model.local_encoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(dataset, n: int = 8) -> str:
    """Hash of the dataset's length and a few of its images (cheap; catches a different set or transform)."""
    h = hashlib.sha256(str(len(dataset)).encode())
    for i in np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int):
        img, label = dataset[int(i)]
        h.update(torch.as_tensor(img).float().numpy().tobytes())
        h.update(str(int(label)).encode())
    return h.hexdigest()[:16]


class GridFeatureCache:
    """Local-encoder outputs of every grid cell, per image index.

    Args:
        max_images: images kept in memory (least recently used are dropped). One image costs
            G²·(F + C·h·w)·4 bytes (about 0.4 MB for the embedded task's 7×7 grid).
        chunk: patches per encoder batch when filling.
    """

    def __init__(self, max_images: int = 4096, chunk: int = 1024) -> None:
        self.max_images = max_images
        self.chunk = chunk
        #: image index -> row of the preallocated pools (LRU order).
        self._rows: OrderedDict[int, int] = OrderedDict()
        self._pooled: torch.Tensor | None = None   # (max_images, G², F)
        self._fmaps: torch.Tensor | None = None    # (max_images, G², C, h, w)
        self._free: list[int] = []
        self._corners: torch.Tensor | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    def _allocate(self, pooled: torch.Tensor, fmaps: torch.Tensor) -> None:
        """Preallocate the pools on first use, sized from the first features computed."""
        n = self.max_images
        self._pooled = torch.empty((n, *pooled.shape[1:]), dtype=pooled.dtype, device=pooled.device)
        self._fmaps = torch.empty((n, *fmaps.shape[1:]), dtype=fmaps.dtype, device=fmaps.device)
        self._free = list(range(n - 1, -1, -1))

    def _insert(self, index: int, pooled: torch.Tensor, fmaps: torch.Tensor) -> None:
        if self._pooled is None:
            self._allocate(pooled[None], fmaps[None])
        if not self._free:
            _, row = self._rows.popitem(last=False)
            self._free.append(row)
        row = self._free.pop()
        self._pooled[row] = pooled
        self._fmaps[row] = fmaps
        self._rows[index] = row

    def _cell_corners(self, core) -> torch.Tensor:
        if self._corners is None:
            from .actions import grid_to_unit

            g = core.settings.grid_size
            unit = grid_to_unit(torch.arange(g * g, device=core.device), g)
            self._corners = crop_corners(unit, core.model.image_size, core.model.patch_size)
        return self._corners

    @torch.inference_mode()
    def prepare(self, core, slots: np.ndarray) -> None:
        """Make sure the images now in ``slots`` have their cell features (computed in one batch)."""
        missing = []
        for s in slots:
            idx = int(core._image_index[s])
            if idx in self._rows:
                self._rows.move_to_end(idx)
                self.hits += 1
            elif idx not in [core._image_index[m] for m in missing]:
                missing.append(int(s))
        if not missing:
            return
        self.misses += len(missing)
        corners = self._cell_corners(core)                      # (G², 2)
        g2 = corners.shape[0]
        images = core._images[torch.as_tensor(missing, device=core.device)]   # (M, 3, S, S)
        rep_images = images.repeat_interleave(g2, dim=0)
        rep_corners = corners.repeat(len(missing), 1)
        pooled, fmaps = [], []
        for start in range(0, rep_images.shape[0], self.chunk):
            patches = crop_patches(rep_images[start:start + self.chunk], rep_corners[start:start + self.chunk],
                                   core.model.patch_size)
            p, f = core.model.local_encoder(patches)
            pooled.append(p.float())
            fmaps.append(f.float())
        pooled = torch.cat(pooled).view(len(missing), g2, -1)
        fmaps = torch.cat(fmaps).view(len(missing), g2, *fmaps[0].shape[1:])
        for k, s in enumerate(missing):
            self._insert(int(core._image_index[s]), pooled[k], fmaps[k])

    def lookup(self, core, slots: np.ndarray, cells: np.ndarray):
        """(pooled (n, F), feature maps (n, C, h, w), corners (n, 2)) of ``cells`` for the images in ``slots``."""
        rows = torch.as_tensor([self._rows[int(core._image_index[s])] for s in slots], device=self._pooled.device)
        cells_t = torch.as_tensor(np.asarray(cells), device=self._pooled.device)
        return self._pooled[rows, cells_t], self._fmaps[rows, cells_t], self._cell_corners(core)[cells_t]

    # --- disk ----------------------------------------------------------------------------------------
    def expected_fingerprint(self, core) -> str:
        return f"{model_fingerprint(core.model)}-{dataset_fingerprint(core.dataset)}-g{core.settings.grid_size}"

    def save(self, path: str | Path, core) -> Path:
        """Write the in-memory store with the fingerprint of ``core``'s weights, data and grid."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._rows)
        rows = torch.as_tensor([self._rows[k] for k in keys], dtype=torch.long)
        atomic_save({"fingerprint": self.expected_fingerprint(core), "indices": keys,
                     "pooled": self._pooled[rows.to(self._pooled.device)].cpu() if keys else None,
                     "fmaps": self._fmaps[rows.to(self._fmaps.device)].cpu() if keys else None}, path)
        return path

    def load(self, path: str | Path, core) -> "GridFeatureCache":
        """Fill the store from ``path``; raises :class:`StaleCacheError` if it was made for anything else."""
        blob = load_torch_file(path, False, what="feature cache", opt_in=None, map_location=core.device)
        want = self.expected_fingerprint(core)
        if blob["fingerprint"] != want:
            raise StaleCacheError(
                f"feature cache {path} was made for other weights, data or grid (fingerprint {blob['fingerprint']}, "
                f"expected {want}); delete it and let the env rebuild it"
            )
        for k, idx in enumerate(blob["indices"]):
            self._insert(int(idx), blob["pooled"][k], blob["fmaps"][k])
        return self
