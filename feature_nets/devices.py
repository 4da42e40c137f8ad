"""Device selection shared by every package: ``"auto"`` means CUDA when available, else the CPU; and the CPU
cores this process may use, which bound its data-loader workers."""

from __future__ import annotations

import os

import torch

__all__ = ["available_cpus", "default_workers", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else → ``torch.device(device)``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
