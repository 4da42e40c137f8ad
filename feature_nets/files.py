"""Atomic file writes: a crash, Ctrl-C or a full disk never leaves a half-written file under the final name.

Every file the project writes (checkpoints, agents, results, JSON sidecars) goes through these functions:
the content is written to ``<name>.tmp`` in the same folder, flushed to disk, then renamed over the final
name (``os.replace`` is atomic on POSIX and Windows). On any error the temporary file is removed and the
previous file, if any, is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "atomic_save", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(file_object)`` on a temporary file, then move it to ``path``.

    Args:
        path: final file name (its folder is created).
        write: writes the whole content into the open file object it is given.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")
