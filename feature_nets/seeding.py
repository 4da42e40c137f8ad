"""Seeding helpers shared by the training loops and the data loaders."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_worker"]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of a DataLoader: seed numpy and ``random`` in a worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
