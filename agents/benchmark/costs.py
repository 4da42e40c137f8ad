"""What an agent's own decisions cost: multiply-adds and wall-clock per decision, apart from the env's looks.

Every agent pays the env for its looks (encoders and classifier, :attr:`GFNetCore.madds_per_step`); its own
``act`` is extra. :class:`MeteredAgent` wraps an agent and measures that extra: multiply-adds of ``act``
counted with ``torch.utils.flop_counter`` (FLOPs / 2; SB3 policies and the paper's policy are torch code), or
the agent's declared ``decision_madds`` (:attr:`agents.base.Agent.decision_madds`: non-torch code, or an
upper bound whose search is not a decision a contender could make); and wall-clock seconds of ``act``. Divided by
the decisions made (one per episode and step), they are per-decision costs.

The counter sees torch operations only: an agent that computes in numpy and declares nothing is charged 0.
:attr:`MeteredAgent.unaccounted` says so, and the benchmark notes it in its results (``decision_madds_note``),
except for this package's own agents, whose 0 is documented (the baselines' few numpy sums and arg-maxes are not
counted; docs/benchmark.md).
"""

from __future__ import annotations

import math
import numbers
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..base import Agent, num_envs_of, source_of

__all__ = ["MeteredAgent", "declared_madds"]


def declared_madds(agent) -> float | None:
    """The agent's declared ``decision_madds`` (multiply-adds per decision per image), checked; None when it
    declares none."""
    value = getattr(agent, "decision_madds", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{type(agent).__name__}.decision_madds must be a finite number >= 0 (multiply-adds per "
                         f"decision per image) or None (counted), got {value!r}")
    return float(value)


class MeteredAgent:
    """An agent whose ``act`` calls are timed and, when ``count_madds``, counted (see the module docstring).

    It forwards the agent protocol (``bind``, ``reset``, ``begin_episodes``, ``act``, ``privileged``), so it can be rolled out
    in the agent's place. Counting runs every ``act`` under ``FlopCounterMode``, which slows it: meter one
    batch with counting and the timed run without.

    Attributes:
        decisions: actions taken so far (episodes × steps).
        seconds: wall-clock spent in ``act``.
        madds: multiply-adds counted (or declared) so far.
    """

    def __init__(self, agent: Agent, count_madds: bool = False) -> None:
        self.agent = agent
        self.count_madds = count_madds
        self.privileged = bool(getattr(agent, "privileged", False))
        self.declared = declared_madds(agent)
        self.decisions = 0
        self.seconds = 0.0
        self.madds = 0.0

    def bind(self, view) -> None:
        bind = getattr(self.agent, "bind", None)
        if bind is not None:
            bind(view)

    def reset(self, num_envs: int) -> None:
        self.agent.reset(num_envs)

    def begin_episodes(self, image_index) -> None:
        begin = getattr(self.agent, "begin_episodes", None)
        if begin is not None:
            begin(image_index)

    def act(self, obs, deterministic: bool = True):
        n = num_envs_of(obs)
        if self.count_madds and self.declared is None:
            with FlopCounterMode(display=False) as counter:
                actions = self.agent.act(obs, deterministic=deterministic)
            self.madds += counter.get_total_flops() / 2.0
        else:
            t0 = time.perf_counter()
            actions = self.agent.act(obs, deterministic=deterministic)
            if torch.is_tensor(actions) and actions.is_cuda:
                torch.cuda.synchronize(actions.device)
            self.seconds += time.perf_counter() - t0
            if self.count_madds:
                self.madds += float(self.declared) * n
        self.decisions += n
        return actions

    @property
    def unaccounted(self) -> bool:
        """True when the count found no multiply-adds in ``act`` although decisions were made, the agent declares
        no ``decision_madds``, and it is not one of this package's own agents (whose 0 is known): its cost, if it
        computes in numpy or other non-torch code, is missing from the results."""
        return (self.count_madds and self.declared is None and self.decisions > 0 and self.madds == 0.0
                and source_of(type(self.agent)) != "baseline")

    @property
    def madds_per_decision(self) -> float:
        """Multiply-adds of one decision (one episode's action at one step)."""
        return self.madds / self.decisions if self.decisions else 0.0

    @property
    def seconds_per_decision(self) -> float:
        """Wall-clock seconds of ``act`` per decision (batched, so a batch's time split over its episodes)."""
        return self.seconds / self.decisions if self.decisions else 0.0
