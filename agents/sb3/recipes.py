"""Training recipes of the Stable-Baselines3 agents: one table, every value overridable.

:data:`RECIPES` holds, per algorithm, what ``gfnet train-agent --agent sb3-X`` trains with unless told otherwise
(each row is the counterpart of an rl-zoo3 ``hyperparams/*.yml`` entry). Keys:

============== ====================================================================================================
key            meaning
============== ====================================================================================================
steps          env steps (the CLI's ``--steps`` default)
n_envs         episodes stepped as one batch
obs_mode       ``gru`` / ``feature_map`` / ``dict`` (env observation)
action_mode    ``grid`` (Discrete(G²)) or ``continuous`` (Box of 2)
grid_size      G of grid actions
action_range   ``symmetric`` ([−1, 1], the env maps it to [0, 1]): a Gaussian policy's initial mean 0 is the
               image centre, not the top-left corner, and half its samples are not clipped to an edge
extractor      ``feature_map`` (:class:`gfnet_env.sb3.FeatureMapExtractor`), ``dict``
               (:class:`gfnet_env.sb3.GFNetDictExtractor`) or ``none`` (SB3's default: flatten)
net_arch       SB3 ``policy_kwargs["net_arch"]`` (after the extractor)
rollout_steps  on-policy only: env steps per update; ``n_steps = max(4, rollout_steps // n_envs)`` unless
               ``n_steps`` is given, so 64 envs do not collect 131,072 steps per update
buffer_bytes   off-policy only: cap of the replay buffer in bytes (obs + next obs per transition, float32);
               also capped at a quarter of the available memory
action_noise_std  TD3/SAC: standard deviation of Gaussian exploration noise added to each action (in the
               [−1, 1] action scale); SB3's TD3 adds none by default, so without it TD3 explores only
               through its initial random steps
(other keys)   constructor arguments of the algorithm (``learning_rate``, ``gamma``, ``batch_size``, …)
============== ====================================================================================================

γ = 1 fits the 4-step episode of the embedded task: with the default ``confidence_gain`` reward the return is
then p_T(y) − p_0(y), exactly the final confidence gain. Measured results are in docs/sb3.md.

Example::

    resolve_recipe("sac", n_envs=8, hparams={"learning_rate": 1e-4})
"""

from __future__ import annotations

import copy
from typing import Any

from gfnet_env.settings import DEFAULT_GRID_SIZE

__all__ = ["ENV_KEYS", "RECIPES", "available_memory", "policy_kwargs", "replay_buffer_size",
           "resolve_recipe", "sized_rollout", "split_recipe"]

OFF_POLICY = ("sac", "td3", "dqn")
#: Keys that are env settings or training options, not algorithm arguments.
ENV_KEYS = ("steps", "n_envs", "obs_mode", "action_mode", "grid_size", "action_range", "extractor", "net_arch",
            "activation_fn", "rollout_steps", "buffer_bytes", "action_noise_std")
_GRID = dict(obs_mode="feature_map", action_mode="grid", grid_size=DEFAULT_GRID_SIZE, extractor="feature_map")
_GRID_MLP = dict(_GRID, extractor="none")  # SB3's flatten + MLP (the shipped sb3-ppo)
_CONT = dict(obs_mode="feature_map", action_mode="continuous", action_range="symmetric", extractor="feature_map")

#: The recipe table (see the module docstring for the keys).
RECIPES: dict[str, dict[str, Any]] = {
    # ppo: the shipped agent's recipe (stage sb3 of gfnet_cli/default_task.py): the feature map shows where the
    # item is, and one of 49 grid cells is easier to learn than a 2-D Gaussian mean (the alternatives tried are
    # in gfnet_env/weights/MODEL_CARD.md); the small value net keeps the shipped zip small
    "ppo": dict(steps=300_000, n_envs=64, **_GRID_MLP, net_arch={"pi": [256, 256], "vf": [64, 64]},
                activation_fn="relu", rollout_steps=4096, batch_size=512, gamma=0.9),
    # a2c: γ = 1 and an entropy bonus, which beat γ = 0.9 without one; a longer rollout or a lower learning rate
    # did worse (the runs compared: docs/sb3.md)
    "a2c": dict(steps=300_000, n_envs=64, **_GRID_MLP, net_arch={"pi": [256, 256], "vf": [64, 64]},
                activation_fn="relu", rollout_steps=512, learning_rate=7e-4, gamma=1.0, ent_coef=0.01),
    "recurrent-ppo": dict(steps=200_000, n_envs=64, **_GRID_MLP,
                          net_arch={"pi": [256, 256], "vf": [64, 64]}, activation_fn="relu", rollout_steps=4096,
                          batch_size=512, gamma=0.9),
    "dqn": dict(steps=30_000, n_envs=16, **_GRID, net_arch=[64, 64], buffer_bytes=512 * 2**20, buffer_size=20_000,
                learning_starts=1_000, batch_size=128, learning_rate=3e-4, gamma=1.0, train_freq=1,
                gradient_steps=2, target_update_interval=1_000, exploration_fraction=0.3,
                exploration_final_eps=0.05),
    "sac": dict(steps=20_000, n_envs=16, **_CONT, net_arch=[256, 256], buffer_bytes=512 * 2**20,
                buffer_size=15_000, learning_starts=1_000, batch_size=128, learning_rate=3e-4, gamma=1.0,
                train_freq=1, gradient_steps=1, ent_coef="auto_0.01"),
    # td3: Gaussian exploration noise (SB3 adds none), which lifts it well above no noise (docs/sb3.md)
    "td3": dict(steps=20_000, n_envs=16, **_CONT, net_arch=[256, 256], buffer_bytes=512 * 2**20,
                buffer_size=15_000, learning_starts=1_000, batch_size=128, learning_rate=3e-4, gamma=1.0,
                train_freq=1, gradient_steps=1, action_noise_std=0.1),
}


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of /proc/meminfo), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def replay_buffer_size(requested: int, obs_bytes: int, buffer_bytes: int | None,
                       memory: int | None = None) -> int:
    """Transitions a replay buffer may hold: ``requested``, capped so that 2 · ``obs_bytes`` per transition
    (observation + next observation, float32) fits in ``buffer_bytes`` and in a quarter of ``memory`` (the
    available memory when None); never below 1,000 (nor above ``requested``)."""
    per = 2 * max(1, int(obs_bytes))
    caps = [int(requested)]
    if buffer_bytes:
        caps.append(int(buffer_bytes) // per)
    memory = available_memory() if memory is None else memory
    if memory:
        caps.append(int(memory) // 4 // per)
    return max(min(1_000, int(requested)), min(caps))


def sized_rollout(kwargs: dict[str, Any], rollout_steps: int | None, n_envs: int) -> None:
    """On-policy: set ``n_steps`` from ``rollout_steps`` and ``n_envs`` (when not given) and keep
    ``batch_size`` ≤ ``n_steps · n_envs`` (in place)."""
    if "n_steps" not in kwargs and rollout_steps:
        kwargs["n_steps"] = max(4, int(rollout_steps) // max(1, n_envs))
    if "batch_size" in kwargs and "n_steps" in kwargs:
        kwargs["batch_size"] = min(int(kwargs["batch_size"]), int(kwargs["n_steps"]) * n_envs)


def resolve_recipe(algo: str, hparams: dict[str, Any] | None = None, **given: Any) -> dict[str, Any]:
    """The recipe of ``algo``, then the ``given`` values that are not None (``n_envs=…``, ``obs_mode=…`` from
    function arguments), then ``hparams`` (the CLI's ``--hparams key=value``). Returns a new dict with every key of
    the table."""
    if algo not in RECIPES:
        raise ValueError(f"no recipe for {algo!r}; recipes: {sorted(RECIPES)}")
    out = copy.deepcopy(RECIPES[algo])
    out.update({k: v for k, v in given.items() if v is not None})
    out.update(hparams or {})
    if out.get("action_mode") == "grid":
        out.pop("action_range", None)
    return out


def split_recipe(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings: the :data:`ENV_KEYS` entries, algorithm constructor kwargs: the rest)."""
    settings = {k: v for k, v in values.items() if k in ENV_KEYS}
    return settings, {k: v for k, v in values.items() if k not in ENV_KEYS}


def policy_kwargs(settings: dict[str, Any], algo_kwargs: dict[str, Any]) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from the recipe's ``extractor`` / ``net_arch`` / ``activation_fn`` (strings
    ``relu`` / ``tanh`` accepted; ReLU by default) merged under an explicit ``algo_kwargs["policy_kwargs"]``."""
    import torch

    from gfnet_env.sb3_extractors import FeatureMapExtractor, GFNetDictExtractor

    out: dict[str, Any] = {}
    extractor = settings.get("extractor") or "none"
    if extractor not in ("none", "feature_map", "dict"):
        raise ValueError(f"extractor must be 'none', 'feature_map' or 'dict', got {extractor!r}")
    if extractor != "none":
        obs = settings.get("obs_mode")
        if extractor != obs:
            raise ValueError(f"extractor {extractor!r} needs obs_mode={extractor!r}, not {obs!r} "
                             f"(pass --hparams extractor=none for SB3's default)")
        out["features_extractor_class"] = FeatureMapExtractor if extractor == "feature_map" else GFNetDictExtractor
    if settings.get("net_arch") is not None:
        out["net_arch"] = settings["net_arch"]
    act = settings.get("activation_fn", "relu" if settings.get("net_arch") is not None else None)
    if isinstance(act, str):
        acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
        if act not in acts:
            raise ValueError(f"activation_fn must be one of {sorted(acts)}, got {act!r}")
        act = acts[act]
    if act is not None:
        out["activation_fn"] = act
    out.update(algo_kwargs.get("policy_kwargs") or {})
    return out
