"""The agent protocol and the registry of agents by name.

Every agent — a hand-written baseline, the paper's PPO, a Stable-Baselines3 model — answers the same small
protocol, so the benchmark and the CLI treat them alike:

* class attributes ``obs_mode`` / ``action_mode`` (and ``grid_size`` for grid actions): the env settings the
  agent needs; :meth:`Agent.env_settings` returns them as env kwargs;
* ``reset(num_envs)``: forget any memory and get ready for a new batch of ``num_envs`` episodes;
* ``act(obs, deterministic=True)``: a batch of observations → a numpy batch of actions, (N, 2) floats in
  [0, 1] for continuous actions or (N,) ints for grid actions;
* ``bind(core)`` (optional): called by the benchmark with the :class:`~gfnet_env.core.GFNetCore` it is
  about to evaluate on (the oracle and the saliency baseline read it);
* trainable agents: ``learn(env_id, steps, seed, out_dir, resume=False, **env_kwargs)`` (a classmethod that
  returns the trained agent), ``save(path)``, ``load(path)`` (classmethod).

Registry::

    import agents
    agents.available()                  # ['center', 'oracle', 'paper-ppo', 'random', ...]
    agent = agents.make("random", seed=0)
    agents.register("mine", MyAgent)    # any callable returning an Agent
    agent = agents.load_agent("sb3-ppo", "runs/sb3_ppo")   # a trained agent from its folder or file

A trained agent's folder holds ``agent.json`` (``{"agent": name, "file": weights file, "env_kwargs": {...}}``)
next to its weights; :func:`load_agent` reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

PathLike = str | os.PathLike

#: Name of the file that describes a trained agent inside its folder.
AGENT_JSON = "agent.json"


class Agent:
    """Base class of every agent (a protocol with defaults; override what applies).

    Attributes:
        name: registry name.
        obs_mode: observation mode the agent reads (``"gru"``, ``"feature_map"``, ``"dict"``).
        action_mode: action mode it emits (``"continuous"`` or ``"grid"``).
        grid_size: G of a grid action mode (None for continuous agents).
        trainable: whether ``learn`` / ``save`` / ``load`` are implemented.
        upper_bound: True for agents that use information a contender cannot have (the label).
    """

    name: str = "agent"
    obs_mode: str = "gru"
    action_mode: str = "continuous"
    grid_size: int | None = None
    trainable: bool = False
    upper_bound: bool = False
    #: continuous actions in [0, 1] ("unit") or [-1, 1] ("symmetric"; SB3's Gaussian policies).
    action_range: str = "unit"

    core = None

    # --- what the env must look like ---------------------------------------------------------------
    def env_settings(self) -> dict[str, Any]:
        """Env kwargs this agent needs: ``obs_mode``, ``action_mode`` and (grid agents) ``grid_size``."""
        out: dict[str, Any] = {"obs_mode": self.obs_mode, "action_mode": self.action_mode}
        if self.action_mode == "grid" and self.grid_size is not None:
            out["grid_size"] = int(self.grid_size)
        if self.action_mode == "continuous" and self.action_range != "unit":
            out["action_range"] = self.action_range
        return out

    # --- acting ------------------------------------------------------------------------------------
    def bind(self, core) -> None:
        """Remember the batched core the agent is evaluated on (called before an evaluation)."""
        self.core = core

    def reset(self, num_envs: int) -> None:
        """Forget the memory of the previous batch; the next ``act`` call starts ``num_envs`` new episodes."""
        self.num_envs = int(num_envs)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations.

        Args:
            obs: batched observation, (N, ...) array or dict of arrays, as the env's ``obs_mode`` gives it.
            deterministic: take the mode/mean of a stochastic policy (the benchmark always does).

        Returns:
            (N, 2) float32 in [0, 1] (continuous) or (N,) int64 cell indices (grid).
        """
        raise NotImplementedError

    # --- training (trainable agents only) ----------------------------------------------------------
    @classmethod
    def learn(cls, env_id: str, steps: int, seed: int, out_dir: PathLike, resume: bool = False,
              **env_kwargs) -> "Agent":
        """Train on ``env_id`` for ``steps`` env steps, writing logs and the agent to ``out_dir``."""
        raise NotImplementedError(f"agent {cls.name!r} is not trainable")

    def save(self, path: PathLike) -> Path:
        raise NotImplementedError(f"agent {self.name!r} cannot be saved")

    @classmethod
    def load(cls, path: PathLike, device: str = "auto") -> "Agent":
        raise NotImplementedError(f"agent {cls.name!r} cannot be loaded")

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(name={self.name!r}, obs_mode={self.obs_mode!r}, "
                f"action_mode={self.action_mode!r})")


def num_envs_of(obs) -> int:
    """Batch size N of a batched observation (array or dict of arrays)."""
    if isinstance(obs, dict):
        return len(next(iter(obs.values())))
    return len(obs)


# --- registry ----------------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[..., Agent]] = {}


def register(name: str, factory: Callable[..., Agent], overwrite: bool = False) -> None:
    """Register ``factory`` (a class or any callable returning an :class:`Agent`) under ``name``."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"agent {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def available() -> list[str]:
    """Names of all registered agents, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def factory_of(name: str) -> Callable[..., Agent]:
    """The registered factory of ``name`` (raises a ``KeyError`` listing the names when unknown)."""
    _ensure_builtins()
    if name not in _REGISTRY:
        raise KeyError(f"unknown agent {name!r}; registered agents: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make(name: str, **kwargs) -> Agent:
    """A new agent by registry name (``kwargs`` go to its factory)."""
    return factory_of(name)(**kwargs)


def is_trainable(name: str) -> bool:
    return bool(getattr(factory_of(name), "trainable", False))


def load_agent(name: str | None, path: PathLike, device: str = "auto") -> Agent:
    """A trained agent from its folder (with ``agent.json``) or weights file.

    Args:
        name: registry name, or None to take it from ``agent.json``.
        path: the folder ``learn`` wrote, or the weights file itself.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trained agent at {path}: the folder or file does not exist")
    meta = read_agent_json(path)
    if name is None:
        if meta is None:
            raise ValueError(f"{path} has no {AGENT_JSON}; pass the agent name explicitly")
        name = meta["agent"]
    factory = factory_of(name)
    loader = getattr(factory, "load", None)
    if loader is None:
        raise ValueError(f"agent {name!r} cannot be loaded from a file")
    target = path
    if path.is_dir():
        if meta is None or "file" not in meta:
            raise FileNotFoundError(
                f"{path} is a folder without {AGENT_JSON}; point at the folder `gfnet train-agent --out` wrote, "
                "or at the weights file itself"
            )
        target = path / meta["file"]
    return loader(target, device=device)


def read_agent_json(path: PathLike) -> dict | None:
    """``agent.json`` of a trained agent's folder (or of the folder holding a weights file), or None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    f = folder / AGENT_JSON
    if not f.exists():
        return None
    return json.loads(f.read_text())


def write_agent_json(folder: PathLike, name: str, file: str, **extra) -> Path:
    """Write ``agent.json`` describing the agent saved as ``folder/file``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / AGENT_JSON
    out.write_text(json.dumps({"agent": name, "file": file, **jsonable(extra)}, indent=2, sort_keys=True))
    return out


def jsonable(obj):
    """``obj`` with everything JSON cannot hold (models, datasets, tensors) dropped or converted."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            j = jsonable(v)
            if j is not _DROP:
                out[str(k)] = j
        return out
    if isinstance(obj, (list, tuple)):
        return [x for x in (jsonable(v) for v in obj) if x is not _DROP]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return _DROP


_DROP = object()

_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    """Register the built-in agents (baselines, paper PPO, SB3) on first use."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from . import baselines, paper_ppo, sb3_agents  # noqa: F401  (they register themselves)
