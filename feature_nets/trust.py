"""The one trust gate: how every file that may hold a pickle is read.

A torch file (a checkpoint, ``--backbone-weights``, a stage-2 policy, a paper-ppo ``paper_ppo.pt``, an SB3 zip's
``*.pth`` entries, the grid feature cache) is a pickle. Every loader of one in this project goes through
:func:`load_torch_file` (or, for a file read by another library, :func:`refuse_untrusted`), so that all of them:

- take the opt-in to full unpickling only as the bool ``True`` (:func:`check_opt_in`): ``"no"``, ``"off"``, ``1``,
  None or a numpy bool raise ``TypeError`` before the file is opened;
- read the file with ``torch.load(weights_only=True)`` otherwise, which never runs code from the file;
- refuse a file whose pickle names Python globals beyond torch's safe set with one
  :class:`UntrustedPickleError` naming the file (and the archive entry) and the globals, read from the pickle's
  opcodes without running anything (:func:`~feature_nets.safe_pickle.pickled_globals`), and saying how to opt in
  where there is a way to; never torch's advice to load with ``weights_only=False``;
- report a file that is not a well-formed torch file (truncated, empty, another format) as
  :class:`NotACheckpointError`, in one line.

The errors are :class:`CheckpointError` subclasses, which the ``gfnet`` command prints as one line.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .safe_pickle import check_path, pickled_globals, torch_reason

__all__ = ["CheckpointError", "NotACheckpointError", "UntrustedPickleError", "TRUSTED_PICKLE_OPT_IN", "check_opt_in",
           "check_trusted_pickle", "load_torch_file", "refuse_untrusted", "untrusted_pickle_error"]

#: How to opt in to full unpickling of a checkpoint or weights file (appended to its refusal).
TRUSTED_PICKLE_OPT_IN = ("If you trust this file (you made it, or it comes from a source you trust), load it with "
                         "trusted_pickle=True (CLI: --trusted-pickle, or --env-kwarg trusted_pickle=true); otherwise "
                         "re-save its tensors from a trusted environment.")
#: The refusal's advice for files that hold only tensors and plain values by design (no opt-in exists).
NO_OPT_IN = ("Files of this kind hold only tensors and plain values; re-save it from a trusted environment (or "
             "retrain it).")


class CheckpointError(Exception):
    """Base class of every problem with a torch file this project reads (checkpoints, weights, policy files)."""


class NotACheckpointError(CheckpointError):
    """The file is not a readable torch file of the expected kind (truncated, another format, wrong entries)."""


class UntrustedPickleError(CheckpointError):
    """The file needs full unpickling, which runs code from the file; nothing from it was run."""


def check_opt_in(value: Any, name: str = "trusted_pickle", how: str = "CLI: --trusted-pickle, or --env-kwarg "
                 "trusted_pickle=true") -> bool:
    """An opt-in to full unpickling, checked: only the bools ``True`` / ``False`` are accepted.

    Args:
        value: what the caller passed.
        name: the argument's name, for the message (``trusted_pickle``, ``trust_agent``).
        how: how to give it on the command line, for the message.

    Raises:
        TypeError: anything else (``"no"``, ``"off"``, ``1``, None, a numpy bool), so that a string never turns
            unpickling on.
    """
    if value is True or value is False:
        return value
    raise TypeError(
        f"{name} must be True or False, got {value!r:.100} ({type(value).__name__}). Full unpickling runs code "
        f"stored in the file, so it is enabled only by the bool True ({how})."
    )


def check_trusted_pickle(value: Any) -> bool:
    """:func:`check_opt_in` for ``trusted_pickle``."""
    return check_opt_in(value, "trusted_pickle")


def _shown(found: list[str]) -> str:
    return ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")


def untrusted_pickle_error(path, found: list[str], opt_in: str | None = TRUSTED_PICKLE_OPT_IN,
                           entry: str | None = None, cls: type = UntrustedPickleError) -> Exception:
    """The one refusal: ``path`` (and its archive ``entry``) holds pickled ``found`` globals that would run code.

    ``opt_in``: how to load it anyway (None: the advice for files that hold tensors only by design).
    ``cls``: :class:`UntrustedPickleError` or a subclass of it.
    """
    where = f"{path} (entry {entry!r})" if entry else f"{path}"
    what = _shown(found) or "objects the safe loader does not allow"
    return cls(f"{where} contains pickled Python objects ({what}) that would run code when loaded, so it was not "
               f"loaded. {opt_in or NO_OPT_IN}")


def not_readable_error(path, error: BaseException, what: str = "torch file", entry: str | None = None
                       ) -> NotACheckpointError:
    where = f"{path} (entry {entry!r})" if entry else f"{path}"
    reason = torch_reason(str(error)) if str(error).strip() else type(error).__name__
    return NotACheckpointError(f"{where} is not a readable {what} (truncated download or another file type?): "
                               f"{reason}")


def load_torch_file(path: str | os.PathLike, trusted_pickle: bool = False, *, what: str = "torch file",
                    opt_in: str | None = TRUSTED_PICKLE_OPT_IN, map_location: Any = "cpu") -> Any:
    """``torch.load`` of ``path`` through the trust gate (see the module docstring).

    Args:
        path: the file.
        trusted_pickle: the bool ``True`` to unpickle fully (runs code from the file: only for files you trust).
        what: what the file is, for the messages (``"checkpoint"``, ``"paper-ppo policy file"``).
        opt_in: how to opt in, in the refusal; None for files that have no opt-in (tensors only by design).
        map_location: as for ``torch.load``.

    Raises:
        TypeError: ``trusted_pickle`` is not a bool, or ``path`` is not a path.
        FileNotFoundError: no such file.
        UntrustedPickleError: the file's pickle would run code (nothing ran).
        NotACheckpointError: not a readable torch file (truncated, empty, a folder, another format).
    """
    trusted = check_trusted_pickle(trusted_pickle)
    path = check_path(path, what)
    if not path.exists():
        raise FileNotFoundError(2, f"{what} not found: {path}")
    if path.is_dir():
        raise NotACheckpointError(f"{path} is a directory, not a {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trusted)
    except pickle.UnpicklingError as e:
        found = None if trusted else pickled_globals(path)
        if found is not None:
            raise untrusted_pickle_error(path, found, opt_in) from None
        raise not_readable_error(path, e, what) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError,
            AttributeError, TypeError) as e:
        # what a damaged file raises inside torch's readers; OSError includes a file we may not read
        raise not_readable_error(path, e, what) from None


def refuse_untrusted(path, data: bytes, entry: str | None = None, opt_in: str | None = None,
                     cls: type = UntrustedPickleError) -> None:
    """Raise the one refusal if the torch file ``data`` (an archive entry of ``path``, read by another library that
    refused it) holds a pickle naming globals beyond torch's safe set; return if it does not."""
    found = pickled_globals(io.BytesIO(data))
    if found:
        raise untrusted_pickle_error(Path(path), found, opt_in, entry=entry, cls=cls)
