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

Reading: :func:`check_npz` reads the array headers of an ``.npz`` archive (a few hundred bytes each) and refuses
one whose arrays are larger than the caller's bound or than the memory, before ``numpy.load`` inflates anything:
a 2 MB archive can hold two billion zero bools.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["atomic_write", "atomic_save", "atomic_write_text", "check_npz", "npz_headers"]

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


# --- reading .npz archives: sizes before inflating ---------------------------------------------------------
def npz_headers(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{array name: (shape, dtype)}`` of an ``.npz`` archive, read from each member's ``.npy`` header only (at most
    a few kB inflated per member), each checked to agree with the size the archive declares for the member.

    Raises:
        ValueError: not an ``.npz`` archive, a member that is not a plain ``.npy`` array (object arrays hold pickles),
            or one whose header and declared size disagree (crafted or damaged).
    """
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _fortran, dtype = read(f, max_header_size=10_000)
                    header = f.tell()
                if dtype.hasobject:
                    raise ValueError(f"{path}: array {name!r} holds Python objects (a pickle), not numbers")
                stored = info.file_size - header
                if stored != math.prod(shape) * dtype.itemsize:
                    raise ValueError(f"{path}: array {name!r} says shape {shape} of {dtype} "
                                     f"({math.prod(shape) * dtype.itemsize:,} bytes) but the archive holds "
                                     f"{stored:,} bytes for it (crafted or damaged)")
                out[name] = (tuple(int(n) for n in shape), dtype)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, SyntaxError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path} is not a readable .npz archive of numeric arrays: {e}") from None
    return out


def check_npz(path: str | os.PathLike, max_elements: int, what: str = "") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """:func:`npz_headers` of ``path``, refused before anything is inflated when an array has more than
    ``max_elements`` elements (the caller's bound, from what it knows of the file: e.g. runs × steps × images) or the
    arrays together need more than half the available memory.

    Raises:
        ValueError: naming the array, its shape and the bound (``what`` says where the bound comes from).
    """
    headers = npz_headers(path)
    for name, (shape, _dtype) in headers.items():
        if math.prod(shape) > max_elements:
            raise ValueError(f"{path}: array {name!r} has shape {shape} ({math.prod(shape):,} elements), more than the "
                             f"{max_elements:,} {what or 'allowed'}; the file was crafted or belongs to another run")
    need = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    free = host_available_memory()
    if free is not None and need > free // 2:
        raise ValueError(f"{path}: its arrays need {need / 1e9:.1f} GB in memory but only {free / 1e9:.1f} GB is "
                         "available")
    return headers


def host_available_memory() -> int | None:
    """Bytes of host memory available now (``MemAvailable`` of /proc/meminfo, else the free pages), None where
    unknown. The one reading of it: the env's, the SB3 recipes' and the ``.npz`` checks' memory refusals use it."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError, IndexError):
        return None
