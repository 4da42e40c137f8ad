"""GFNet agents: the agent protocol and registry, baselines, the paper's PPO, SB3 agents and the benchmark.

    import agents
    agents.available()                         # names of every registered agent
    agent = agents.make("center")
    agent = agents.load_agent("paper-ppo", "runs/ppo")   # a trained agent's folder or file
    results = agents.run_benchmark("GFNet-ClutteredFashionMNIST-v0", ["random", "center", "paper-ppo"], "out/")
"""

from __future__ import annotations

from .base import Agent, Run, RunContext
from .registry import available, base_name, factory_of, is_trainable, make, register, unregister
from .trained import load_agent


def run_benchmark(*args, **kwargs):
    """:func:`agents.benchmark.run_benchmark` (imported on first use: it pulls in the env and the plots)."""
    from .benchmark import run_benchmark as _run

    return _run(*args, **kwargs)


__all__ = ["Agent", "Run", "RunContext", "available", "base_name", "factory_of", "is_trainable", "load_agent", "make",
           "register", "run_benchmark", "unregister"]
