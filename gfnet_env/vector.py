"""``GFNetVectorEnv``: N GFNet episodes as one batch on one device (a Gymnasium ``VectorEnv``).

Made by ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point", **kwargs)``. Sub-env i seeded
with ``seed + i`` behaves exactly like a single :class:`~gfnet_env.env.GFNetEnv` reset with that seed, stepped
with the same actions — and like Gymnasium's own ``SyncVectorEnv`` over N such envs, in each autoreset mode
(``autoreset_mode=`` kwarg; Gymnasium 1.1+ semantics, ``metadata["autoreset_mode"]`` says which):

* ``SAME_STEP`` (default; what SB3-style loops expect): a step that ends an episode returns the *next*
  episode's first observation and reset info; the ended episode's last observation and step info (with
  ``is_success``) are in ``infos["final_obs"]`` (an object array, None where no episode ended) and
  ``infos["final_info"]`` (each key masked by ``_key`` = the envs that ended).
* ``NEXT_STEP``: a step that ends an episode returns its last observation and its step info (``is_success``
  at the top level); the *next* ``step`` resets that env instead of stepping it — its action is ignored, it
  returns the new first observation, reward 0, ``terminated`` False and the reset info.
* ``DISABLED``: nothing resets by itself; ``reset(options={"reset_mask": mask})`` (a (N,) bool numpy array)
  resets the envs where ``mask`` is True and leaves the others running. Stepping an ended env raises
  ``RuntimeError``.

``tensor_obs=True`` returns observations (and ``final_obs``) as torch tensors on the core's device — no host
copy, for policies on that device; actions may then be device tensors too. Rewards, terminations and infos
stay numpy arrays (Gymnasium's contract; they are a few numbers per env).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .checks import check_int, check_option_keys
from .core import GFNetCore
from .factory import make_core

__all__ = ["GFNetVectorEnv", "autoreset_mode_of"]


def autoreset_mode_of(mode: AutoresetMode | str) -> AutoresetMode:
    """An :class:`~gymnasium.vector.AutoresetMode` from itself, its value (``"NextStep"``) or its name
    (``"NEXT_STEP"``, any case), else a ``ValueError`` listing them."""
    if isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str):
        for m in AutoresetMode:
            if mode in (m.value, m.name) or mode.upper() == m.name or mode.lower() == m.value.lower():
                return m
    names = ", ".join(f"AutoresetMode.{m.name} ({m.value!r})" for m in AutoresetMode)
    raise ValueError(f"unknown autoreset_mode {mode!r}; choose one of {names}")


class GFNetVectorEnv(VectorEnv):
    """The GFNet environment over N images at once (see :class:`gfnet_env.env.GFNetEnv` for spaces and reward).

    Args:
        num_envs: N.
        task, device, **kwargs: as for :class:`~gfnet_env.env.GFNetEnv`.
        autoreset_mode: ``AutoresetMode.SAME_STEP`` (default), ``NEXT_STEP`` or ``DISABLED``, or its name
            (module docstring).
        tensor_obs: observations as torch tensors on the core's device instead of numpy arrays.
        core: an existing :class:`~gfnet_env.core.GFNetCore` (advanced; overrides the rest).

    ``close()`` (or ``with gym.make_vec(...) as venv:``) stops the image-loading threads.
    """

    metadata = {"render_modes": ["rgb_array"], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, task: str = "imagenet", device: str = "auto",
                 render_mode: str | None = None, core: GFNetCore | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP, tensor_obs: bool = False,
                 **kwargs) -> None:
        self.autoreset_mode = autoreset_mode_of(autoreset_mode)
        if not isinstance(tensor_obs, (bool, np.bool_)):
            raise TypeError(f"tensor_obs must be True or False, got {tensor_obs!r}")
        self.tensor_obs = bool(tensor_obs)
        self.core = core if core is not None else make_core(task, num_envs, device=device, **kwargs)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs = self.core.num_envs
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = render_mode
        self._confidences = [[] for _ in range(self.num_envs)]
        #: envs whose episode ended at the last step (NEXT_STEP resets them at the next one)
        self._ended = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None):
        """Start an episode in every env (or in the envs of ``options["reset_mask"]``).

        Args:
            seed: None; an int s (env i gets s + i); or a list of N seeds (ints or None), one per env.
            options: ``{"indices": [i_0, …, i_{N-1}]}`` fixes each env's image (integer dataset positions);
                ``{"reset_mask": mask}``, a (N,) bool numpy array, resets only the envs where it is True (the
                others keep their episode; their observation rows are returned unchanged and their infos are
                masked out), as Gymnasium's vector envs do.
        """
        options = check_option_keys(options, ("indices", "reset_mask"))
        n = self.num_envs
        mask = _reset_mask(options["reset_mask"], n) if "reset_mask" in options else np.ones(n, dtype=bool)
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
        slots = np.flatnonzero(mask)
        for i in slots if seeds is not None else ():
            self.core.seed_slot(int(i), seeds[i])
        indices = None
        if "indices" in options:
            if isinstance(options["indices"], (str, bytes)) or not hasattr(options["indices"], "__len__"):
                raise TypeError(f"options['indices'] must be a list of {n} image indices, got {options['indices']!r}")
            indices = list(options["indices"])
            if len(indices) != n:
                raise ValueError(f"options['indices'] needs {n} image indices, got {len(indices)}")
            indices = [indices[i] for i in slots]
        self.core.reset_slots(slots, indices)
        self._ended[slots] = False
        info = _scatter(self.core.reset_info(slots), slots, n)
        for i, c in zip(slots, info["confidence"][slots]):
            self._confidences[i] = [float(c)]
        return self._observe(), info

    def step(self, actions):
        """One focus step of every env (NEXT_STEP: envs whose episode ended at the last step reset instead)."""
        core, n = self.core, self.num_envs
        ended = np.flatnonzero(self._ended) if self.autoreset_mode == AutoresetMode.NEXT_STEP else np.empty(0, int)
        if ended.size:
            stepped = np.flatnonzero(~self._ended)
            r, term, info = core.step(_rows(actions, stepped), slots=stepped) if stepped.size else \
                (np.empty(0, np.float32), np.empty(0, bool), None)
            rewards, terminated = np.zeros(n, np.float32), np.zeros(n, bool)
            rewards[stepped], terminated[stepped] = r, term
            core.reset_slots(ended)
            reset_info = core.reset_info(ended)
            info = _merge(_scatter(reset_info, ended, n), None if info is None else _scatter(info, stepped, n))
            for i, c in zip(ended, reset_info["confidence"]):
                self._confidences[i] = [float(c)]
        else:
            stepped = np.arange(n)
            rewards, terminated, info = core.step(actions)
        for i in stepped:
            self._confidences[i].append(float(info["confidence"][i]))
        done = np.flatnonzero(terminated)
        obs = self._observe()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.size:
            final_obs = np.full(n, None, dtype=object)
            for i in done:
                final_obs[i] = _row(obs, i)
            final_info = _masked({**info, "is_success": info["correct"].copy()}, terminated)
            core.reset_slots(done)
            _write_rows(obs, done, self._observe(done))
            reset_info = core.reset_info(done)
            for k, v in reset_info.items():
                info[k][done] = v
            for i, c in zip(done, reset_info["confidence"]):
                self._confidences[i] = [float(c)]
            info["final_obs"], info["_final_obs"] = final_obs, terminated.copy()
            info["final_info"], info["_final_info"] = final_info, terminated.copy()
        elif done.size:  # NEXT_STEP / DISABLED: the ended episodes' step info, as a single env gives it
            info["is_success"] = np.where(terminated, info["correct"], False)
            info["_is_success"] = terminated.copy()
        self._ended = terminated.copy()
        truncated = np.zeros(n, dtype=bool)
        _add_masks(info)
        return obs, rewards, terminated, truncated, info

    def _observe(self, slots: np.ndarray | None = None):
        return self.core.observe(slots, as_tensor=self.tensor_obs)

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


def _reset_mask(mask, n: int) -> np.ndarray:
    """``options["reset_mask"]`` checked as Gymnasium checks it: a (N,) bool numpy array with a True."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"options['reset_mask'] must be a numpy array, got {type(mask).__name__}")
    if mask.shape != (n,):
        raise ValueError(f"options['reset_mask'] must have shape ({n},) (one bool per env), got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"options['reset_mask'] must have dtype bool, got {mask.dtype}")
    if not mask.any():
        raise ValueError("options['reset_mask'] has no True value: it must name at least one env to reset")
    return mask


def _rows(actions, slots: np.ndarray):
    """The actions of ``slots`` from a batch of N actions (numpy or a torch tensor, which stays on its device)."""
    if torch.is_tensor(actions):
        return actions[torch.as_tensor(slots, device=actions.device)]
    return np.asarray(actions)[slots]


def _row(obs, i: int):
    """Observation of env ``i`` from a batched observation (array, tensor or dict of them), as a copy."""
    if isinstance(obs, dict):
        return {k: _row(v, i) for k, v in obs.items()}
    return obs[i].clone() if torch.is_tensor(obs) else obs[i].copy()


def _write_rows(obs, slots: np.ndarray, rows) -> None:
    """Write ``rows`` (the observations of ``slots``) into the batch ``obs`` in place."""
    if isinstance(obs, dict):
        for k in obs:
            _write_rows(obs[k], slots, rows[k])
    elif torch.is_tensor(obs):
        obs[torch.as_tensor(slots, device=obs.device)] = rows
    else:
        obs[slots] = rows


def _scatter(info: dict, slots: np.ndarray, n: int) -> dict:
    """Info of ``slots`` (arrays of len(slots)) as arrays of N rows, zero elsewhere, each with its ``_key`` mask."""
    mask = np.zeros(n, dtype=bool)
    mask[slots] = True
    out = {}
    for k, v in info.items():
        full = np.zeros((n, *v.shape[1:]), dtype=v.dtype)
        full[slots] = v
        out[k], out["_" + k] = full, mask.copy()
    return out


def _merge(a: dict, b: dict | None) -> dict:
    """Two scattered infos of disjoint envs as one (values and masks of the envs each holds)."""
    if b is None:
        return a
    out = dict(a)
    for k in [k for k in b if not k.startswith("_")]:
        if k in out:
            out[k] = np.where(_expand(b["_" + k], b[k]), b[k], out[k])
            out["_" + k] = out["_" + k] | b["_" + k]
        else:
            out[k], out["_" + k] = b[k], b["_" + k]
    return out


def _expand(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _masked(info: dict, mask: np.ndarray) -> dict:
    """``info`` of all N envs kept where ``mask`` is True (zero elsewhere), each key with its ``_key`` mask."""
    out = {}
    for k, v in info.items():
        out[k] = np.where(_expand(mask, v), v, np.zeros((), dtype=v.dtype))
        out["_" + k] = mask.copy()
    return out


def _add_masks(info: dict) -> None:
    """Gymnasium's vector info format: every key ``k`` has a boolean ``_k`` saying which envs carry it."""
    n = len(info["step"])
    for k in [k for k in info if not k.startswith("_")]:
        info.setdefault("_" + k, np.ones(n, dtype=bool))
