"""Seeded augmentation: random transforms that draw from a generator the image loader seeds for each load.

Gymnasium's contract is that ``reset(seed=s)`` is deterministic. The train split's augmentation
(RandomResizedCrop + horizontal flip) is random, and torchvision draws it from torch's global RNG, which the
loader threads share in no fixed order. So the image loader draws one seed per load from the env slot's numpy
generator and decodes the image inside :func:`seeded_randomness`, which gives the calling thread its own
``torch.Generator``; this module's :class:`RandomResizedCrop` and :class:`RandomHorizontalFlip` (drop-ins for
torchvision's) draw from it. Outside such a block (e.g. in a training ``DataLoader``) they behave exactly like
torchvision's, on the global RNG.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator

import torch
from torchvision import transforms
from torchvision.transforms import functional as F

__all__ = ["RandomHorizontalFlip", "RandomResizedCrop", "current_generator", "has_seeded_transform",
           "seeded_randomness"]

_local = threading.local()


@contextlib.contextmanager
def seeded_randomness(seed: int | None) -> Iterator[None]:
    """Within the block, this thread's seeded transforms draw from ``torch.Generator().manual_seed(seed)``.

    ``seed=None`` changes nothing (the transforms use torch's global RNG). Blocks nest; other threads are not
    affected.
    """
    if seed is None:
        yield
        return
    previous = getattr(_local, "generator", None)
    _local.generator = torch.Generator().manual_seed(int(seed))
    try:
        yield
    finally:
        _local.generator = previous


def current_generator() -> torch.Generator | None:
    """The generator of the innermost :func:`seeded_randomness` block of this thread (None outside one)."""
    return getattr(_local, "generator", None)


def _crop_params(img, scale, ratio, g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` (same draws, same order), drawing from ``g``."""
    _, height, width = F.get_dimensions(img)
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=g).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=g).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)  # fallback: central crop
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomResizedCrop(transforms.RandomResizedCrop):
    """torchvision's ``RandomResizedCrop`` (same name and repr, a drop-in), drawing its crop from
    :func:`current_generator` when one is set."""

    def forward(self, img):
        g = current_generator()
        if g is None:
            return super().forward(img)
        i, j, h, w = _crop_params(img, self.scale, self.ratio, g)
        return F.resized_crop(img, i, j, h, w, self.size, self.interpolation, antialias=self.antialias)


class RandomHorizontalFlip(transforms.RandomHorizontalFlip):
    """torchvision's ``RandomHorizontalFlip`` (same name and repr, a drop-in), drawing its coin from
    :func:`current_generator` when one is set."""

    def forward(self, img):
        g = current_generator()
        if g is None:
            return super().forward(img)
        return F.hflip(img) if torch.rand(1, generator=g) < self.p else img


def has_seeded_transform(transform) -> bool:
    """Whether ``transform`` (a ``Compose`` is looked into) contains one of the seeded transforms."""
    if isinstance(transform, (RandomResizedCrop, RandomHorizontalFlip)):
        return True
    return any(has_seeded_transform(t) for t in getattr(transform, "transforms", ()) or ())
