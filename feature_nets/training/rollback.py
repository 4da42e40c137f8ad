"""Ctrl-C rolls a training stage back to its last complete step: what a step changes besides the weights.

An optimisation step changes more than the weights and the optimiser: the forward pass updates the BatchNorm
buffers (``running_mean``, ``running_var``, ``num_batches_tracked``) and draws from the global random generators
(dropout, drop-connect, data augmentation in the main process), and the epoch's record adds the step's loss and
correct predictions. A Ctrl-C (or SIGTERM) can arrive anywhere in that. The loop therefore

- keeps a :class:`StepBoundary` of the last complete step (the model's buffers, the global random state and the
  epoch's running sums, :class:`EpochSums`), taken after each step: a copy of the buffers only (small next to the
  weights), never of the weights;
- applies the optimiser and schedule step together with the counters that record it, with the signals held back
  (:func:`feature_nets.signals.signals_held`), so that the weights and optimiser are either before or after a step;
- on an interruption restores the buffers from the boundary and saves the boundary's random state and sums with
  the weights. The checkpoint is then exactly the state after the last complete step, and a resumed run is exactly
  the uninterrupted one (with ``workers=0``; see :mod:`.loop`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .rng import rng_state

__all__ = ["EpochSums", "StepBoundary"]


@dataclass
class EpochSums:
    """The running sums of an epoch's training record (this process's share under torchrun).

    Attributes:
        loss: Σ over the steps of the batch's mean loss × its samples.
        seen: samples trained on.
        correct: (T,) float64, correct predictions per look.
        seconds: training time of the epoch before the run was interrupted (s; the resumed part adds its own).
    """

    loss: float = 0.0
    seen: int = 0
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    seconds: float = 0.0

    @classmethod
    def empty(cls, T: int) -> "EpochSums":
        return cls(correct=torch.zeros(T, dtype=torch.float64))

    def add(self, loss: float, n: int, correct: torch.Tensor) -> None:
        """Count one step: its mean ``loss`` over ``n`` samples and its (T,) ``correct`` predictions."""
        self.loss += loss * n
        self.seen += n
        self.correct = self.correct + correct.detach().double().cpu()

    def to_dict(self, world_size: int) -> dict:
        """As stored in a checkpoint (``epoch_sums``, read back with ``torch.load(weights_only=True)``)."""
        return {"loss": self.loss, "seen": self.seen, "correct": self.correct.clone(), "seconds": self.seconds,
                "world_size": int(world_size)}

    @classmethod
    def from_dict(cls, d: dict | None, T: int, world_size: int) -> "EpochSums":
        """The sums a checkpoint stored, or empty ones when it stored none or was written by another number of
        processes (only rank 0's share is saved, so under torchrun the resumed epoch counts its own part)."""
        if not isinstance(d, dict) or int(d.get("world_size", 1)) != world_size or world_size != 1:
            return cls.empty(T)
        correct = d.get("correct")
        if not isinstance(correct, torch.Tensor) or correct.shape != (T,):
            return cls.empty(T)
        return cls(loss=float(d["loss"]), seen=int(d["seen"]), correct=correct.double().clone(),
                   seconds=float(d.get("seconds", 0.0)))


@dataclass
class StepBoundary:
    """The state of a training run after its last complete step that a step changes outside the weights and the
    optimiser: the model's buffers (BatchNorm statistics), the global random state and the epoch's sums."""

    buffers: list[torch.Tensor]
    rng: dict
    sums: EpochSums

    @classmethod
    def take(cls, model: nn.Module, sums: EpochSums) -> "StepBoundary":
        """A copy of the model's buffers, the global random state now and a copy of ``sums``."""
        return cls(buffers=[b.detach().clone() for b in model.buffers()], rng=rng_state(),
                   sums=EpochSums(sums.loss, sums.seen, sums.correct.clone(), sums.seconds))

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put the buffers back as they were at the boundary (in place: the model keeps its tensors)."""
        for saved, now in zip(self.buffers, model.buffers()):
            now.copy_(saved)
