"""Stable-Baselines3 agents: PPO, SAC, A2C, TD3, DQN (grid actions) and sb3-contrib's RecurrentPPO.

* :mod:`~agents.sb3.agent` — a trained SB3 model as an agent, and :func:`train_sb3`;
* :mod:`~agents.sb3.trainer` — training a model: env, recipe, resume, callbacks;
* :mod:`~agents.sb3.recipes` — the recipe table (observation/action modes, network, sizes, steps);
* :mod:`~agents.sb3.algorithms` — the wrapped algorithms and the actions each accepts;
* :mod:`~agents.sb3.files` — model zips and replay buffers read without running code, atomic saves;
* :mod:`~agents.sb3.callbacks` — checkpoints, progress, the below-random warning, episode pictures.

The features extractors live with the env's SB3 face (:mod:`gfnet_env.sb3_extractors`): a plain-SB3 user needs
them without this package, and saved model zips name them by that module.
"""

from __future__ import annotations

from .agent import (AGENT_CLASSES, SB3A2CAgent, SB3Agent, SB3DQNAgent, SB3PPOAgent, SB3RecurrentPPOAgent,
                    SB3SACAgent, SB3TD3Agent, train_sb3)

__all__ = ["AGENT_CLASSES", "SB3A2CAgent", "SB3Agent", "SB3DQNAgent", "SB3PPOAgent", "SB3RecurrentPPOAgent",
           "SB3SACAgent", "SB3TD3Agent", "train_sb3"]
