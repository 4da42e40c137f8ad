"""The embedded default task with its shipped weights: works after install, and the agents are ordered as they
should be on networks that were really trained (real behaviour, so real data: cluttered Fashion-MNIST)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import gfnet_env
from agents.benchmark.run import run_benchmark
from agents.sb3.agent import SHIPPED_AGENTS
from gfnet_env.tasks import DEFAULT_FMNIST_CHECKPOINT, WEIGHTS_DIR
from helpers import needs_fashion_mnist

ENV_ID = "GFNet-ClutteredFashionMNIST-v0"


def test_shipped_weights_are_small():
    sb3 = WEIGHTS_DIR / SHIPPED_AGENTS[(ENV_ID, "sb3-ppo")]
    for path in (DEFAULT_FMNIST_CHECKPOINT, sb3):
        assert path.exists(), f"{path} is not shipped"
        assert path.stat().st_size <= 5 * 2**20, f"{path} is {path.stat().st_size} bytes (> 5 MB)"


@needs_fashion_mnist
def test_make_with_no_argument_works():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["step"] == 0
    total, steps = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        total += r
        steps += 1
        if term or trunc:
            break
    assert steps == 4 and "is_success" in info
    venv = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (4, 256)
    assert gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=2).reset().shape == (2, 256)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return run_benchmark(ENV_ID, ["random", "center", "paper-ppo", "sb3-ppo", "oracle"], out, episodes=600,
                         seeds=2, fit_episodes=200, batch_size=100, device="cpu", seed=0, verbose=False)


@needs_fashion_mnist
def test_trained_agents_beat_random_and_oracle_bounds_all(results):
    last = {name: r["anytime_top1"][-1] for name, r in results["agents"].items()}
    assert last["paper-ppo"] > last["random"] + 2.0, last
    assert last["sb3-ppo"] > last["random"] + 1.0, last
    assert all(last["oracle"] >= v for v in last.values()), last
    # the glance is shared: every agent has the same step-0 accuracy
    assert len({round(r["anytime_top1"][0], 6) for r in results["agents"].values()}) == 1
    assert np.isfinite(results["agents"]["paper-ppo"]["mean_return"])
