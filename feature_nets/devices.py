"""Device selection shared by every package: ``"auto"`` means CUDA when available, else the CPU; a device that
this machine does not have (``cuda`` without a GPU, ``cuda:3`` with two) is a ``ValueError`` naming it and what
there is, before anything is built on it (:func:`check_device`); and the CPU cores this process may use, which
bound its data-loader workers (:func:`default_workers`)."""

from __future__ import annotations

import os

import torch

__all__ = ["available_cpus", "check_device", "default_workers", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else → ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` if this machine has it, else a ``ValueError`` in one line saying what it
    has (``what`` names the setting, e.g. ``"--device"``). ``"auto"`` is always available."""
    if isinstance(device, str) and device == "auto":
        return resolve_device(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{what} {device!r} is not a torch device ({' '.join(str(e).split())}); use cpu, cuda, "
                         "cuda:N or auto") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{what} {device} but this machine has no usable CUDA GPU (torch "
                             f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu, "
                             "or auto to take a GPU when there is one")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{what} {device} but this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{what} {device} but this machine has no usable Apple GPU (MPS); use --device cpu")
    return dev


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one, else the machine's
    count; at least 1) — what PyTorch's DataLoader compares its worker count with."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity masks (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def default_workers(wanted: int, cpus: int | None = None) -> int:
    """Data-loader worker processes: ``wanted`` (a recipe's or a task's default), never more than the cores present
    (:func:`available_cpus`), so that a small machine starts no more workers than it has cores (and PyTorch does
    not warn about it); 0 stays 0 (loading in the main process)."""
    cpus = available_cpus() if cpus is None else int(cpus)
    return max(0, min(int(wanted), cpus))
