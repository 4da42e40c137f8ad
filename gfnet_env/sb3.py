"""Stable-Baselines3 ``VecEnv`` over the batched GFNet core.

SB3 does not accept Gymnasium vector envs, so this adapter speaks SB3's own contract: ``reset()`` returns
only observations, ``step_wait`` auto-resets finished envs and stores the last observation in
``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]`` is set, observations are numpy,
and ``seed(s)`` seeds env i with s + i at the next reset. One batched step serves all N envs.
:func:`make_sb3_vec_env` wraps it in a ``VecMonitor`` (episode returns logged). The features extractors of
:mod:`gfnet_env.sb3_extractors` are exported here too.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from feature_nets.extras import reraise_missing

try:
    from stable_baselines3.common.vec_env import VecMonitor
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn
except ModuleNotFoundError as e:  # the sb3 extra is not installed: say so
    reraise_missing(e, "sb3", "gfnet_env.sb3 (the Stable-Baselines3 VecEnv)")

from .checks import check_option_keys
from .core import GFNetCore, slice_obs
from .sb3_extractors import FeatureMapExtractor, GFNetDictExtractor

__all__ = ["FeatureMapExtractor", "GFNetDictExtractor", "GFNetSB3VecEnv", "GFNetVecMonitor", "make_sb3_vec_env"]


class GFNetSB3VecEnv(VecEnv):
    """SB3 VecEnv whose N envs are the N slots of one :class:`~gfnet_env.core.GFNetCore`."""

    def __init__(self, core: GFNetCore) -> None:
        self.core = core
        self.render_mode = None  # read by VecEnv.__init__
        super().__init__(core.num_envs, core.observation_space, core.action_space)
        self._actions = None

    # --- SB3 contract -------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        n = self.num_envs
        for i, s in enumerate(self._seeds):
            if s is not None:
                self.core.seed_slot(i, int(s))
        self._reset_seeds()
        # set_options({"indices": [...]}) fixes the next reset's images (one index per env).
        options = check_option_keys(self._options[0] if self._options else None, ("indices",), "set_options")
        indices = options.get("indices")
        self._reset_options()
        self.core.reset_slots(np.arange(n), indices)
        return self.core.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        core = self.core
        rewards, terminated, info = core.step(self._actions)
        obs = core.observe()
        n = self.num_envs
        infos: list[dict[str, Any]] = [{k: (v[i].item() if np.ndim(v[i]) == 0 else v[i]) for k, v in info.items()}
                                       for i in range(n)]
        done = np.flatnonzero(terminated)
        if done.size:
            for i in done:
                infos[i]["terminal_observation"] = slice_obs(obs, i)
                infos[i]["TimeLimit.truncated"] = False
                infos[i]["is_success"] = bool(infos[i]["correct"])
            core.autoreset(done, obs)
        return obs, rewards, terminated.copy(), infos

    def close(self) -> None:
        """Release the core's image-loading threads (idempotent)."""
        self.core.close()

    def __enter__(self) -> "GFNetSB3VecEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- attribute plumbing SB3 uses (all envs share one core) ---------------------------------------
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        target = self.core if hasattr(self.core, attr_name) else self
        return [getattr(target, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.core, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        fn = getattr(self.core, method_name)
        return [fn(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        from .render import render_slot

        return [render_slot(self.core, i, None) for i in range(self.num_envs)]


class GFNetVecMonitor(VecMonitor):
    """SB3's ``VecMonitor`` (``infos[i]["episode"] = {"r": return, "l": length, "t": seconds}`` at each episode
    end, so SB3 logs ``rollout/ep_rew_mean`` / ``ep_len_mean``) that also works as a context manager and
    passes ``core`` through to the adapter."""

    @property
    def core(self) -> GFNetCore:
        return self.venv.core

    def __enter__(self) -> "GFNetVecMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_sb3_vec_env(env_id: str, n_envs: int = 1, seed: int | None = None, monitor: bool = True,
                     **kwargs) -> GFNetSB3VecEnv | GFNetVecMonitor:
    """An SB3 VecEnv of ``n_envs`` GFNet episodes in one batch, for a registered GFNet env id.

    Args:
        env_id: a registered GFNet env id.
        n_envs: episodes stepped as one batch.
        seed: env i draws its images with seed + i (None: unseeded).
        monitor: wrap in :class:`GFNetVecMonitor` (SB3's ``VecMonitor``) so episode returns, lengths and the
            success rate are logged; False returns the bare :class:`GFNetSB3VecEnv`.
        **kwargs: env arguments (``split``, ``obs_mode``, ``action_mode``, ``device``, …).

    Example (the recipe of ``sb3-ppo``; docs/sb3.md)::

        from stable_baselines3 import PPO
        env = gfnet_env.make_sb3_vec_env("GFNet-ClutteredFashionMNIST-v0", n_envs=64, split="train",
                                         obs_mode="feature_map", action_mode="grid")
        PPO("MlpPolicy", env, n_steps=64, batch_size=512, gamma=1.0,
            policy_kwargs={"features_extractor_class": FeatureMapExtractor}).learn(300_000)
    """
    from .factory import make_core, task_of

    device = kwargs.pop("device", "auto")
    vec = GFNetSB3VecEnv(make_core(task_of(env_id), n_envs, device=device, **kwargs))
    if seed is not None:
        vec.seed(seed)
    return GFNetVecMonitor(vec) if monitor else vec
