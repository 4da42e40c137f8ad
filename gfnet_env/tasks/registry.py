"""The task registry: env id → :class:`~gfnet_env.tasks.task.Task`, each id also registered with Gymnasium.

:func:`register_task` is the one call that makes a new env id work everywhere: ``gym.make`` / ``gym.make_vec``
(lazy ``"module:Class"`` entry points, as Gymnasium's own), :func:`gfnet_env.make_core`, the benchmark, the
trainers and ``gfnet train-features``.
"""

from __future__ import annotations

from .task import Task

__all__ = ["get_task", "register_gym_id", "register_task", "registered_tasks", "unregister_task"]

_TASKS: dict[str, Task] = {}


def register_task(task: Task, replace: bool = False) -> Task:
    """Register ``task`` under its env id (and its id with Gymnasium); returns it.

    Raises:
        TypeError: ``task`` is not a :class:`Task`.
        ValueError: the env id or the name is already another task's (pass ``replace=True`` to replace a task
            of the same env id).
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a gfnet_env.tasks.Task, got {task!r:.100} ({type(task).__name__})")
    old = _TASKS.get(task.env_id)
    if old is task:
        return task
    if old is not None and not replace:
        raise ValueError(f"the env id {task.env_id!r} is already registered (task {old.name!r}); pass replace=True "
                         "to replace it, or choose another id")
    for other in _TASKS.values():
        if other.name == task.name and other.env_id != task.env_id:
            raise ValueError(f"the task name {task.name!r} is already used by {other.env_id!r}; choose another name")
    _TASKS[task.env_id] = task
    register_gym_id(task, replace=old is not None)
    return task


def unregister_task(env_id: str) -> Task:
    """Remove a task and its Gymnasium id (e.g. after a test); returns the task."""
    task = get_task(env_id)
    del _TASKS[task.env_id]
    from gymnasium.envs.registration import registry

    registry.pop(task.env_id, None)
    return task


def get_task(task: str | Task) -> Task:
    """The task of an env id (a ``module:`` prefix is accepted) or a task name (``-`` or ``_``).

    Raises:
        ValueError: nothing is registered under that id or name (the message lists the registered ids).
    """
    if isinstance(task, Task):
        return task
    key = str(task).split(":")[-1]
    if key in _TASKS:
        return _TASKS[key]
    for t in _TASKS.values():
        if key in (t.name, t.cli_name):
            return t
    raise ValueError(f"unknown GFNet env id {key!r}; registered: {sorted(_TASKS)}")


def registered_tasks() -> dict[str, Task]:
    """env id → task, in registration order (a copy)."""
    return dict(_TASKS)


def register_gym_id(task: Task, replace: bool) -> None:
    """Register the env id with Gymnasium (kept as it is when Gymnasium already has it, unless replacing)."""
    from gymnasium.envs.registration import register, registry

    if task.env_id in registry:
        if not replace:
            return
        del registry[task.env_id]  # re-registering would warn "Overriding environment"
    register(
        id=task.env_id,
        entry_point="gfnet_env.env:GFNetEnv",
        vector_entry_point="gfnet_env.vector:GFNetVectorEnv",
        kwargs={"task": task.name, **task.env_defaults},
        disable_env_checker=False,
    )
