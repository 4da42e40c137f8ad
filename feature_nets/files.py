"""Atomic file writes: a crash, Ctrl-C or a full disk never leaves a half-written file under the final name.

Every file the project writes (checkpoints, agents, results, JSON sidecars) goes through these functions:
the content is written to a temporary file of its own, ``<name>.<random>.tmp`` in the same folder, flushed to
disk, then renamed over the final name (``os.replace`` is atomic on POSIX and Windows). On any error the
temporary file is removed and the previous file, if any, is left as it was.

The temporary file comes from :func:`tempfile.mkstemp` in the target folder: created with ``O_CREAT | O_EXCL``
under a fresh random name, it is never a planted file or symlink (``agent.json.tmp -> victim`` is left alone, the
victim untouched), and two writers of one file (two threads, two processes) never share it, so the final name
always holds one writer's complete file. It gets the mode ``open`` would give a new file (0666 less the umask).

A full disk is reported as ``OSError(errno.ENOSPC, "no space left on device while writing <path> …")``, also
when the writer hides the cause: torch's zip writer raises ``RuntimeError: … unexpected pos …`` (or ``… failed
writing file …``), mapped to the ``OSError`` in its exception chain when there is one (ENOSPC → the message
above, e.g. EFBIG → "could not write <path>: File too large"), else to ENOSPC when the disk has less than
16 MiB free, else to ``EIO`` naming the file. Other errors are re-raised as they are.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "atomic_save", "atomic_write_text"]

#: Below this many free bytes a failed write is reported as a full disk.
LOW_SPACE_BYTES = 16 * 2**20
#: Text of torch's zip-writer errors, which hide the errno of the failed write.
_TORCH_WRITE_ERRORS = ("unexpected pos", "failed writing file", "PytorchStreamWriter failed")


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _os_cause(error: BaseException) -> OSError | None:
    """The first ``OSError`` with an errno in ``error``'s chain (itself, its cause or context)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _write_error(path: Path, error: BaseException) -> OSError | None:
    """The clear ``OSError`` to raise instead of ``error`` (a failed write of ``path``), or None to keep it."""
    kept = "; the previous file, if any, is unchanged"
    cause = _os_cause(error)
    if cause is not None and cause.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, f"no space left on device while writing {path}{kept}")
    if isinstance(error, RuntimeError) and any(t in str(error) for t in _TORCH_WRITE_ERRORS):
        if cause is not None:
            return OSError(cause.errno, f"could not write {path}: {cause.strerror}{kept}")
        free = _free_bytes(path.parent)
        if free is not None and free < LOW_SPACE_BYTES:
            return OSError(errno.ENOSPC, f"no space left on device while writing {path} ({free} bytes free){kept}")
        return OSError(errno.EIO, f"could not write {path} (torch: {' '.join(str(error).split())}){kept}")
    return None


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
    tmp = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name[:200] + ".", suffix=".tmp")
        tmp = Path(name)
        try:
            f = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""}))
        except BaseException:
            os.close(fd)
            raise
        with f:
            os.fchmod(f.fileno(), _new_file_mode())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        clear = _write_error(path, e)
        if clear is not None:
            raise clear from e
        raise
    return path


def _new_file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the process umask (read from /proc without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (restored at once)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")
