"""What a torch file's pickle would import, found without unpickling it.

The trust gate (:mod:`feature_nets.trust`) calls :func:`pickled_globals` when ``torch.load(weights_only=True)``
refuses a file: a well-formed pickle that names Python globals outside torch's safe set is a file that would run
code (refused with :class:`~feature_nets.trust.UntrustedPickleError`); a malformed one is simply not readable.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickletools
import zipfile
from pathlib import Path

__all__ = ["check_path", "pickled_globals", "torch_reason"]


def check_path(path, what: str = "checkpoint") -> Path:
    """``path`` as a ``Path``; a ``TypeError`` naming ``what`` when it is not a str or os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path to a *.pth.tar file (str or os.PathLike), got {path!r:.100} "
                        f"({type(path).__name__})")
    return Path(path)


def torch_reason(text: str) -> str:
    """The cause in one of torch's load errors, without its advice on weights_only (wrong for untrusted files)."""
    skip = ("weights_only", "weights only load failed", "documentation", "please file an issue", "trusted source")
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not any(k in ln.lower() for k in skip)]
    return (lines[0] if lines else "unreadable")[:300]


def pickled_globals(path) -> list[str] | None:
    """Python globals (``module.name``) a torch file's pickle refers to beyond torch's safe set, read from its
    opcodes without unpickling (nothing in the file runs). None when the file holds no well-formed pickle.

    ``path``: a file name, or a seekable binary file object (an archive entry read into memory)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        allowed = set(_get_allowed_globals())
    except (ImportError, AttributeError):  # another torch: report every global
        allowed = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return None
                with zf.open(member) as f:
                    names = _scan_pickle(f)
        elif hasattr(path, "read"):  # legacy format: magic number, protocol, system info, then the object's pickle
            path.seek(0)
            names = [n for _ in range(4) for n in _scan_pickle(path)]
        else:
            with open(path, "rb") as f:
                names = [n for _ in range(4) for n in _scan_pickle(f)]
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, IndexError, KeyError):
        return None
    return sorted({n for n in names if n not in allowed})


def _scan_pickle(stream) -> list[str]:
    """Globals named by one pickle's GLOBAL / INST / STACK_GLOBAL opcodes; raises ValueError if it is malformed."""
    names, strings = [], []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("GLOBAL", "INST"):  # protocol < 3 spells Python 3 modules the Python 2 way
            module, _, name = str(arg).partition(" ")
            names.append(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
        elif op.name == "STACK_GLOBAL":
            names.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown global>")
        if isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
    return names
