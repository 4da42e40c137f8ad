"""The one place that turns an env id and env kwargs into networks, images and a batched core.

``gym.make``, ``gym.make_vec``, :func:`gfnet_env.make_sb3_vec_env`, the benchmark and the CLI all build their
envs here, so an env argument means the same thing everywhere:

* :func:`task_of` — env id (``"GFNet-ImageNet-v0"``, also ``"gfnet_env:GFNet-ImageNet-v0"``) → task name;
* :func:`split_env_kwargs` — env kwargs → (task kwargs that choose networks and images, :class:`EnvSettings`);
* :func:`load_task` — task kwargs → (GFNet model, dataset);
* :func:`settings_for_agent` — settings with an agent's own env settings applied (obs/action mode, grid, range,
  the stop action);
* :func:`build_core` — already loaded networks and images → a core (the benchmark shares them between cores);
* :func:`make_core` — all of it → a :class:`~gfnet_env.core.GFNetCore` of N slots.

What an env id means (its networks, images, splits and the task kwargs it accepts) is its
:class:`~gfnet_env.tasks.Task` (:mod:`gfnet_env.tasks`).
"""

from __future__ import annotations

from typing import Any, Protocol

from .settings import EnvSettings
from .tasks import Task, get_task

__all__ = ["AGENT_SETTINGS", "build_core", "load_task", "make_core", "settings_for_agent", "shared_env_kwargs",
           "split_env_kwargs", "task_of"]

#: env kwargs that are neither task nor settings: where the networks run, and the grid feature cache.
RUNTIME_KWARGS = ("device", "feature_cache")
#: :class:`EnvSettings` fields an agent chooses for itself (its ``env_settings()``; obs_mode and action_mode
#: always, grid_size and action_range when it has them; stop_action is always the agent's: False unless it says
#: True, whatever the env kwargs say, since an agent that never stops cannot act in a space with a stop action).
AGENT_SETTINGS = ("obs_mode", "action_mode", "grid_size", "action_range", "stop_action")


class HasEnvSettings(Protocol):
    """Anything that says which env it acts in (an :class:`agents.base.Agent`; duck-typed, so that gfnet_env
    does not import agents)."""

    def env_settings(self) -> dict[str, Any]: ...


def task_of(env_id: str) -> str:
    """Task name of a GFNet env id (a ``module:`` prefix is accepted), or a ``ValueError`` listing the ids."""
    return get_task(env_id).name


def env_id_of(env_id: str) -> str:
    """The registered id without a ``module:`` prefix (checked)."""
    return get_task(env_id).env_id


def split_env_kwargs(kwargs: dict[str, Any], task: str | Task) -> tuple[dict[str, Any], EnvSettings]:
    """Env kwargs → (task kwargs, settings) for ``task`` (a task, task name or env id).

    Raises:
        TypeError: a name is neither a task kwarg of this task nor a settings field (the message lists the valid
            ones for this env id).
    """
    task = get_task(task)
    task_kwargs = {k: v for k, v in kwargs.items() if k in task.kwargs}
    settings_kwargs = {k: v for k, v in kwargs.items() if k not in task.kwargs}
    unknown = set(settings_kwargs) - EnvSettings.field_names()
    if unknown:
        valid = sorted(EnvSettings.field_names() | set(task.kwargs) | set(RUNTIME_KWARGS))
        raise TypeError(f"unknown env arguments {sorted(unknown)} for {task.env_id}; valid: {valid}")
    return task_kwargs, EnvSettings(**settings_kwargs)


def shared_env_kwargs(kwargs: dict[str, Any], task: str | Task) -> tuple[dict[str, Any], dict[str, Any], EnvSettings]:
    """Env kwargs shared by several agents that each bring their own settings (the benchmark, ``gfnet show``):
    (the kwargs without those every agent chooses itself, their task kwargs, their settings).

    ``grid_size`` stays: it is the grid of agents that do not name one (the oracle). The agents' own settings are
    applied per core by :func:`settings_for_agent`.
    """
    shared = {k: v for k, v in kwargs.items() if k not in AGENT_SETTINGS or k == "grid_size"}
    task_kwargs, settings = split_env_kwargs(shared, task)
    return shared, task_kwargs, settings.replace(grid_size=int(settings.grid_size))


def load_task(task: str | Task, **task_kwargs):
    """(model, dataset) of a task (a task, task name or env id) from its task kwargs."""
    return get_task(task).load(**task_kwargs)


def settings_for_agent(settings: EnvSettings, agent: HasEnvSettings | None) -> EnvSettings:
    """``settings`` with ``agent``'s own env settings (:data:`AGENT_SETTINGS` of ``agent.env_settings()``)
    applied; None: unchanged. What the agent does not say stays as in ``settings``, except ``stop_action``: an
    agent has the stop action only when its ``env_settings()`` says ``stop_action=True`` (a stopping agent gets a
    stop-capable core and every other agent a plain one, whatever ``settings`` say).

    Raises:
        ValueError: ``env_settings()`` lacks ``obs_mode`` or ``action_mode``.
    """
    if agent is None:
        return settings
    own = dict(agent.env_settings())
    missing = [k for k in ("obs_mode", "action_mode") if k not in own]
    if missing:
        raise ValueError(f"{type(agent).__name__}.env_settings() must name {missing} (the env it acts in), "
                         f"got {own}")
    if "grid_size" in own:
        own["grid_size"] = int(own["grid_size"])
    own["stop_action"] = bool(own.get("stop_action", False))
    return settings.replace(**{k: own[k] for k in AGENT_SETTINGS if k in own})


def build_core(model, dataset, num_envs: int, settings: EnvSettings, agent: HasEnvSettings | None = None,
               device: str = "auto", feature_cache: bool | Any = False):
    """A :class:`~gfnet_env.core.GFNetCore` of ``num_envs`` slots on loaded networks and images.

    Args:
        model: the frozen GFNet (shared, not copied).
        dataset: the images.
        num_envs: N.
        settings: the env settings (before the agent's).
        agent: an object with ``env_settings()`` whose obs/action mode, grid, action range and stop action the
            core uses.
        device: torch device or ``"auto"``.
        feature_cache: True for a fresh :class:`~gfnet_env.cache.GridFeatureCache`, or a cache to share.
    """
    from .core import GFNetCore

    cache = None
    if feature_cache:
        from .cache import GridFeatureCache

        cache = feature_cache if not isinstance(feature_cache, bool) else GridFeatureCache()
    return GFNetCore(model, dataset, num_envs, settings_for_agent(settings, agent), device=device,
                     feature_cache=cache)


def make_core(task: str | Task, num_envs: int, device: str = "auto", feature_cache: bool | Any = False,
              agent: HasEnvSettings | None = None, **kwargs):
    """A :class:`~gfnet_env.core.GFNetCore` of ``num_envs`` slots for a task name or env id and env kwargs.

    Args:
        task: task name (``"imagenet"``), env id (``"GFNet-ImageNet-v0"``) or :class:`~gfnet_env.tasks.Task`.
        num_envs: N.
        device: torch device or ``"auto"``.
        feature_cache: True for a fresh :class:`~gfnet_env.cache.GridFeatureCache`, or a cache to share.
        agent: an object with ``env_settings()`` (an agent): its obs/action mode, grid, action range and stop
            action win over ``kwargs``'.
        **kwargs: task kwargs of this task and :class:`EnvSettings` fields.
    """
    task_kwargs, settings = split_env_kwargs(kwargs, task)
    model, dataset = load_task(task, **task_kwargs)
    return build_core(model, dataset, num_envs, settings, agent=agent, device=device, feature_cache=feature_cache)
