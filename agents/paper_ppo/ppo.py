"""The paper's PPO update for the patch proposal network: the maths only, no env and no files.

The algorithm is described in docs/training.md, "Stage 2: policy (PPO)". One rollout = one batch of B images
looked at for T steps: the glance, then T − 1 focus steps. Before each focus step the policy saw the previous
feature map (a *state*), sampled a crop location (an *action*, clamped to [0, 1]², with the log-probability of
the clamped action), and after the step received the gain in the true class's softmax probability (a
*reward*). The caller (:mod:`agents.paper_ppo.train`) fills a :class:`RolloutMemory` with them; then one
:func:`ppo_update`:

1. discounted returns, backwards over the T − 1 rewards with γ (0.7); no GAE, no bootstrapping;
2. returns normalised over the whole (T − 1, B) batch: (R − mean) / (std + 1e-5), std unbiased (torch's default);
3. the policy re-evaluates all stored states from a zero GRU state: log-probs, values, entropy;
4. advantage = normalised return − V(s) (V detached);
5. loss = −min(ratio·A, clip(ratio, 1 − ε, 1 + ε)·A) + 0.5·MSE(V, R) − 0.01·entropy, per (step, image);
   the MSE is one scalar (mean over all steps and images) broadcast into every element (after the final
   mean this equals a per-element squared error; the entropy term is constant for a fixed std and adds no
   gradient, only a value to the loss: 2·(½·(1 + ln 2π)) + ln(0.1²) ≈ −1.767 per element);
6. backward of loss.mean(), one Adam step; repeated for ``epochs`` (1 in the paper).

Episodes that end early (``paper-ppo-stop``: the policy's stop action) leave ``masks`` in the memory, (1, B) per
step, 1 where the episode was still running when the policy acted: the returns are normalised over those elements
only and the loss is their mean (:func:`ppo_loss`); the steps after an episode's end add nothing. Without masks
(the paper's fixed-length episodes) nothing of the above changes.

``tests/conformance/test_ppo_conformance.py`` checks the loss, the gradients and the weights after one update against a
record of the original implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from feature_nets.policy import PatchPolicy

__all__ = ["RETURN_NORM_EPS", "RolloutMemory", "discounted_returns", "make_optimizer", "normalise_masked_returns",
           "normalise_returns", "ppo_loss", "ppo_update"]

#: Added to the standard deviation when normalising returns (as in the original).
RETURN_NORM_EPS = 1e-5


@dataclass
class RolloutMemory:
    """What one rollout left for the update; one entry per focus step (T − 1 entries).

    Attributes:
        states: (B, C, h, w) feature maps the policy saw.
        actions: (B, 2) clamped actions taken.
        logprobs: (B,) log-probabilities of those actions under the acting policy.
        rewards: (1, B) rewards received after each step (p_t(y) − p_{t−1}(y)).
        masks: (1, B) 1.0 where the episode was running when the policy acted, 0.0 after its end (stopping
            policies); empty: every step counts (the paper's).
    """

    states: list[torch.Tensor] = field(default_factory=list)
    actions: list[torch.Tensor] = field(default_factory=list)
    logprobs: list[torch.Tensor] = field(default_factory=list)
    rewards: list[torch.Tensor] = field(default_factory=list)
    masks: list[torch.Tensor] = field(default_factory=list)

    def clear(self) -> None:
        """Forget the rollout (call after each update)."""
        self.states.clear()
        self.actions.clear()
        self.logprobs.clear()
        self.rewards.clear()
        self.masks.clear()


def make_optimizer(
    policy: PatchPolicy, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Adam:
    """Adam over all policy parameters, as the paper's stage 2."""
    return torch.optim.Adam(policy.parameters(), lr=lr, betas=betas)


def discounted_returns(rewards: list[torch.Tensor], gamma: float) -> torch.Tensor:
    """Returns G_t = r_t + γ·G_{t+1}, computed backwards; (1, B) per step → (T − 1, B)."""
    returns = []
    running = 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        returns.insert(0, running)
    return torch.cat(returns, dim=0)


def normalise_returns(returns: torch.Tensor) -> torch.Tensor:
    """(R − mean) / (std + 1e-5) over the whole (T − 1, B) tensor.

    The std is torch's default, the *unbiased* one (divides by N − 1), as in the original code. The
    conformance fixture (N = 12) tells the two apart: the unbiased std reproduces its loss and gradients to
    float precision, the biased one misses the loss by ~0.08 and the gradients by ~0.09.
    """
    return (returns - returns.mean()) / (returns.std() + RETURN_NORM_EPS)


def normalise_masked_returns(returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """:func:`normalise_returns` over the elements where ``mask`` is 1 (unbiased std; 0 elsewhere)."""
    n = mask.sum()
    mean = (returns * mask).sum() / n
    var = (((returns - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1.0)
    return (returns - mean) / (var.sqrt() + RETURN_NORM_EPS) * mask


def ppo_loss(
    policy: PatchPolicy,
    memory: RolloutMemory,
    gamma: float = 0.7,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar PPO loss of one epoch (the value the original back-propagates) and diagnostics.

    With ``memory.masks`` (episodes that ended early) every mean is over the running elements only.

    Returns:
        loss: 0-dim tensor, the mean over (T − 1, B) of the per-element loss.
        info: ``loss``, ``policy_loss``, ``value_loss`` (the MSE), ``entropy``, ``ratio`` (mean),
            ``clip_fraction`` (share of ratios outside [1 − clip, 1 + clip]).
    """
    device = next(policy.parameters()).device
    if memory.masks:
        return _masked_ppo_loss(policy, memory, gamma, clip, value_coef, entropy_coef, device)

    # 1-2. returns, normalised over everything
    returns = discounted_returns(memory.rewards, gamma).to(device)
    returns = normalise_returns(returns)

    # stored rollout, (T − 1, B, ...)
    old_states = torch.stack(memory.states, 0).to(device).detach()
    old_actions = torch.stack(memory.actions, 0).to(device).detach()
    old_logprobs = torch.stack(memory.logprobs, 0).to(device).detach()

    # 3. re-evaluate with the current weights
    logprobs, values, entropy = policy.evaluate(old_states, old_actions)

    # 4-5. clipped surrogate + value loss − entropy bonus
    ratios = torch.exp(logprobs - old_logprobs)
    advantages = returns - values.detach()
    surr1 = ratios * advantages
    surr2 = torch.clamp(ratios, 1 - clip, 1 + clip) * advantages
    policy_loss = -torch.min(surr1, surr2)
    value_loss = F.mse_loss(values, returns)  # scalar: mean over all (T − 1)·B elements
    per_element = policy_loss + value_coef * value_loss - entropy_coef * entropy
    loss = per_element.mean()

    with torch.no_grad():
        info = {
            "loss": loss.item(),
            "policy_loss": policy_loss.mean().item(),
            "value_loss": value_loss.item(),
            "entropy": entropy.mean().item(),
            "ratio": ratios.mean().item(),
            "clip_fraction": ((ratios - 1).abs() > clip).float().mean().item(),
        }
    return loss, info


def _masked_ppo_loss(policy: PatchPolicy, memory: RolloutMemory, gamma: float, clip: float, value_coef: float,
                     entropy_coef: float, device) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`ppo_loss` for episodes of different lengths: means over the elements ``memory.masks`` marks."""
    mask = torch.cat(memory.masks, dim=0).to(device).float()  # (T − 1, B)
    n = mask.sum().clamp(min=1.0)
    returns = normalise_masked_returns(discounted_returns(memory.rewards, gamma).to(device), mask)
    old_states = torch.stack(memory.states, 0).to(device).detach()
    old_actions = torch.stack(memory.actions, 0).to(device).detach()
    old_logprobs = torch.stack(memory.logprobs, 0).to(device).detach()
    logprobs, values, entropy = policy.evaluate(old_states, old_actions)
    ratios = torch.exp((logprobs - old_logprobs) * mask)  # 1 after an episode's end
    advantages = returns - values.detach()
    surr1 = ratios * advantages
    surr2 = torch.clamp(ratios, 1 - clip, 1 + clip) * advantages
    policy_loss = -torch.min(surr1, surr2)
    value_loss = (((values - returns) ** 2) * mask).sum() / n
    per_element = policy_loss + value_coef * value_loss - entropy_coef * entropy
    loss = (per_element * mask).sum() / n
    with torch.no_grad():
        info = {
            "loss": loss.item(),
            "policy_loss": ((policy_loss * mask).sum() / n).item(),
            "value_loss": value_loss.item(),
            "entropy": ((entropy * mask).sum() / n).item(),
            "ratio": ((ratios * mask).sum() / n).item(),
            "clip_fraction": ((((ratios - 1).abs() > clip).float() * mask).sum() / n).item(),
        }
    return loss, info


def ppo_update(
    policy: PatchPolicy,
    optimizer: torch.optim.Optimizer,
    memory: RolloutMemory,
    gamma: float = 0.7,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
    epochs: int = 1,
    before_step: Callable[[PatchPolicy], None] | None = None,
) -> dict[str, float]:
    """One PPO update from a rollout (``epochs`` passes over it; 1 in the paper).

    Args:
        before_step: called with the policy after backward and before each optimizer step, e.g. to read
            the gradients.

    Returns:
        The diagnostics of :func:`ppo_loss` for the last epoch.
    """
    policy.train()
    info: dict[str, float] = {}
    for _ in range(epochs):
        loss, info = ppo_loss(policy, memory, gamma, clip, value_coef, entropy_coef)
        optimizer.zero_grad()
        loss.backward()
        if before_step is not None:
            before_step(policy)
        optimizer.step()
    return info
