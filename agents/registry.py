"""The registry of agents by name, with lazy ``"module:Class"`` entries as Gymnasium's ``register``.

Built-in agents are registered here as strings, so nothing is imported until an agent is looked up, and
this module imports none of the agent implementations (no cycle). A user agent can be registered before or
after the first lookup::

    import agents
    agents.register("mine", "my_package.my_agent:MyAgent")   # lazy, imported on first use
    agents.register("mine2", MyAgent)                         # or any callable returning an Agent
    agent = agents.make("mine", seed=0)

Installed packages can declare agents in the entry-point group ``gfnet.agents`` (``pyproject.toml``:
``[project.entry-points."gfnet.agents"] my-agent = "my_pkg.mod:MyAgent"``); they are registered lazily on the
first lookup, unless the name is taken (built-ins and agents registered in code win, with a warning).

A name ``BASE:LABEL`` (``sb3-a2c:gamma1``) is a *named variant*: agent ``BASE``, listed under the full name,
so that two trained variants of one algorithm can be benchmarked side by side (:func:`base_name`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import warnings
from collections.abc import Callable

__all__ = ["ENTRY_POINT_GROUP", "available", "base_name", "factory_of", "is_trainable", "make", "register",
           "unregister"]

EntryPoint = str | Callable[..., object]

#: The entry-point group installed packages declare their agents in.
ENTRY_POINT_GROUP = "gfnet.agents"
#: Characters a variant's label may use (it becomes part of file keys and table rows, so no '/', '=' or ',').
_LABEL = re.compile(r"[A-Za-z0-9._+-]+")

_REGISTRY: dict[str, EntryPoint] = {}
#: Whether the ``gfnet.agents`` entry points were read (once, on the first lookup).
_entry_points_loaded = False


def register(name: str, entry_point: EntryPoint, overwrite: bool = False) -> None:
    """Register ``entry_point`` under ``name``.

    Args:
        name: the agent's name (``--agents`` of the CLI).
        entry_point: ``"module:attribute"`` (imported on first lookup), or a class / callable returning an agent.
        overwrite: replace an existing entry instead of raising ``ValueError``.
    """
    if not name or ":" in name:
        # ':' separates a named variant's label (BASE:LABEL), so a registered name cannot hold one
        raise ValueError(f"agent name {name!r} must be non-empty and without ':' (BASE:LABEL names a variant)")
    if isinstance(entry_point, str) and entry_point.count(":") != 1:
        raise ValueError(f"entry point {entry_point!r} of agent {name!r} must look like 'package.module:Class'")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"agent {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = entry_point


def unregister(name: str) -> None:
    """Remove an agent from the registry (a ``KeyError`` when unknown)."""
    del _REGISTRY[name]


def _load_entry_points() -> None:
    """Register the agents installed packages declare in :data:`ENTRY_POINT_GROUP` (once per process).

    Each becomes a lazy ``"module:attr"`` entry, so nothing is imported before it is looked up. A name already
    registered keeps its entry (a built-in, or an agent registered in code, wins) and the clash is warned about.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True  # first, so that a failure below is not retried on every lookup
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        package = dist.name if dist is not None else ep.value.split(":")[0]
        if _REGISTRY.get(ep.name) == ep.value:
            continue  # the same distribution seen twice on sys.path
        if ep.name in _REGISTRY:
            warnings.warn(f"agent {ep.name!r} of package {package} (entry-point group {ENTRY_POINT_GROUP}) is "
                          f"ignored: the name is already registered", stacklevel=3)
            continue
        try:
            register(ep.name, ep.value)
        except ValueError as e:  # a malformed declaration must not break every other agent's lookup
            warnings.warn(f"agent {ep.name!r} of package {package} (entry-point group {ENTRY_POINT_GROUP}) is "
                          f"ignored: {e}", stacklevel=3)


def available() -> list[str]:
    """Names of all registered agents (built-ins, registered in code, installed entry points), sorted."""
    _load_entry_points()
    return sorted(_REGISTRY)


def base_name(name: str) -> str:
    """The registered agent a name stands for: ``"sb3-a2c:gamma1"`` → ``"sb3-a2c"`` (a named variant), any
    other name unchanged. The base need not be registered (:func:`factory_of` says so).

    Raises:
        ValueError: an empty base or a label with characters other than letters, digits and ``._+-``.
    """
    if ":" not in name:
        return name
    base, _, label = name.partition(":")
    if not base or not _LABEL.fullmatch(label):
        raise ValueError(f"agent name {name!r}: a named variant is BASE:LABEL, the label made of letters, digits "
                         "and . _ + - (e.g. sb3-a2c:gamma1)")
    return base


def factory_of(name: str) -> Callable[..., object]:
    """The class or callable registered as ``name`` (or as the base of a variant ``BASE:LABEL``), importing it
    on first use.

    Raises:
        KeyError: ``name`` is unknown (the message lists the registered agents).
        ValueError: ``name`` is a malformed variant name (:func:`base_name`).
        ImportError: a lazy entry point names a module or attribute that does not exist.
    """
    _load_entry_points()
    base = base_name(name)
    if base not in _REGISTRY:
        variant = f" (the base of {name!r})" if base != name else ""
        raise KeyError(f"unknown agent {base!r}{variant}; registered agents: {', '.join(sorted(_REGISTRY))}")
    name = base
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module_name, attr = entry.split(":")
        module = importlib.import_module(module_name)
        try:
            entry = getattr(module, attr)
        except AttributeError:
            raise ImportError(f"agent {name!r}: module {module_name} has no attribute {attr!r}") from None
        _REGISTRY[name] = entry
    return entry


def make(name: str, **kwargs) -> object:
    """A new agent by registry name or variant name (``kwargs`` go to its factory)."""
    return factory_of(name)(**kwargs)


def is_trainable(name: str) -> bool:
    """Whether the agent registered as ``name`` implements ``learn``."""
    return bool(getattr(factory_of(name), "trainable", False))


# --- the built-in agents ----------------------------------------------------------------------------------
for _name, _entry in {
    "random": "agents.baselines:RandomAgent",
    "center": "agents.baselines:CenterAgent",
    "raster": "agents.baselines:RasterAgent",
    "saliency": "agents.baselines:SaliencyAgent",
    "saliency-ior": "agents.baselines:SaliencyIORAgent",
    "oracle": "agents.baselines:OracleAgent",
    "shuffle": "agents.benchmark.null_models:ShuffleAgent",
    "prior": "agents.benchmark.null_models:PriorAgent",
    "paper-ppo": "agents.paper_ppo.agent:PaperPPOAgent",
    "paper-ppo-stop": "agents.paper_ppo.agent:PaperPPOStopAgent",
    "sb3-ppo": "agents.sb3.agent:SB3PPOAgent",
    "sb3-sac": "agents.sb3.agent:SB3SACAgent",
    "sb3-a2c": "agents.sb3.agent:SB3A2CAgent",
    "sb3-td3": "agents.sb3.agent:SB3TD3Agent",
    "sb3-dqn": "agents.sb3.agent:SB3DQNAgent",
    "sb3-recurrent-ppo": "agents.sb3.agent:SB3RecurrentPPOAgent",
}.items():
    register(_name, _entry)
