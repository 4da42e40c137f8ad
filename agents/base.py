"""The agent protocol: what every agent answers, so the benchmark and the CLI treat all agents alike.

* class attributes ``obs_mode`` / ``action_mode`` (and ``grid_size`` for grid actions, ``action_range`` for
  continuous ones, ``stop_action`` for agents that decide when to stop): the env settings the agent needs;
  :meth:`Agent.env_settings` returns them as env kwargs;
* ``bind(view)``: called by :func:`gfnet_env.rollout` before an evaluation with the agent's view — the public
  :class:`~gfnet_env.views.EnvView` (static facts), or a :class:`~gfnet_env.views.PrivilegedView` (labels) for
  classes that set ``privileged = True``; those are upper bounds, reported apart;
* ``reset(num_envs)``: forget any memory and get ready for a new batch of ``num_envs`` episodes;
* ``act(obs, deterministic=True)``: a batch of observations → a numpy batch of actions, (N, 2) floats in
  the env's action box for continuous actions ((N, 3) with the stop action) or (N,) ints for grid actions
  (G·G is the stop action);
* hooks that replace name switches in the benchmark and the CLI: ``runs`` (which evaluations the agent
  stands for: seeds, shipped weights, trained copies), ``train_options`` (which CLI options its training
  uses), and for trainable agents ``learn`` / ``save`` / ``load``.

The registry of agents by name is :mod:`agents.registry`; trained agents' folders are :mod:`agents.trained`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

if TYPE_CHECKING:
    from gfnet_env.rollout import Rollout
    from gfnet_env.views import EnvView, PrivilegedView

PathLike = str | os.PathLike


@dataclass
class Run:
    """One evaluation of one agent: a seed, a shipped file, or one trained copy."""

    label: str
    build: Callable[[], "Agent"]


@dataclass
class RecordedRun:
    """What one run of an agent did in a benchmark: its rollouts on the evaluation and the fit images (looks,
    exit steps, answers), kept for the null models that copy its looks (:mod:`agents.benchmark.null_models`)."""

    label: str
    eval: "Rollout"
    fit: "Rollout"


@dataclass
class RunContext:
    """What an agent's :meth:`Agent.runs` hook may use to choose its evaluations.

    Attributes:
        name: the registry name being benchmarked.
        env_id: the env id.
        model: the env's networks (``paper-ppo`` reads the policy stored in the checkpoint).
        env_kwargs: env arguments shared by every agent (``checkpoint`` present = not the default networks).
        seeds: how many seeds a stochastic baseline is run with.
        seed: base seed.
        device: torch device.
        variant: the LABEL of a named variant ``BASE:LABEL`` (``name`` is then the base); "" otherwise.
        reference: the benchmark's reference agent (None: no comparison).
        looks: agents already run in this benchmark → their runs' :class:`RecordedRun` (for the null models).
    """

    name: str
    env_id: str
    model: Any
    env_kwargs: dict = field(default_factory=dict)
    seeds: int = 1
    seed: int = 0
    device: str = "auto"
    variant: str = ""
    reference: str | None = None
    looks: dict[str, list[RecordedRun]] = field(default_factory=dict)


def train_hint(name: str, env_id: str) -> str:
    """How to get a trained ``name`` for ``env_id`` (for error messages)."""
    return (f"no trained {name} agent for {env_id}: train one with "
            f"`gfnet train-agent --agent {name} --env {env_id} --out DIR` and pass --agent-dir {name}=DIR "
            f"(agent_dirs={{{name!r}: DIR}})")


class Agent:
    """Base class of every agent (a protocol with defaults; override what applies).

    Attributes:
        name: registry name.
        obs_mode: observation mode the agent reads (``"gru"``, ``"feature_map"``, ``"dict"``).
        action_mode: action mode it emits (``"continuous"`` or ``"grid"``).
        grid_size: G of a grid action mode (None for continuous agents).
        action_range: continuous actions in [0, 1] (``"unit"``) or [-1, 1] (``"symmetric"``).
        stop_action: the agent acts with the env's stop action (``stop_action=True``: grid action G·G, or a third
            continuous component at or above the middle of its range; docs/environment.md "Actions"). The
            factory builds a stop-capable core for it, and a plain one for every agent that does not say so.
        trainable: whether ``learn`` / ``save`` / ``load`` are implemented.
        privileged: the agent reads the label through a :class:`~gfnet_env.views.PrivilegedView`; it is an
            upper bound, never a contender.
        decision_madds: the agent's own cost, in multiply-adds per decision per image (one episode's action at one
            step, apart from the env's looks), used by the benchmark instead of what it counts. None (default):
            counted — the torch operations ``act`` runs (``torch.utils.flop_counter``); work in numpy or other
            non-torch code is not seen, so such an agent should declare it (docs/benchmark.md, "Declaring an
            agent's own cost"). A class or an instance attribute.
        view: the view :meth:`bind` received (None before).
    """

    name: str = "agent"
    obs_mode: str = "gru"
    action_mode: str = "continuous"
    grid_size: int | None = None
    action_range: str = "unit"
    stop_action: bool = False
    trainable: ClassVar[bool] = False
    privileged: ClassVar[bool] = False
    decision_madds: float | None = None
    view: "EnvView | PrivilegedView | None" = None

    @property
    def upper_bound(self) -> bool:
        """True for agents that read the label (reported apart from the contenders)."""
        return self.privileged

    # --- what the env must look like ---------------------------------------------------------------
    def env_settings(self) -> dict[str, Any]:
        """Env kwargs this agent needs: ``obs_mode``, ``action_mode``, (grid agents) ``grid_size``, (continuous
        agents, when not the unit range) ``action_range`` and (stopping agents) ``stop_action=True``."""
        out: dict[str, Any] = {"obs_mode": self.obs_mode, "action_mode": self.action_mode}
        if self.action_mode == "grid" and self.grid_size is not None:
            out["grid_size"] = int(self.grid_size)
        if self.action_mode == "continuous" and self.action_range != "unit":
            out["action_range"] = self.action_range
        if self.stop_action:
            out["stop_action"] = True
        return out

    # --- acting ------------------------------------------------------------------------------------
    def bind(self, view: "EnvView | PrivilegedView") -> None:
        """Remember the view of the env the agent is about to act in (called before an evaluation)."""
        self.view = view

    def reset(self, num_envs: int) -> None:
        """Forget the memory of the previous batch; the next ``act`` call starts ``num_envs`` new episodes."""
        self.num_envs = int(num_envs)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations.

        Args:
            obs: batched observation, (N, ...) array or dict of arrays, as the env's ``obs_mode`` gives it.
            deterministic: take the mode/mean of a stochastic policy (the benchmark always does).

        Returns:
            (N, 2) float32 in the env's action box — [0, 1], or [-1, 1] for ``action_range="symmetric"`` —
            (continuous; (N, 3) with the stop component for a stopping agent) or (N,) int64 cell indices (grid;
            G·G stops).
        """
        raise NotImplementedError

    # --- hooks for the benchmark and the CLI --------------------------------------------------------
    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """The evaluations this agent stands for when no trained copy is given, and where they come from.

        Default: one run of a fresh agent for a baseline; a trainable agent without weights of its own
        raises ``ValueError`` saying how to train one.
        """
        if cls.trainable:
            raise ValueError(train_hint(ctx.name, ctx.env_id))
        from .registry import make

        return [Run("", lambda: make(ctx.name))], source_of(cls)

    @classmethod
    def train_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :meth:`learn` taken from the CLI's training options (``device``,
        ``progress``, ``n_envs``, ``batch_size``, …); each trainable agent picks what it uses."""
        return {}

    # --- training (trainable agents only) ----------------------------------------------------------
    @classmethod
    def learn(cls, env_id: str, steps: int, seed: int, out_dir: PathLike, resume: bool = False,
              **kwargs) -> "Agent":
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


def source_of(obj: Any) -> str:
    """Where an untrained agent comes from, for the results' ``source`` field: ``"baseline"`` for this package's
    own agents, else the user code's ``module:name`` (so a table says whose agent a row is)."""
    module = getattr(obj, "__module__", None) or "?"
    if module == "agents" or module.startswith("agents."):
        return "baseline"
    return f"user code {module}:{getattr(obj, '__qualname__', getattr(obj, '__name__', type(obj).__name__))}"
