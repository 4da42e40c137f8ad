"""An agent's own decision cost: counted multiply-adds of ``act`` and wall-clock, apart from the env's."""

from __future__ import annotations

import numpy as np
import pytest

import agents
from agents.benchmark.costs import MeteredAgent
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings
from helpers import tiny_dataset, tiny_model


def _metered(agent, count=True, n=4, **settings):
    model, ds = tiny_model(), tiny_dataset(n=12)
    metered = MeteredAgent(agent, count_madds=count)
    with GFNetCore(model, ds, n, EnvSettings(**{**agent.env_settings(), **settings}), device="cpu") as core:
        rollout(core, metered, list(range(8)))
    return metered, model


@pytest.mark.parametrize("name", ["random", "center", "raster", "saliency"])
def test_baselines_cost_no_multiply_adds(name):
    metered, model = _metered(agents.make(name))
    assert metered.decisions == 8 * (model.T - 1) and metered.madds_per_decision == 0.0


def test_oracle_declares_no_decision_cost():
    metered, _ = _metered(agents.make("oracle", grid_size=3), grid_size=3)
    assert metered.madds_per_decision == 0.0


def test_paper_ppo_pays_its_policy():
    from feature_nets.madds import count_madds
    from agents.paper_ppo import PaperPPOAgent

    agent = PaperPPOAgent.from_checkpoint(tiny_model(), device="cpu")
    metered, model = _metered(agent)
    assert metered.madds_per_decision == pytest.approx(count_madds(model)["policy_step"], rel=1e-6)
    timed, _ = _metered(PaperPPOAgent.from_checkpoint(tiny_model(), device="cpu"), count=False)
    assert timed.seconds_per_decision > 0 and timed.madds == 0.0


def test_sb3_policy_matches_a_hand_count():
    """A tiny MLP policy on the GRU state: D·8 + 8·2 multiply-adds for the action mean per decision."""
    from stable_baselines3 import PPO

    import gfnet_env

    vec = gfnet_env.make_sb3_vec_env("GFNet-ImageNet-v0", n_envs=2, checkpoint=tiny_model(), dataset=tiny_dataset(),
                                     device="cpu", action_range="symmetric")
    model = PPO("MlpPolicy", vec, policy_kwargs={"net_arch": [8]}, n_steps=8, batch_size=8, device="cpu", seed=0)
    agent = agents.factory_of("sb3-ppo")(model)
    metered, tiny = _metered(agent)
    d = tiny.state_dim
    assert metered.madds_per_decision == pytest.approx(d * 8 + 8 * 2)
    vec.close()
    assert np.isfinite(metered.madds)


def test_env_charges_the_looks_and_paper_ppo_adds_its_policy_to_reach_the_papers_accounting():
    from feature_nets.madds import count_madds

    model = tiny_model()
    counted = count_madds(model)
    with GFNetCore(model, tiny_dataset(n=4), 2, EnvSettings(), device="cpu") as core:
        env = core.madds_per_step
    assert counted["policy_step"] > 0 and env[0] == counted["per_step"][0]
    np.testing.assert_allclose(env[1:] + counted["policy_step"], counted["per_step"][1:])
    np.testing.assert_allclose(np.cumsum(env), counted["env_cumulative"])
