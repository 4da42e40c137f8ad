"""The registry of agents by name, with lazy ``"module:Class"`` entries as Gymnasium's ``register``.

Built-in agents are registered here as strings, so nothing is imported until an agent is looked up, and
this module imports none of the agent implementations (no cycle). A user agent can be registered before or
after the first lookup::

    import agents
    agents.register("mine", "my_package.my_agent:MyAgent")   # lazy, imported on first use
    agents.register("mine2", MyAgent)                         # or any callable returning an Agent
    agent = agents.make("mine", seed=0)
"""

from __future__ import annotations

import importlib
from typing import Callable, Union

__all__ = ["available", "factory_of", "is_trainable", "make", "register"]

EntryPoint = Union[str, Callable[..., object]]

_REGISTRY: dict[str, EntryPoint] = {}


def register(name: str, entry_point: EntryPoint, overwrite: bool = False) -> None:
    """Register ``entry_point`` under ``name``.

    Args:
        name: the agent's name (``--agents`` of the CLI).
        entry_point: ``"module:attribute"`` (imported on first lookup), or a class / callable returning an agent.
        overwrite: replace an existing entry instead of raising ``ValueError``.
    """
    if isinstance(entry_point, str) and entry_point.count(":") != 1:
        raise ValueError(f"entry point {entry_point!r} of agent {name!r} must look like 'package.module:Class'")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"agent {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = entry_point


def unregister(name: str) -> None:
    """Remove an agent from the registry (a ``KeyError`` when unknown)."""
    del _REGISTRY[name]


def available() -> list[str]:
    """Names of all registered agents, sorted."""
    return sorted(_REGISTRY)


def factory_of(name: str) -> Callable[..., object]:
    """The class or callable registered as ``name``, importing it on first use.

    Raises:
        KeyError: ``name`` is unknown (the message lists the registered agents).
        ImportError: a lazy entry point names a module or attribute that does not exist.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown agent {name!r}; registered agents: {', '.join(sorted(_REGISTRY))}")
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
    """A new agent by registry name (``kwargs`` go to its factory)."""
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
    "oracle": "agents.baselines:OracleAgent",
    "paper-ppo": "agents.paper_ppo.agent:PaperPPOAgent",
    "sb3-ppo": "agents.sb3_agents:SB3PPOAgent",
    "sb3-sac": "agents.sb3_agents:SB3SACAgent",
    "sb3-a2c": "agents.sb3_agents:SB3A2CAgent",
    "sb3-td3": "agents.sb3_agents:SB3TD3Agent",
    "sb3-dqn": "agents.sb3_agents:SB3DQNAgent",
    "sb3-recurrent-ppo": "agents.sb3_agents:SB3RecurrentPPOAgent",
}.items():
    register(_name, _entry)
