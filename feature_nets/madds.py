"""Multiply-add accounting for a GFNet, per component and cumulative per step.

Counted once, on CPU, with torch's ``FlopCounterMode`` (which reports FLOPs = 2 × multiply-adds). On CPU the
GRU decomposes into matrix products the counter sees; cuDNN's fused GRU on GPU would be missed, hence the
copy to CPU. Counts cover convolutions and matrix products (what the GFNet papers count); element-wise
operations, pooling and the glance's interpolation are not multiply-adds and are left out.
"""

from __future__ import annotations

import copy

import torch
from torch.utils.flop_counter import FlopCounterMode

from .gfnet import GFNet


def count_module_madds(fn, *args) -> int:
    """Multiply-adds of one call ``fn(*args)`` (on whatever device the args are; use CPU for GRUs)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops()) // 2


def count_madds(model: GFNet, T: int | None = None) -> dict:
    """Multiply-adds of each component of one look, and the cumulative total after each step.

    Args:
        model: any GFNet (its weights do not matter; a CPU copy is counted).
        T: number of steps for ``cumulative`` (default: the model's).

    Returns:
        dict with ints ``glance`` (global encoder + its head when it gives the step-0 logits),
        ``focus`` (local encoder), ``classifier_step``, ``policy_step`` (0 without a policy), and
        ``cumulative``: list of T totals, entry t = multiply-adds of a sequence of t+1 steps (the released
        checkpoints' ``flops``). ``per_step``: list of T per-step costs (step 0 = glance + classifier).
        ``env_per_step`` / ``env_cumulative``: the same without the policy — what a GFNet environment charges
        every agent for its looks (an agent's own decision cost is counted apart).
    """
    T = model.T if T is None else T
    m = copy.deepcopy(model).cpu().eval()
    p = m.patch_size
    x = torch.zeros(1, 3, p, p)
    glance = count_module_madds(m.global_encoder, x)
    with torch.no_grad():
        pooled, fmap = m.global_encoder(x)
    if m.spec.config.step0_head == "encoder":
        glance += count_module_madds(m.global_encoder.head, pooled)
    focus = count_module_madds(m.local_encoder, x)
    state = m.classifier.initial_state(1)
    # The classifier's cost at look 2 (the cascade's heads grow with the look index; the GRU's do not).
    classifier_steps = []
    with torch.no_grad():
        for t in range(T):
            classifier_steps.append(count_module_madds(m.classifier.step, pooled, state, t))
            _, state = m.classifier.step(pooled, state, t)
    policy = 0
    if m.policy is not None:
        h = m.policy.initial_state(1)
        policy = count_module_madds(m.policy.step, fmap, h)
    per_step = [glance + classifier_steps[0]] + [focus + policy + classifier_steps[t] for t in range(1, T)]
    env_per_step = [c - (policy if t else 0) for t, c in enumerate(per_step)]
    return {
        "glance": glance,
        "focus": focus,
        "classifier_step": max(classifier_steps),
        "classifier_steps": classifier_steps,
        "policy_step": policy,
        "per_step": per_step,
        "cumulative": _running_total(per_step),
        "env_per_step": env_per_step,
        "env_cumulative": _running_total(env_per_step),
    }


def _running_total(values: list[int]) -> list[int]:
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out
