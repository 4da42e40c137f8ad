"""GFNet as a Gymnasium environment: observations are the classifier's state, actions are patch locations.

Importing the package registers the env ids::

    import gymnasium as gym, gfnet_env
    env = gym.make("GFNet-ClutteredFashionMNIST-v0")                       # embedded task, shipped weights
    env = gym.make("GFNet-ImageNet-v0", checkpoint="resnet50_patch_size_96_T5.pth.tar", data_root="/data/imagenet")
    venv = gym.make_vec("GFNet-ImageNet-v0", num_envs=64, vectorization_mode="vector_entry_point", ...)
    sb3_env = gfnet_env.make_sb3_vec_env("GFNet-ImageNet-v0", n_envs=64, ...)
"""

from __future__ import annotations

from functools import partial

from gymnasium.envs.registration import register, registry

from .core import CoreSettings, GFNetCore
from .env import GFNetEnv, make_core
from .sb3 import GFNetSB3VecEnv, make_sb3_vec_env
from .vector import GFNetVectorEnv

#: env id -> task name (see gfnet_env.tasks).
ENV_TASKS = {
    "GFNet-ImageNet-v0": "imagenet",
    "GFNet-ClutteredFashionMNIST-v0": "cluttered_fashion_mnist",
}


def _make_env(task: str, **kwargs) -> GFNetEnv:
    return GFNetEnv(task=task, **kwargs)


def _make_vector_env(task: str, num_envs: int = 1, **kwargs) -> GFNetVectorEnv:
    return GFNetVectorEnv(num_envs=num_envs, task=task, **kwargs)


def _register() -> None:
    defaults = {"GFNet-ImageNet-v0": {"split": "val"}, "GFNet-ClutteredFashionMNIST-v0": {"split": "test"}}
    for env_id, task in ENV_TASKS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point=partial(_make_env, task),
            vector_entry_point=partial(_make_vector_env, task),
            kwargs=defaults[env_id],
            disable_env_checker=False,
        )


_register()

__all__ = [
    "ENV_TASKS",
    "CoreSettings",
    "GFNetCore",
    "GFNetEnv",
    "GFNetVectorEnv",
    "GFNetSB3VecEnv",
    "make_core",
    "make_sb3_vec_env",
]
