"""The one place that turns an env id and env kwargs into networks, images and a batched core.

``gym.make``, ``gym.make_vec``, :func:`gfnet_env.make_sb3_vec_env`, the benchmark and the CLI all build their
envs here, so an env argument means the same thing everywhere:

* :func:`task_of` — env id (``"GFNet-ImageNet-v0"``, also ``"gfnet_env:GFNet-ImageNet-v0"``) → task name;
* :func:`split_env_kwargs` — env kwargs → (task kwargs that choose networks and images, :class:`EnvSettings`);
* :func:`load_task` — task kwargs → (GFNet model, dataset);
* :func:`make_core` — all of it → a :class:`~gfnet_env.core.GFNetCore` of N slots.
"""

from __future__ import annotations

from typing import Any

from .settings import EnvSettings
from .tasks import TASKS

__all__ = ["ENV_TASKS", "TASK_KWARGS", "load_task", "make_core", "split_env_kwargs", "task_of"]

#: env id -> task name (see :mod:`gfnet_env.tasks`).
ENV_TASKS = {
    "GFNet-ImageNet-v0": "imagenet",
    "GFNet-ClutteredFashionMNIST-v0": "cluttered_fashion_mnist",
}
#: Default task kwargs of each env id (the evaluation split).
ENV_DEFAULTS = {
    "GFNet-ImageNet-v0": {"split": "val"},
    "GFNet-ClutteredFashionMNIST-v0": {"split": "test"},
}
#: env kwargs that choose networks and images (the rest are :class:`EnvSettings` fields).
TASK_KWARGS = ("checkpoint", "data_root", "dataset", "split", "trusted_pickle", "num_samples", "seed", "prepared")
#: env kwargs that are neither task nor settings: where the networks run, and the grid feature cache.
RUNTIME_KWARGS = ("device", "feature_cache")


def task_of(env_id: str) -> str:
    """Task name of a GFNet env id (a ``module:`` prefix is accepted), or a ``ValueError`` listing the ids."""
    env_id = env_id.split(":")[-1]
    if env_id not in ENV_TASKS:
        raise ValueError(f"unknown GFNet env id {env_id!r}; registered: {sorted(ENV_TASKS)}")
    return ENV_TASKS[env_id]


def env_id_of(env_id: str) -> str:
    """The registered id without a ``module:`` prefix (checked)."""
    task_of(env_id)
    return env_id.split(":")[-1]


def split_env_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], EnvSettings]:
    """Env kwargs → (task kwargs, settings). Unknown names raise a ``TypeError`` listing the valid ones."""
    task_kwargs = {k: v for k, v in kwargs.items() if k in TASK_KWARGS}
    settings_kwargs = {k: v for k, v in kwargs.items() if k not in TASK_KWARGS}
    unknown = set(settings_kwargs) - EnvSettings.field_names()
    if unknown:
        valid = sorted(EnvSettings.field_names() | set(TASK_KWARGS) | set(RUNTIME_KWARGS))
        raise TypeError(f"unknown env arguments {sorted(unknown)}; valid: {valid}")
    return task_kwargs, EnvSettings(**settings_kwargs)


def load_task(task: str, **task_kwargs):
    """(model, dataset) of a task (a task name or an env id) from its task kwargs."""
    if task not in TASKS:
        task = task_of(task)
    return TASKS[task](**task_kwargs)


def make_core(task: str, num_envs: int, device: str = "auto", feature_cache: bool | Any = False, **kwargs):
    """A :class:`~gfnet_env.core.GFNetCore` of ``num_envs`` slots for a task name or env id and env kwargs.

    Args:
        task: task name (``"imagenet"``) or env id (``"GFNet-ImageNet-v0"``).
        num_envs: N.
        device: torch device or ``"auto"``.
        feature_cache: True for a fresh :class:`~gfnet_env.cache.GridFeatureCache`, or a cache to share.
        **kwargs: task kwargs and :class:`EnvSettings` fields.
    """
    from .core import GFNetCore

    task_kwargs, settings = split_env_kwargs(kwargs)
    model, dataset = load_task(task, **task_kwargs)
    cache = None
    if feature_cache:
        from .cache import GridFeatureCache

        cache = feature_cache if not isinstance(feature_cache, bool) else GridFeatureCache()
    return GFNetCore(model, dataset, num_envs, settings, device=device, feature_cache=cache)
