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
        self._store: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.fingerprint: str | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def _cell_corners(self, core) -> torch.Tensor:
        from .core import grid_to_unit

        g = core.settings.grid_size
        unit = grid_to_unit(torch.arange(g * g, device=core.device), g)
        return crop_corners(unit, core.model.image_size, core.model.patch_size)

    @torch.inference_mode()
    def prepare(self, core, slots: np.ndarray) -> None:
        """Make sure the images now in ``slots`` have their cell features (computed in one batch)."""
        missing = []
        for s in slots:
            idx = int(core.image_index[s])
            if idx in self._store:
                self._store.move_to_end(idx)
                self.hits += 1
            elif idx not in [core.image_index[m] for m in missing]:
                missing.append(int(s))
        if not missing:
            return
        self.misses += len(missing)
        corners = self._cell_corners(core)                      # (G², 2)
        g2 = corners.shape[0]
        images = core.images[torch.as_tensor(missing, device=core.device)]   # (M, 3, S, S)
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
            self._store[int(core.image_index[s])] = (pooled[k], fmaps[k])
        while len(self._store) > self.max_images:
            self._store.popitem(last=False)

    def lookup(self, core, slots: np.ndarray, cells: np.ndarray):
        """(pooled (n, F), feature maps (n, C, h, w), corners (n, 2)) of ``cells`` for the images in ``slots``."""
        entries = [self._store[int(core.image_index[s])] for s in slots]
        cells_t = torch.as_tensor(np.asarray(cells), device=core.device)
        pooled = torch.stack([e[0] for e in entries]).gather(
            1, cells_t.view(-1, 1, 1).expand(-1, 1, entries[0][0].shape[-1]))[:, 0]
        fm = torch.stack([e[1][int(c)] for e, c in zip(entries, cells)])
        corners = self._cell_corners(core)[cells_t]
        return pooled, fm, corners

    # --- disk ----------------------------------------------------------------------------------------
    def expected_fingerprint(self, core) -> str:
        return f"{model_fingerprint(core.model)}-{dataset_fingerprint(core.dataset)}-g{core.settings.grid_size}"

    def save(self, path: str | Path, core) -> Path:
        """Write the in-memory store with the fingerprint of ``core``'s weights, data and grid."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._store)
        torch.save({"fingerprint": self.expected_fingerprint(core), "indices": keys,
                    "pooled": torch.stack([self._store[k][0].cpu() for k in keys]) if keys else None,
                    "fmaps": torch.stack([self._store[k][1].cpu() for k in keys]) if keys else None}, path)
        return path

    def load(self, path: str | Path, core) -> "GridFeatureCache":
        """Fill the store from ``path``; raises :class:`StaleCacheError` if it was made for anything else."""
        blob = torch.load(path, map_location=core.device, weights_only=True)
        want = self.expected_fingerprint(core)
        if blob["fingerprint"] != want:
            raise StaleCacheError(
                f"feature cache {path} was made for other weights, data or grid (fingerprint {blob['fingerprint']}, "
                f"expected {want}); delete it and let the env rebuild it"
            )
        for k, idx in enumerate(blob["indices"]):
            self._store[int(idx)] = (blob["pooled"][k], blob["fmaps"][k])
        return self
