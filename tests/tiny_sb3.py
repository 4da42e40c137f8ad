"""The small SB3 settings of the tests' tiny trainings, as ``hparams`` over the recipe table.

GRU-state observations, SB3's own networks and constructor defaults, 64-step rollouts: the table's values are
replaced key by key (an env setting unset, a constructor argument set to SB3's default), so tiny runs stay quick
and the tests that check these settings (``obs_mode == "gru"``, continuous actions) keep them.
"""

from __future__ import annotations

import inspect
from typing import Any


def tiny_hparams(algo: str, algo_kwargs: dict | None = None, hparams: dict | None = None,
                 **given: Any) -> dict[str, Any]:
    """``hparams`` that turn ``RECIPES[algo]`` into the tiny settings; keys in ``algo_kwargs`` and ``given`` values
    that are not None (``n_envs=4``, ``grid_size=3``: the test's own arguments) are left to them, and the test's
    own ``hparams`` go over the result."""
    from agents.sb3.algorithms import algo_key, algorithm_class
    from agents.sb3.recipes import ENV_KEYS, OFF_POLICY, RECIPES

    algo = algo_key(algo)
    out: dict[str, Any] = dict(obs_mode="gru", action_mode="grid" if algo == "dqn" else "continuous",
                               action_range="symmetric", extractor="none")
    out["n_envs"] = 16
    if algo in ("ppo", "recurrent-ppo"):
        out.update(n_steps=64, batch_size=64)
    if algo in OFF_POLICY:
        out.update(buffer_size=100_000, buffer_bytes=2 * 10**9, learning_starts=100)
    defaults = inspect.signature(algorithm_class(algo)).parameters
    for key in RECIPES[algo]:
        if key in out or key == "steps":
            continue
        out[key] = None if key in ENV_KEYS else defaults[key].default  # unset env setting / SB3's default
    taken = set(algo_kwargs or {}) | {k for k, v in given.items() if v is not None}
    return {**{k: v for k, v in out.items() if k not in taken}, **(hparams or {})}


def with_tiny_hparams(algo: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` (train_sb3 keyword arguments) with ``hparams`` set by :func:`tiny_hparams` from its own values."""
    given = {k: kw.get(k) for k in ("n_envs", "obs_mode", "action_mode", "grid_size")}
    return {**kw, "hparams": tiny_hparams(algo, kw.get("algo_kwargs"), kw.get("hparams"), **given)}
