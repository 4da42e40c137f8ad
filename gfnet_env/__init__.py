"""GFNet as a Gymnasium environment: observations are the classifier's state, actions are patch locations.

Importing the package registers the env id of every registered task (:mod:`gfnet_env.tasks`; lazy
``"module:Class"`` entry points, as Gymnasium's own); :func:`gfnet_env.tasks.register_task` registers a new one::

    import gymnasium as gym, gfnet_env
    env = gym.make("GFNet-ClutteredFashionMNIST-v0")                       # embedded task, shipped weights
    env = gym.make("GFNet-ImageNet-v0", checkpoint="resnet50_patch_size_96_T5.pth.tar", data_root="/data/imagenet")
    venv = gym.make_vec("GFNet-ImageNet-v0", num_envs=64, vectorization_mode="vector_entry_point", ...)
    sb3_env = gfnet_env.make_sb3_vec_env("GFNet-ImageNet-v0", n_envs=64, ...)   # imports Stable-Baselines3
    rl_env = gfnet_env.make_torchrl_env("GFNet-ImageNet-v0", num_envs=64, ...)  # imports TorchRL
    result = gfnet_env.rollout(core, agent, indices)                        # a policy over given images
    gfnet_env.keep_freed_memory()    # on Linux, first thing: CPU forward passes stop page-faulting

The contract (spaces, reward, what agents may see) is in docs/environment.md. ``import gfnet_env`` imports
neither Stable-Baselines3 nor TorchRL nor matplotlib nor TensorBoard: the SB3 face (:mod:`gfnet_env.sb3`) and
the TorchRL face (:mod:`gfnet_env.torchrl_env`) are imported on first use of their names.
"""

from __future__ import annotations

from .core import GFNetCore
from .data.host_memory import keep_freed_memory
from .env import GFNetEnv
from .factory import make_core
from .rollout import Rollout, rollout
from .settings import EnvSettings
from .tasks import Task, get_task, register_task, registered_tasks
from .vector import GFNetVectorEnv
from .views import EnvView, PrivilegedView

#: Names served by :mod:`gfnet_env.sb3`, which imports Stable-Baselines3 (imported on first access).
_SB3_NAMES = ("GFNetSB3VecEnv", "make_sb3_vec_env")
#: Names served by :mod:`gfnet_env.torchrl_env`, which imports TorchRL (imported on first access).
_TORCHRL_NAMES = ("GFNetTorchRLEnv", "make_torchrl_env")


def __getattr__(name: str):
    if name in _SB3_NAMES:
        from . import sb3

        return getattr(sb3, name)
    if name in _TORCHRL_NAMES:
        from . import torchrl_env

        return getattr(torchrl_env, name)
    raise AttributeError(f"module 'gfnet_env' has no attribute {name!r}")


def _register() -> None:
    """Register every registered task's env id with Gymnasium (the built-in ones on import; idempotent)."""
    from .tasks.registry import register_gym_id

    for task in registered_tasks().values():
        register_gym_id(task, replace=False)


_register()

__all__ = [
    "EnvSettings",
    "EnvView",
    "GFNetCore",
    "GFNetEnv",
    "GFNetSB3VecEnv",
    "GFNetTorchRLEnv",
    "GFNetVectorEnv",
    "PrivilegedView",
    "Rollout",
    "Task",
    "get_task",
    "keep_freed_memory",
    "make_core",
    "make_sb3_vec_env",
    "make_torchrl_env",
    "register_task",
    "registered_tasks",
    "rollout",
]
