"""Helpers of the reliability tests (imported by name: this folder is on sys.path while its tests run)."""

from __future__ import annotations

import numpy as np
from PIL import Image


class TracePayload:
    """Unpickling this object runs ``exec`` on a line that writes ``path``: proof that code from a file ran."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


def write_image_folder(root, split: str = "val", classes=("a", "b"), n_per_class: int = 3, size: int = 60):
    """``root/split/<class>/<i>.png``: random RGB images (size×size) in ImageFolder layout; returns ``root``."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root
