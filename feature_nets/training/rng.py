"""Seeds and random state of the training loops: seed mixing, and saving / restoring every global RNG.

Every random draw of a training run is a function of ``TrainConfig.seed`` and where the run is (epoch, step,
rank), mixed into one seed by :func:`mix_seed`; the global torch / numpy / random state is saved in
checkpoints so that a run interrupted mid-epoch resumes exactly.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["mix_seed", "reseed_everything", "rng_state", "set_rng_state"]


def mix_seed(*ints: int) -> int:
    """A 63-bit seed from several ints (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(i) & 0xFFFFFFFF for i in ints]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def reseed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` from one seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    """The torch, numpy, ``random`` (and CUDA, when present) global states, as tensors and plain values that
    ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved (the CUDA part only where it still fits the visible devices)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])
