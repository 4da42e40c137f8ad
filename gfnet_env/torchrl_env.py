"""The GFNet env as a TorchRL environment: the batched core as an ``EnvBase`` whose tensors stay on its device.

:func:`make_torchrl_env` builds a :class:`~gfnet_env.core.GFNetCore` of N slots (the same factory as ``gym.make``)
and wraps it in :class:`GFNetTorchRLEnv`, a ``torchrl.envs.EnvBase`` with ``batch_size=(N,)`` on the core's
device. Observations are read from the core's buffers as device tensors (``core.observe(as_tensor=True)``) and
actions go to the core as device tensors, so a policy on the same device never sees a host copy of an
observation; per step, only the rewards, terminations and infos (a few numbers per env) cross to the host and
back, the one device→host copy every core step makes anyway.

Why a native ``EnvBase`` rather than TorchRL's ``GymWrapper`` over :class:`~gfnet_env.vector.GFNetVectorEnv`: the
wrapper reads Gymnasium's numpy contract (it converts every observation, reward and info field with
``torch.as_tensor`` and reads the autoreset mode's info layout), while the core already holds the batch on the
device; a native env also maps every space, the stop action and the info fields exactly
(benchmarks/env_speed_torchrl.py measures the two; figures in benchmarks/RESULTS.md).

Keys (all with leading batch dimension N):

============================ ===========================================================================================
key                          content
============================ ===========================================================================================
``observation``              ``obs_mode="gru"`` / ``"feature_map"``: the Gymnasium observation (float32)
``state``, ``feature_map``,  ``obs_mode="dict"``: the Dict space's entries (``step`` int64 categorical, the rest float32)
``step``, ``locations``,
``box``
``action``                   grid: int64 cell index, categorical over G² (+1 with the stop action, G² = stop);
                             continuous: float32 (2,) ((3,) with the stop action) in the env's action box
``reward``                   (1,) float32
``done``, ``terminated``,    (1,) bool; ``truncated`` is always False (the horizon is part of the task)
``truncated``
``info``                     the Gymnasium info fields: ``prediction``, ``confidence``, ``correct``, ``step``, ``madds``,
                             ``image_index``, ``stopped`` (after a reset: the glance's)
============================ ===========================================================================================

Episodes end as in Gymnasium; TorchRL resets the ended envs (``"_reset"`` mask) and only those, so
``env.rollout(..., break_when_any_done=False)`` and TorchRL's collectors run the batch continuously.
``set_seed(s)`` seeds env i with s + i, as ``GFNetVectorEnv.reset(seed=s)`` does: the same seed gives the same
images, observations and rewards as the Gymnasium vector env (tests/gfnet_env/test_torchrl_env.py).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from feature_nets.extras import reraise_missing

try:
    from tensordict import TensorDict, TensorDictBase
    from torchrl.data import Bounded, Categorical, Composite, TensorSpec, Unbounded
    from torchrl.envs import EnvBase
except ModuleNotFoundError as e:  # the torchrl extra is not installed: say so
    reraise_missing(e, "torchrl", "gfnet_env.torchrl_env (the TorchRL environment)")

from .core import GFNetCore

__all__ = ["GFNetTorchRLEnv", "make_torchrl_env", "spec_of"]

#: Info fields carried under the ``info`` key, with their torch dtypes.
INFO_FIELDS: dict[str, torch.dtype] = {
    "prediction": torch.int64, "confidence": torch.float32, "correct": torch.bool, "step": torch.int64,
    "madds": torch.float64, "image_index": torch.int64, "stopped": torch.bool,
}


def spec_of(space: spaces.Space, batch: tuple[int, ...], device: torch.device) -> TensorSpec:
    """The TorchRL spec of a Gymnasium space, with leading ``batch`` dimensions.

    ``Box`` → ``Bounded`` (``Unbounded`` where every bound is infinite), ``Discrete(n)`` → ``Categorical(n)`` (int64
    indices, not one-hot), ``Dict`` → ``Composite`` of its entries.
    """
    if isinstance(space, spaces.Dict):
        return Composite({k: spec_of(s, batch, device) for k, s in space.spaces.items()}, shape=batch, device=device)
    if isinstance(space, spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"Discrete spaces starting at {space.start} have no TorchRL categorical spec here")
        return Categorical(int(space.n), shape=batch, dtype=torch.int64, device=device)
    if isinstance(space, spaces.Box):
        dtype = torch.from_numpy(np.zeros(0, dtype=space.dtype)).dtype
        shape = (*batch, *space.shape)
        if np.all(np.isinf(space.low)) and np.all(np.isinf(space.high)):
            return Unbounded(shape=shape, dtype=dtype, device=device)
        low = torch.as_tensor(np.broadcast_to(space.low, space.shape).copy(), dtype=dtype).expand(shape)
        high = torch.as_tensor(np.broadcast_to(space.high, space.shape).copy(), dtype=dtype).expand(shape)
        return Bounded(low=low.clone(), high=high.clone(), shape=shape, dtype=dtype, device=device)
    raise TypeError(f"no TorchRL spec for the Gymnasium space {space!r}")


class GFNetTorchRLEnv(EnvBase):
    """N GFNet episodes as a TorchRL env (module docstring: keys, seeding, resets).

    Args:
        core: the batched core (:func:`make_torchrl_env` builds one from an env id); closed with the env.
        seed: seed the slots now (env i gets seed + i); None leaves them as they are.
    """

    def __init__(self, core: GFNetCore, seed: int | None = None) -> None:
        super().__init__(device=core.device, batch_size=torch.Size([core.num_envs]))
        self.core = core
        n, dev = core.num_envs, core.device
        batch = (n,)
        obs = spec_of(core.observation_space, batch, dev)
        self._obs_keys = list(obs.keys()) if isinstance(obs, Composite) else ["observation"]
        entries = dict(obs.items()) if isinstance(obs, Composite) else {"observation": obs}
        info = Composite({k: (Categorical(2, shape=batch, dtype=torch.bool, device=dev) if dt == torch.bool
                              else Unbounded(shape=batch, dtype=dt, device=dev)) for k, dt in INFO_FIELDS.items()},
                         shape=batch, device=dev)
        self.observation_spec = Composite(**entries, info=info, shape=batch, device=dev)
        self.action_spec = spec_of(core.action_space, batch, dev)
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=dev)
        flag = Categorical(2, shape=(n, 1), dtype=torch.bool, device=dev)
        self.done_spec = Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(), shape=batch,
                                   device=dev)
        self._ended = np.zeros(n, dtype=bool)
        if seed is not None:
            self._set_seed(seed)

    # --- EnvBase ---------------------------------------------------------------------------------------
    def _set_seed(self, seed: int | None) -> None:
        """Seed env i's image draws with seed + i (None: fresh entropy for every env)."""
        for i in range(self.core.num_envs):
            self.core.seed_slot(i, None if seed is None else int(seed) + i)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        n = self.core.num_envs
        mask = None if tensordict is None else tensordict.get("_reset", None)
        slots = np.arange(n) if mask is None else np.flatnonzero(mask.reshape(n).cpu().numpy())
        self.core.reset_slots(slots)
        self._ended[slots] = False
        info = self.core.reset_info(np.arange(n))  # rows not reset: their current values (TorchRL keeps its own)
        flags = torch.as_tensor(self._ended, device=self.device).reshape(n, 1)
        return self._observation(info, done=flags, terminated=flags.clone(),
                                 truncated=torch.zeros(n, 1, dtype=torch.bool, device=self.device))

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        rewards, terminated, info = self.core.step(tensordict.get("action"))
        self._ended = terminated.copy()
        n, dev = self.core.num_envs, self.device
        term = torch.as_tensor(terminated, device=dev).reshape(n, 1)
        out = self._observation(info, done=term, terminated=term.clone(),
                                truncated=torch.zeros(n, 1, dtype=torch.bool, device=dev))
        out.set("reward", torch.as_tensor(rewards, device=dev).reshape(n, 1))
        return out

    def _observation(self, info: dict, **flags: torch.Tensor) -> TensorDict:
        """The observation entries (device tensors from the core's buffers), ``info`` and the done flags."""
        dev = self.device
        obs = self.core.observe(as_tensor=True)
        entries = obs if isinstance(obs, dict) else {"observation": obs}
        entries = {k: (v.float() if v.is_floating_point() else v) for k, v in entries.items()}
        infos = TensorDict({k: torch.as_tensor(np.asarray(info[k]), device=dev).to(dt)
                            for k, dt in INFO_FIELDS.items()}, batch_size=self.batch_size, device=dev)
        return TensorDict({**entries, "info": infos, **flags}, batch_size=self.batch_size, device=dev)

    def close(self, *, raise_if_closed: bool = True) -> None:
        """Release the core's image-loading threads (idempotent)."""
        self.core.close()
        super().close(raise_if_closed=False)


def make_torchrl_env(env_id: str, num_envs: int = 1, device: str = "auto", seed: int | None = None,
                     **env_kwargs) -> GFNetTorchRLEnv:
    """A TorchRL env of ``num_envs`` GFNet episodes in one batch, for a registered GFNet env id.

    Args:
        env_id: a registered GFNet env id (``"GFNet-ClutteredFashionMNIST-v0"``).
        num_envs: N, the env's batch size.
        device: torch device of the core (and of every tensor of the env), or ``"auto"``.
        seed: env i draws its images with seed + i (None: unseeded; ``env.set_seed(s)`` later does the same).
        **env_kwargs: env arguments (``split``, ``obs_mode``, ``action_mode``, ``stop_action``, …), as for
            ``gym.make``.

    Example (examples/torchrl_ppo.py trains PPO on it)::

        env = gfnet_env.make_torchrl_env("GFNet-ClutteredFashionMNIST-v0", num_envs=64, split="train",
                                         obs_mode="feature_map", action_mode="grid")
        td = env.rollout(4, break_when_any_done=False)   # TensorDict of batch (64, 4)
    """
    from .factory import make_core

    return GFNetTorchRLEnv(make_core(env_id, num_envs, device=device, **env_kwargs), seed=seed)
