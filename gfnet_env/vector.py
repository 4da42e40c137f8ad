"""``GFNetVectorEnv``: N GFNet episodes as one batch on one device (a Gymnasium ``VectorEnv``).

Made by ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point", **kwargs)``. Autoreset mode
is ``SAME_STEP``: when an episode ends, ``step`` returns the new episode's first observation and puts the
last one in ``infos["final_obs"]`` (with ``infos["final_info"]``), as SB3 does. Sub-env i seeded with
``seed + i`` behaves exactly like a single :class:`~gfnet_env.env.GFNetEnv` reset with that seed.
"""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .checks import check_int, check_option_keys
from .core import GFNetCore, slice_obs
from .factory import make_core


class GFNetVectorEnv(VectorEnv):
    """The GFNet environment over N images at once (see :class:`gfnet_env.env.GFNetEnv` for spaces and reward).

    Args:
        num_envs: N.
        task, device, **kwargs: as for :class:`~gfnet_env.env.GFNetEnv`.
        core: an existing :class:`~gfnet_env.core.GFNetCore` (advanced; overrides the rest).

    ``close()`` (or ``with gym.make_vec(...) as venv:``) stops the image-loading threads.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, task: str = "imagenet", device: str = "auto",
                 render_mode: str | None = None, core: GFNetCore | None = None, **kwargs) -> None:
        self.core = core if core is not None else make_core(task, num_envs, device=device, **kwargs)
        self.num_envs = self.core.num_envs
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = render_mode
        self._confidences = [[] for _ in range(self.num_envs)]

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Start an episode in every env.

        Args:
            seed: None; an int s (env i gets s + i); or a list of N seeds (ints or None), one per env.
            options: ``{"indices": [i_0, …, i_{N-1}]}`` fixes each env's image (integer dataset positions).
        """
        options = check_option_keys(options, ("indices",))
        n = self.num_envs
        seeds = None
        if seed is not None:
            if isinstance(seed, (list, tuple, np.ndarray)):
                seeds = list(seed)
                if len(seeds) != n:
                    raise ValueError(f"expected {n} seeds (one per env), got {len(seeds)}")
                seeds = [None if s is None else check_int(s, f"seed[{i}]", minimum=0) for i, s in enumerate(seeds)]
            else:
                s0 = check_int(seed, "seed", minimum=0, hint=" (or a list of one seed per env)")
                seeds = [s0 + i for i in range(n)]
        super().reset(seed=None if seeds is None else seeds[0])
        for i, s in enumerate(seeds or []):
            self.core.seed_slot(i, s)
        indices = None
        if "indices" in options:
            if isinstance(options["indices"], (str, bytes)) or not hasattr(options["indices"], "__len__"):
                raise TypeError(f"options['indices'] must be a list of {n} image indices, got {options['indices']!r}")
            indices = list(options["indices"])
            if len(indices) != n:
                raise ValueError(f"options['indices'] needs {n} image indices, got {len(indices)}")
        slots = np.arange(n)
        self.core.reset_slots(slots, indices)
        info = self.core.reset_info(slots)
        self._confidences = [[float(c)] for c in info["confidence"]]
        _add_masks(info)
        return self.core.observe(), info

    def step(self, actions):
        core = self.core
        rewards, terminated, info = core.step(actions)
        for i, c in enumerate(info["confidence"]):
            self._confidences[i].append(float(c))
        info["is_success"] = info["correct"].copy()
        info["_is_success"] = terminated.copy()
        obs = core.observe()
        done = np.flatnonzero(terminated)
        if done.size:
            final_obs = np.empty(self.num_envs, dtype=object)
            final_info = {k: v.copy() for k, v in info.items()}
            for i in done:
                final_obs[i] = slice_obs(obs, i)
            core.autoreset(done, obs)
            reset_info = core.reset_info(done)
            for k, v in reset_info.items():
                info[k][done] = v
            for i, c in zip(done, reset_info["confidence"]):
                self._confidences[i] = [float(c)]
            info["final_obs"], info["_final_obs"] = final_obs, terminated.copy()
            info["final_info"], info["_final_info"] = final_info, terminated.copy()
        truncated = np.zeros(self.num_envs, dtype=bool)
        _add_masks(info)
        return obs, rewards, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        from .render import render_slot

        return [render_slot(self.core, i, self._confidences[i]) for i in range(self.num_envs)]

    def close_extras(self, **kwargs) -> None:
        """Release the image-loading threads (``VectorEnv.close`` calls this once)."""
        self.core.close()

    def __enter__(self) -> "GFNetVectorEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _add_masks(info: dict) -> None:
    """Gymnasium's vector info format: every key ``k`` has a boolean ``_k`` saying which envs carry it."""
    n = len(info["step"])
    for k in [k for k in info if not k.startswith("_")]:
        info.setdefault("_" + k, np.ones(n, dtype=bool))
