"""Rewards of a focus step, from the logits before and after it.

All functions take (B, K) logits of the previous and the current step and (B,) integer targets and return
(B,) float rewards. ``confidence_gain`` is the paper's: the gain in softmax probability of the true class.
"""

from __future__ import annotations

from typing import Callable

import torch

RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _true_class_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1).gather(1, targets.long().view(-1, 1))[:, 0]


def confidence_gain(prev_logits: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """p_t(y) − p_{t−1}(y) (reference §4.7), in [−1, 1]."""
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
