"""One rollout: a policy over given images, batched, every episode run to its end.

An episode ends after ``max_steps`` looks, or earlier when the policy takes the stop action
(``stop_action=True``) or the env's ``early_exit`` confidence is reached; later steps of an ended episode are
not computed (the core steps only the episodes still running), and its answer after every later step is the
one it ended with, so per-step arrays keep one shape for all episodes.

The benchmark, ``gfnet show``, the paper-PPO trainer and the benchmark scripts all run episodes through
:func:`rollout`; it is the only loop over a core's ``reset_slots`` / ``step`` / ``observe`` outside the env
faces. The policy is either an agent (``reset(num_envs)``, ``act(obs, deterministic)``, optionally
``bind(view)``) or a plain function ``obs -> actions``.

Before the first batch an agent with a ``bind`` method is given a view (docs/environment.md, "What agents
see"): the public :class:`~gfnet_env.views.EnvView`, or — only when its class sets ``privileged = True`` —
a :class:`~gfnet_env.views.PrivilegedView` that can read labels. An agent with a ``begin_episodes`` method is
told, after each ``reset``, the dataset index of every episode's image (never its label): the replay controls
of the benchmark (:mod:`agents.benchmark.null_models`) play recorded looks per image with it.
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
        probs: (T', E, K) float32 softmax outputs after each step (T' = max_steps + 1; step 0 = the glance); after
            an episode's exit step, its outputs at the exit.
        targets: (E,) int64 labels.
        rewards: (T' − 1, E) float32 reward of each focus step (0 after the exit).
        boxes: (T' − 1, E, 4) int64 (row, col, height, width) in pixels of each focus step's patch; all zero for
            steps without a look (after the exit).
        image_index: (E,) dataset index of each episode's image.
        seconds: wall-clock of the whole rollout.
        exit_step: (E,) int64 looks each episode took before it ended (``max_steps`` unless it stopped or exited
            early); its answer is ``probs[exit_step[i], i]``.
        stopped: (E,) bool, True where the policy's stop action ended the episode.
        madds: (E,) float64 multiply-adds of each episode's looks (the env's cost, the glance included).
    """

    probs: torch.Tensor
    targets: torch.Tensor
    rewards: np.ndarray
    boxes: np.ndarray
    image_index: np.ndarray
    seconds: float = 0.0
    exit_step: np.ndarray | None = None
    stopped: np.ndarray | None = None
    madds: np.ndarray | None = None

    @property
    def returns(self) -> np.ndarray:
        """(E,) float64 sum of each episode's rewards."""
        return self.rewards.astype(np.float64).sum(0)

    @property
    def confidences(self) -> np.ndarray:
        """(T', E) float32 top-1 confidence after each step."""
        return self.probs.max(-1).values.numpy()

    def top1(self) -> list[float]:
        """Top-1 accuracy (%) after each step (an ended episode counts with its final answer)."""
        return ((self.probs.argmax(-1) == self.targets[None]).double().mean(1) * 100.0).tolist()

    def final_probs(self) -> torch.Tensor:
        """(E, K) each episode's answer: its softmax output at its exit step."""
        return self.probs[-1]

    def final_top1(self) -> float:
        """Top-1 accuracy (%) of the episodes' answers."""
        return float((self.final_probs().argmax(-1) == self.targets).double().mean() * 100.0)


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
    """Run ``policy`` on dataset ``indices`` in batches of ``core.num_envs``, every episode to its end.

    A last, partial batch is padded with copies of its final image; their results are dropped.

    Args:
        core: the batched env core.
        policy: an agent (bound to its view here, ``reset`` before each batch) or a function ``obs -> actions``.
            It acts on the whole batch at every step (agents keep per-env memory); the actions of episodes that
            have already ended are ignored.
        indices: dataset indices of the images, one episode each.
        deterministic: passed to an agent's ``act``.
        as_tensor: hand the policy observations as tensors on the core's device (e.g. a torch policy on the
            GPU; its actions may then stay there too).
        progress: called as ``progress(episodes_done, episodes_total)`` after each batch.

    Returns:
        :class:`Rollout`.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no image indices to roll out")
    is_agent = hasattr(policy, "act")
    if is_agent:
        bind_view(core, policy)
    act = (lambda obs: policy.act(obs, deterministic=deterministic)) if is_agent else policy
    b, max_steps = core.num_envs, core.max_steps
    slots = np.arange(b)
    probs, targets, rewards, boxes, used, exits, stops = [], [], [], [], [], [], []
    t0 = time.perf_counter()
    for start in range(0, len(indices), b):
        idx = indices[start:start + b]
        keep = len(idx)
        idx = idx + [idx[-1]] * (b - keep)
        if is_agent:
            policy.reset(b)
            begin = getattr(policy, "begin_episodes", None)
            if begin is not None:
                begin(np.asarray(idx, dtype=np.int64))
        core.reset_slots(slots, idx)
        first = core.reset_info(slots)
        steps = [_probs(core)[:keep]]
        batch_rewards = np.zeros((max_steps, b), dtype=np.float32)
        batch_boxes = np.zeros((max_steps, b, 4), dtype=np.int64)
        exit_step = np.full(b, max_steps, dtype=np.int64)
        stopped = np.zeros(b, dtype=bool)
        running = np.ones(b, dtype=bool)
        obs = core.observe(as_tensor=as_tensor)
        for t in range(max_steps):
            actions = act(obs)
            live = slots if running.all() else np.flatnonzero(running)
            if live.size == b:
                r, terminated, info = core.step(actions)
            else:
                r, terminated, info = core.step(_select(actions, live), slots=live)
            looked = live[~info["stopped"]]
            batch_rewards[t, live] = r
            batch_boxes[t, looked] = info["box"][~info["stopped"]]
            ended = live[terminated]
            exit_step[ended] = info["step"][terminated]
            stopped[ended] = info["stopped"][terminated]
            running[ended] = False
            steps.append(_probs(core)[:keep])
            if not running.any():
                steps += [steps[-1]] * (max_steps - 1 - t)  # every episode has ended: answers stay as they are
                break
            obs = core.observe(as_tensor=as_tensor)
        probs.append(torch.stack(steps))
        targets.append(torch.as_tensor(first["target"][:keep]))
        used.append(first["image_index"][:keep])
        rewards.append(batch_rewards[:, :keep])
        boxes.append(batch_boxes[:, :keep])
        exits.append(exit_step[:keep])
        stops.append(stopped[:keep])
        if progress is not None:
            progress(min(start + b, len(indices)), len(indices))
    exit_step = np.concatenate(exits)
    return Rollout(torch.cat(probs, 1), torch.cat(targets), np.concatenate(rewards, 1), np.concatenate(boxes, 1),
                   np.concatenate(used), time.perf_counter() - t0, exit_step=exit_step, stopped=np.concatenate(stops),
                   madds=core.madds_cumulative[exit_step].astype(np.float64))


def _select(actions, rows: np.ndarray):
    """The actions of batch rows ``rows`` (a torch tensor stays on its device)."""
    if torch.is_tensor(actions):
        return actions[torch.as_tensor(rows, device=actions.device)]
    return np.asarray(actions)[rows]


def _probs(core: GFNetCore) -> torch.Tensor:
    """(N, K) softmax of the current logits, on the CPU (a copy)."""
    return torch.softmax(core._logits.float(), -1).to("cpu", copy=True)
