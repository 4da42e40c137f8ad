"""GFNet agents: the agent protocol and registry, baselines, the paper's PPO, SB3 agents and the benchmark.

Sub-packages, in dependency order: :mod:`agents.paper_ppo` and :mod:`agents.sb3` (agents with their trainers),
then :mod:`agents.benchmark` (which runs them; nothing outside it imports it).

    import agents
    agents.available()                         # names of every registered agent
    agent = agents.make("center")
    agent = agents.load_agent("paper-ppo", "runs/ppo")   # a trained agent's folder or file

    from agents.benchmark import run_benchmark
    results = run_benchmark("GFNet-ClutteredFashionMNIST-v0", ["random", "center", "paper-ppo"], "out/")
"""

from __future__ import annotations

from .base import Agent, Run, RunContext
from .registry import available, base_name, factory_of, is_trainable, make, register, unregister
from .trained import load_agent

__all__ = ["Agent", "Run", "RunContext", "available", "base_name", "factory_of", "is_trainable", "load_agent", "make",
           "register", "unregister"]
