"""Rewards of a focus step, from the logits before and after it.

All functions take (B, K) logits of the previous and the current step and (B,) integer targets and return
(B,) float rewards. ``confidence_gain`` is the paper's: the gain in softmax probability of the true class.
:class:`StepReward` is what the env computes per step: one of them minus the step's cost, on the device
(docs/gfnet.md, "Rewards").
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _true_class_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1).gather(1, targets.long().view(-1, 1))[:, 0]


def confidence_gain(prev_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """p_t(y) − p_{t−1}(y), in [−1, 1] (the paper's reward)."""
    return _true_class_prob(logits, targets) - _true_class_prob(prev_logits, targets)


def log_confidence_gain(prev_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p_t(y) − log p_{t−1}(y): the gain in log-likelihood of the true class (unbounded)."""
    lp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets.long().view(-1, 1))[:, 0]
    lq = torch.log_softmax(prev_logits.float(), dim=-1).gather(1, targets.long().view(-1, 1))[:, 0]
    return lp - lq


def correct_gain(prev_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1[correct now] − 1[correct before], in {−1, 0, 1}."""
    now = (logits.argmax(-1) == targets).float()
    before = (prev_logits.argmax(-1) == targets).float()
    return now - before


REWARDS: dict[str, RewardFn] = {
    "confidence_gain": confidence_gain,
    "log_confidence_gain": log_confidence_gain,
    "correct_gain": correct_gain,
}


def get_reward(name: str) -> RewardFn:
    """The reward function called ``name``, or a clear error listing the choices."""
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)}") from None


class StepReward:
    """The env's reward of focus step t: ``reward(prev_logits, logits, targets) − step_cost · madds[t]``.

    Args:
        name: one of :data:`REWARDS`.
        step_cost: cost per multiply-add (>= 0; 0 disables the term).
        madds_per_step: (T,) multiply-adds of each step (0 = the glance).
        device: where rewards are computed (the core's device).
    """

    def __init__(self, name: str, step_cost: float, madds_per_step: np.ndarray, device: torch.device) -> None:
        self.fn = get_reward(name)
        self.step_cost = float(step_cost)
        # float32, as the rewards are: cost·madds is a few 1e-3 at most for sensible costs
        self._cost = torch.as_tensor(np.float32(self.step_cost) * np.asarray(madds_per_step, dtype=np.float32),
                                     device=device)

    def __call__(self, prev_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                 steps: np.ndarray) -> torch.Tensor:
        """(B,) float32 rewards on the device; ``steps`` (B,) int64 is the index t of the step just taken."""
        reward = self.fn(prev_logits, logits, targets).float()
        if self.step_cost:
            reward = reward - self._cost[torch.as_tensor(steps, device=self._cost.device)]
        return reward
