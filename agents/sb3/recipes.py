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
import math
import numbers
from typing import Any

from feature_nets.files import host_available_memory
from gfnet_env.settings import DEFAULT_GRID_SIZE

__all__ = ["ENV_KEYS", "RECIPES", "check_hparams", "check_model_memory", "policy_kwargs",
           "replay_buffer_size", "resolve_recipe", "sized_rollout", "split_recipe"]

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


def replay_buffer_size(requested: int, obs_bytes: int, buffer_bytes: int | None,
                       memory: int | None = None) -> int:
    """Transitions a replay buffer may hold: ``requested``, capped so that 2 · ``obs_bytes`` per transition
    (observation + next observation, float32) fits in ``buffer_bytes`` and in a quarter of ``memory`` (the
    available memory when None); never below 1,000 (nor above ``requested``)."""
    per = 2 * max(1, int(obs_bytes))
    caps = [int(requested)]
    if buffer_bytes:
        caps.append(int(buffer_bytes) // per)
    memory = host_available_memory() if memory is None else memory
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


# --- checked values -----------------------------------------------------------------------------------------
#: key -> (kind, low, high, what it is): ``float`` / ``int`` in [low, high]; a ``(`` / ``)`` in the bounds' text
#: marks an open end. SB3 itself checks few of these: ``gamma=-5`` trained, ``learning_rate=nan`` was an
#: AssertionError deep in the optimizer.
_RANGES: dict[str, tuple[str, str, str]] = {
    "learning_rate": ("float", "(0", "inf)", "the optimizer's step size"),
    "gamma": ("float", "(0", "1]", "the discount factor"),
    "gae_lambda": ("float", "[0", "1]", "the GAE parameter"),
    "clip_range": ("float", "(0", "inf)", "PPO's clipping parameter"),
    "clip_range_vf": ("float", "(0", "inf)", "PPO's value clipping parameter"),
    "ent_coef": ("float", "[0", "inf)", "the entropy coefficient"),
    "vf_coef": ("float", "[0", "inf)", "the value loss coefficient"),
    "max_grad_norm": ("float", "(0", "inf]", "the gradient clipping norm"),
    "target_kl": ("float", "(0", "inf)", "the KL limit of an update"),
    "tau": ("float", "(0", "1]", "the target networks' update rate"),
    "exploration_fraction": ("float", "[0", "1]", "the share of training over which epsilon decays"),
    "exploration_initial_eps": ("float", "[0", "1]", "the initial epsilon"),
    "exploration_final_eps": ("float", "[0", "1]", "the final epsilon"),
    "target_policy_noise": ("float", "[0", "inf)", "TD3's target smoothing noise"),
    "target_noise_clip": ("float", "[0", "inf)", "TD3's target noise clip"),
    "action_noise_std": ("float", "[0", "inf)", "the exploration noise's standard deviation"),
    "n_steps": ("int", "[1", "inf)", "env steps per env and rollout"),
    "batch_size": ("int", "[1", "inf)", "the minibatch size"),
    "n_epochs": ("int", "[1", "inf)", "passes over each rollout"),
    "buffer_size": ("int", "[1", "inf)", "the replay buffer's transitions"),
    "learning_starts": ("int", "[0", "inf)", "env steps before learning starts"),
    "gradient_steps": ("int", "[-1", "inf)", "gradient steps per collection (-1: as many as env steps)"),
    "target_update_interval": ("int", "[1", "inf)", "env steps between target network updates"),
    "policy_delay": ("int", "[1", "inf)", "critic updates per actor update"),
    "sde_sample_freq": ("int", "[-1", "inf)", "steps between gSDE noise draws"),
    "n_envs": ("int", "[1", "inf)", "episodes stepped as one batch"),
    "grid_size": ("int", "[1", "inf)", "G of grid actions"),
    "rollout_steps": ("int", "[1", "inf)", "env steps per update"),
    "buffer_bytes": ("int", "[1", "inf)", "the replay buffer's byte cap"),
}
#: keys whose value may also be a schedule (a callable of the remaining progress) in Python, or a SAC string
_SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf")


def _in_range(value: float, low: str, high: str) -> bool:
    lo, hi = float(low[1:]), float(high[:-1])
    return (value > lo if low[0] == "(" else value >= lo) and (value < hi if high[-1] == ")" else value <= hi)


def check_hparams(values: dict[str, Any]) -> None:
    """Refuse out-of-range or mistyped recipe values and constructor arguments before anything is built: ``gamma``
    in (0, 1], ``learning_rate`` finite and > 0, counts positive integers, … (:data:`_RANGES`), ``net_arch`` a list of
    positive layer widths (or a dict of such lists). None leaves a value to its default.

    Raises:
        ValueError: naming the key, its meaning, the range and the value given (one line on the command line).
    """
    for key, value in values.items():
        if value is None or key not in _RANGES and key != "net_arch":
            continue
        if key == "net_arch":
            _check_net_arch(value)
            continue
        kind, low, high, meaning = _RANGES[key]
        if key in _SCHEDULES and callable(value) or key == "ent_coef" and isinstance(value, str) \
                and value.startswith("auto"):
            continue  # a schedule (Python API), or SAC's "auto" / "auto_0.1"
        ok_type = not isinstance(value, bool) and isinstance(value, numbers.Integral if kind == "int" else
                                                              numbers.Real)
        if not ok_type or not (kind == "int" or math.isfinite(value) or high == "inf]") or \
                not _in_range(float(value), low, high):
            want = ("an integer" if kind == "int" else "a number") + f" in {low}, {high}"
            raise ValueError(f"hparams: {key} ({meaning}) must be {want}, got {value!r:.60}")


def _check_net_arch(value: Any) -> None:
    def widths(v) -> bool:
        return isinstance(v, (list, tuple)) and all(isinstance(w, numbers.Integral) and not isinstance(w, bool)
                                                    and w >= 1 for w in v)

    if not (widths(value) or isinstance(value, dict) and value and all(isinstance(k, str) and widths(v)
                                                                        for k, v in value.items())):
        raise ValueError(f"hparams: net_arch must be a list of positive layer widths ([64, 64]) or a dict of such "
                         f"lists ({{'pi': [64], 'vf': [64]}}), got {value!r:.80}")


def check_model_memory(algo: str, kwargs: dict[str, Any], settings: dict[str, Any], obs_floats: int,
                       action_dim: int, n_envs: int, net_free: int | None, host_free: int | None) -> None:
    """Refuse settings whose networks or rollout buffer exceed free memory, before SB3 allocates them (as the env
    refuses ``num_envs`` whose buffers do not fit): ``net_arch=[200000, 200000]`` or ``n_steps=10**12`` were
    allocator errors (or an exhausted machine). The estimates are lower bounds: the weights of each network
    (float32; the gradient and Adam's moments come on top), and an on-policy rollout of ``n_steps · n_envs``
    observations, actions and five scalars (float32).

    Args:
        obs_floats: the flattened observation's size; action_dim: the action's size (1 for a grid cell).
        net_free, host_free: free bytes where the networks live and on the host (None: unknown, not checked).

    Raises:
        ValueError: with the estimate and the free memory.
    """
    arch = settings.get("net_arch")
    extractor = settings.get("extractor") or "none"
    first = int(obs_floats) if extractor == "none" else 256
    nets = list(arch.values()) if isinstance(arch, dict) else [arch, arch] if arch else []
    weights = sum(sum(a * b for a, b in zip([first, *net], net)) + net[-1] for net in nets if net) * 4
    if net_free is not None and weights > net_free:
        raise ValueError(f"net_arch={arch} needs at least {weights / 1e9:.1f} GB for its weights alone (gradients and "
                         f"optimizer state come on top), but only {net_free / 1e9:.1f} GB is free; use smaller layers")
    if algo not in OFF_POLICY and kwargs.get("n_steps") is not None:
        rollout = int(kwargs["n_steps"]) * int(n_envs) * (int(obs_floats) + int(action_dim) + 5) * 4
        if host_free is not None and rollout > host_free:
            fits = max(1, host_free // max(1, int(n_envs) * (int(obs_floats) + int(action_dim) + 5) * 4))
            raise ValueError(f"n_steps={kwargs['n_steps']} with n_envs={n_envs} needs about {rollout / 1e9:.1f} GB for "
                             f"the rollout buffer, but only {host_free / 1e9:.1f} GB is free; use at most about "
                             f"n_steps={fits}")
