"""Progress bars of the training loops: tqdm where wanted, a silent stand-in elsewhere (other ranks, tests)."""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(iterable=None, total: int | None = None, desc: str = "", enabled: bool = True, leave: bool = False):
    """A tqdm bar over ``iterable`` (or a manual one when it is None); when disabled, the iterable itself or an
    object that ignores ``update`` / ``set_postfix`` / ``close``."""
    if not enabled:
        return iterable if iterable is not None else _NullBar()
    from ..extras import require

    tqdm = require("tqdm.auto", "train", "a progress bar").tqdm
    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)


class _NullBar:
    def update(self, *a, **k):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass
