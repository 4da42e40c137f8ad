"""The Stable-Baselines3 algorithms this project wraps, by registry name, and the actions each accepts."""

from __future__ import annotations

import math
from typing import Any

from feature_nets.extras import require

#: registry name -> (module, class) of the SB3 algorithm.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "ppo": ("stable_baselines3", "PPO"),
    "sac": ("stable_baselines3", "SAC"),
    "a2c": ("stable_baselines3", "A2C"),
    "td3": ("stable_baselines3", "TD3"),
    "dqn": ("stable_baselines3", "DQN"),
    "recurrent-ppo": ("sb3_contrib", "RecurrentPPO"),
}


#: action modes each algorithm supports (the first is its default).
ACTION_MODES = {"ppo": ("continuous", "grid"), "a2c": ("continuous", "grid"), "recurrent-ppo": ("continuous", "grid"),
                "sac": ("continuous",), "td3": ("continuous",), "dqn": ("grid",)}


def algo_key(algo: str) -> str:
    """``"sb3-ppo"`` / ``"ppo"`` / ``"PPO"`` → ``"ppo"``."""
    key = algo.lower().removeprefix("sb3-").replace("_", "-")
    if key not in ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; choose one of {['sb3-' + k for k in ALGORITHMS]}")
    return key


def algorithm_class(algo: str):
    """The SB3 class of ``algo``, imported now (a :class:`~feature_nets.extras.MissingExtraError` naming the
    ``sb3`` extra when Stable-Baselines3 or sb3-contrib is not installed)."""
    key = algo_key(algo)
    module, cls = ALGORITHMS[key]
    return getattr(require(module, "sb3", f"the sb3-{key} agent"), cls)


def settings_from_spaces(observation_space, action_space) -> dict[str, Any]:
    """Env settings (``obs_mode``, ``action_mode``, ``grid_size``, ``action_range``, ``stop_action``) an SB3 model's
    spaces imply.

    ``Discrete(G·G)`` is a G×G grid and ``Discrete(G·G + 1)`` a G×G grid with the stop action (``Discrete(50)``:
    G = 7 and stop; no count is both, since G·G + 1 is never a square for G ≥ 1); a ``Box`` of 3 components is
    continuous with the stop action, of 2 without.
    ``stop_action`` is in the result only when True.
    """
    from gymnasium import spaces

    if isinstance(observation_space, spaces.Dict):
        obs_mode = "dict"
    elif len(observation_space.shape) == 3:
        obs_mode = "feature_map"
    else:
        obs_mode = "gru"
    out: dict[str, Any] = {"obs_mode": obs_mode}
    if isinstance(action_space, spaces.Discrete):
        n = int(action_space.n)
        g = math.isqrt(n)
        if g * g == n:
            out.update(action_mode="grid", grid_size=g)
        elif n > 1 and math.isqrt(n - 1) ** 2 == n - 1:
            out.update(action_mode="grid", grid_size=math.isqrt(n - 1), stop_action=True)
        else:
            raise ValueError(f"a Discrete({n}) action space is neither a G×G grid nor a G×G grid with the stop "
                             "action (G·G + 1)")
    else:
        shape = tuple(action_space.shape)
        if shape not in ((2,), (3,)):
            raise ValueError(f"a continuous action space of shape {shape} is neither a (row, col) location (2,) "
                             "nor a location with a stop component (3,)")
        out["action_mode"] = "continuous"
        out["action_range"] = "symmetric" if float(action_space.low.min()) < 0 else "unit"
        if shape == (3,):
            out["stop_action"] = True
    return out
