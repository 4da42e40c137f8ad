"""One rollout: a policy over given images, batched, every episode run to its end.

The benchmark, ``gfnet show``, the paper-PPO trainer and the benchmark scripts all run episodes through
:func:`rollout`; it is the only loop over a core's ``reset_slots`` / ``step`` / ``observe`` outside the env
faces. The policy is either an agent (``reset(num_envs)``, ``act(obs, deterministic)``, optionally
``bind(view)``) or a plain function ``obs -> actions``.

Before the first batch an agent with a ``bind`` method is given a view (docs/environment.md, "What agents
see"): the public :class:`~gfnet_env.views.EnvView`, or — only when its class sets ``privileged = True`` —
a :class:`~gfnet_env.views.PrivilegedView` that can read labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .core import GFNetCore

__all__ = ["Rollout", "rollout", "bind_view"]


@dataclass
class Rollout:
    """Per-step outputs of E complete episodes, in the order of the image indices given.

    Attributes:
        probs: (T', E, K) float32 softmax outputs after each step (T' = max_steps + 1; step 0 = the glance).
        targets: (E,) int64 labels.
        rewards: (T' − 1, E) float32 reward of each focus step.
        boxes: (T' − 1, E, 4) int64 (row, col, height, width) in pixels of each focus step's patch.
        image_index: (E,) dataset index of each episode's image.
        seconds: wall-clock of the whole rollout.
    """

    probs: torch.Tensor
    targets: torch.Tensor
    rewards: np.ndarray
    boxes: np.ndarray
    image_index: np.ndarray
    seconds: float = 0.0

    @property
    def returns(self) -> np.ndarray:
        """(E,) float64 sum of each episode's rewards."""
        return self.rewards.astype(np.float64).sum(0)

    @property
    def confidences(self) -> np.ndarray:
        """(T', E) float32 top-1 confidence after each step."""
        return self.probs.max(-1).values.numpy()

    def top1(self) -> list[float]:
        """Top-1 accuracy (%) after each step."""
        return ((self.probs.argmax(-1) == self.targets[None]).double().mean(1) * 100.0).tolist()


def bind_view(core: GFNetCore, policy: Any) -> None:
    """Give ``policy`` the view it may have: privileged (labels) only when its class asks for it."""
    bind = getattr(policy, "bind", None)
    if bind is not None:
        bind(core.privileged_view() if getattr(policy, "privileged", False) else core.view())


def rollout(
    core: GFNetCore,
    policy: Any | Callable[[Any], Any],
    indices: Sequence[int],
    deterministic: bool = True,
    as_tensor: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Rollout:
    """Run ``policy`` on dataset ``indices`` in batches of ``core.num_envs``, every episode to ``max_steps``.

    A last, partial batch is padded with copies of its final image; their results are dropped.

    Args:
        core: the batched env core (``early_exit`` must be unset: every episode runs to its end).
        policy: an agent (bound to its view here, ``reset`` before each batch) or a function ``obs -> actions``.
        indices: dataset indices of the images, one episode each.
        deterministic: passed to an agent's ``act``.
        as_tensor: hand the policy observations as tensors on the core's device (e.g. a torch policy on the
            GPU; its actions may then stay there too).
        progress: called as ``progress(episodes_done, episodes_total)`` after each batch.

    Returns:
        :class:`Rollout`.
    """
    if core.settings.early_exit is not None:
        raise ValueError("a rollout runs every episode to max_steps; leave early_exit unset "
                         "(the budgeted curve measures early exits)")
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no image indices to roll out")
    is_agent = hasattr(policy, "act")
    if is_agent:
        bind_view(core, policy)
    act = (lambda obs: policy.act(obs, deterministic=deterministic)) if is_agent else policy
    b = core.num_envs
    slots = np.arange(b)
    probs, targets, rewards, boxes, used = [], [], [], [], []
    t0 = time.perf_counter()
    for start in range(0, len(indices), b):
        idx = indices[start:start + b]
        keep = len(idx)
        idx = idx + [idx[-1]] * (b - keep)
        if is_agent:
            policy.reset(b)
        core.reset_slots(slots, idx)
        info = core.reset_info(slots)
        steps = [_probs(core)[:keep]]
        batch_rewards, batch_boxes = [], []
        obs = core.observe(as_tensor=as_tensor)
        for _t in range(core.max_steps):
            r, _terminated, info = core.step(act(obs))
            batch_rewards.append(r[:keep])
            batch_boxes.append(info["box"][:keep])
            steps.append(_probs(core)[:keep])
            obs = core.observe(as_tensor=as_tensor)
        probs.append(torch.stack(steps))
        targets.append(torch.as_tensor(info["target"][:keep]))
        used.append(info["image_index"][:keep])
        rewards.append(np.stack(batch_rewards))
        boxes.append(np.stack(batch_boxes))
        if progress is not None:
            progress(min(start + b, len(indices)), len(indices))
    return Rollout(torch.cat(probs, 1), torch.cat(targets), np.concatenate(rewards, 1), np.concatenate(boxes, 1),
                   np.concatenate(used), time.perf_counter() - t0)


def _probs(core: GFNetCore) -> torch.Tensor:
    """(N, K) softmax of the current logits, on the CPU (a copy)."""
    return torch.softmax(core._logits.float(), -1).to("cpu", copy=True)
