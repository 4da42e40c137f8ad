"""The opt-in to full unpickling, and what a torch file's pickle would import, found without unpickling it.

:func:`check_trusted_pickle` accepts only the bools as the opt-in, so that ``"no"`` never enables it.
:func:`feature_nets.checkpoint.read_checkpoint_dict` calls :func:`pickled_globals` when
``torch.load(weights_only=True)`` refuses a file: a well-formed pickle that names Python globals outside torch's
safe set is a file that would run code (refused with :class:`~feature_nets.checkpoint.UntrustedPickleError`); a
malformed one is simply not a checkpoint.
"""

from __future__ import annotations

import os
import pickletools
import zipfile
from pathlib import Path

__all__ = ["check_path", "check_trusted_pickle", "pickled_globals", "torch_reason"]


def check_trusted_pickle(value) -> bool:
    """The opt-in to full unpickling, checked: only the bools ``True`` / ``False`` are accepted.

    Raises:
        TypeError: anything else (``"no"``, ``"off"``, ``1``, None), so that a string never turns unpickling on.
    """
    if value is True or value is False:
        return value
    raise TypeError(
        f"trusted_pickle must be True or False, got {value!r} ({type(value).__name__}). Full unpickling runs code "
        "stored in the file, so it is enabled only by the bool True (CLI: --trusted-pickle, or "
        "--env-kwarg trusted_pickle=true)."
    )


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


def pickled_globals(path: str | os.PathLike) -> list[str] | None:
    """Python globals (``module.name``) a torch file's pickle refers to beyond torch's safe set, read from its
    opcodes without unpickling (nothing in the file runs). None when the file holds no well-formed pickle."""
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
        else:  # legacy format: magic number, protocol, system info, then the object's pickle
            with open(path, "rb") as f:
                names = [n for _ in range(4) for n in _scan_pickle(f)]
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, IndexError, KeyError):
        return None
    return sorted({n for n in names if n not in allowed})


def _scan_pickle(stream) -> list[str]:
    """Globals named by one pickle's GLOBAL / INST / STACK_GLOBAL opcodes; raises ValueError if it is malformed."""
    names, strings = [], []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("GLOBAL", "INST"):
            names.append(".".join(str(arg).split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            names.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown global>")
        if isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
    return names
