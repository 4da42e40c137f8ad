"""Agents that stop (issue "When to look and when to stop", item 4): an agent's own ``stop_action`` and the
factory, SB3 models whose spaces have the stop action, and ``paper-ppo-stop`` (the paper's policy with a
Bernoulli stop head, trained by the same PPO with masks). Tiny models: seconds on CPU.

With a step cost far above any confidence gain (``STEP_COST`` · 56,992 multiply-adds per look of the tiny model ≈ 5.7
reward per look, against a gain of at most 1), stopping at the first decision is optimal; the tests check that
the tiny trainings learn exactly that, not only that the plumbing runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

import agents
import gfnet_env
from agents.paper_ppo import RolloutMemory, ppo_loss
from agents.sb3.algorithms import settings_from_spaces
from feature_nets.policy import PatchPolicy, StopPatchPolicy
from gfnet_env.factory import settings_for_agent
from gfnet_env.settings import EnvSettings
from helpers import fashion_mnist_available, run_cli, tiny_dataset, tiny_model, with_tiny_hparams

ENV_ID = "GFNet-ImageNet-v0"
FMNIST_ENV = "GFNet-ClutteredFashionMNIST-v0"
STEP_COST = 1e-4  # reward per multiply-add: ≈ 5.7 per look of the tiny model


def _core(agent, n=8, **kw):
    return gfnet_env.make_core(ENV_ID, n, device="cpu", agent=agent, checkpoint=tiny_model(), dataset=tiny_dataset(),
                               **kw)


# --- an agent's own stop_action ----------------------------------------------------------------------------------
class _Stopper(agents.Agent):
    obs_mode, action_mode, grid_size, stop_action = "gru", "grid", 3, True

    def act(self, obs, deterministic=True):
        return np.full(len(obs), 9, dtype=np.int64)  # G·G: stop at once


class _UserAgent:  # duck-typed, says nothing about stopping
    def env_settings(self):
        return {"obs_mode": "gru", "action_mode": "grid", "grid_size": 3}


def test_the_agent_decides_the_stop_action_whatever_the_env_kwargs_say():
    assert _Stopper().env_settings()["stop_action"] is True
    assert "stop_action" not in agents.make("random").env_settings()
    for env_says in (False, True):
        settings = EnvSettings(stop_action=env_says)
        assert settings_for_agent(settings, _Stopper()).stop_action is True
        assert settings_for_agent(settings, agents.make("random")).stop_action is False
        assert settings_for_agent(settings, _UserAgent()).stop_action is False
        assert settings_for_agent(settings, None).stop_action is env_says
    with _core(_Stopper(), stop_action=False) as core:
        result = gfnet_env.rollout(core, _Stopper(), range(8))
    assert result.stopped.all() and (result.exit_step == 0).all()
    with _core(agents.make("center"), stop_action=True) as core:  # a plain agent gets a plain core
        assert core.action_space == spaces.Box(0.0, 1.0, (2,), np.float32)


# --- SB3: spaces → settings ------------------------------------------------------------------------------------
def test_settings_from_spaces_read_the_stop_action():
    obs = spaces.Box(0, 1, (8,))
    assert settings_from_spaces(obs, spaces.Discrete(49)) == {"obs_mode": "gru", "action_mode": "grid", "grid_size": 7}
    assert settings_from_spaces(obs, spaces.Discrete(50)) == {"obs_mode": "gru", "action_mode": "grid", "grid_size": 7,
                                                              "stop_action": True}
    assert settings_from_spaces(obs, spaces.Discrete(2))["grid_size"] == 1
    assert settings_from_spaces(obs, spaces.Box(-1, 1, (3,))) == {
        "obs_mode": "gru", "action_mode": "continuous", "action_range": "symmetric", "stop_action": True}
    assert "stop_action" not in settings_from_spaces(obs, spaces.Box(0, 1, (2,)))
    with pytest.raises(ValueError, match="Discrete\\(7\\)"):
        settings_from_spaces(obs, spaces.Discrete(7))
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        settings_from_spaces(obs, spaces.Box(0, 1, (4,)))


# --- SB3: a tiny training with the stop action and a large step cost --------------------------------------------
@pytest.mark.parametrize("algo,steps,kw,learns", [
    ("ppo", 384, dict(action_mode="grid", grid_size=3, algo_kwargs={"n_steps": 16, "batch_size": 32},
                      hparams={"learning_rate": 3e-3}), True),
    ("sac", 600, {}, True),  # continuous Box(-1, 1, (3,))
    # plumbing only: 160 steps are too few for DQN (1,500 steps with exploration_fraction 0.5 and lr 1e-3 learned to
    # stop at once in a manual run)
    ("dqn", 160, dict(grid_size=3), False),
])
@pytest.mark.filterwarnings("ignore:.*the run is not learning")
def test_sb3_agent_trained_with_the_stop_action_loads_as_a_stopping_agent(tmp_path, algo, steps, kw, learns):
    from agents.sb3.agent import train_sb3

    out = tmp_path / algo
    train_sb3(algo, ENV_ID, steps, out, seed=0, device="cpu", checkpoint=tiny_model(), dataset=tiny_dataset(),
              eval_episodes=4, eval_freq=steps // 2, checkpoint_freq=steps // 2, stop_action=True,
              step_cost=STEP_COST, episode_images=0, **with_tiny_hparams(algo, {"n_envs": 4, **kw}))
    sidecar = json.loads((out / f"sb3_{algo}.json").read_text())
    assert sidecar["env_kwargs"]["stop_action"] is True and sidecar["env_kwargs"]["step_cost"] == STEP_COST
    loaded = agents.load_agent(f"sb3-{algo}", out)
    assert loaded.env_settings()["stop_action"] is True
    with _core(loaded) as core:  # no stop_action kwarg: the agent's own settings build a stop-capable core
        assert core.action_space.shape == ((3,) if algo == "sac" else ()) and core.settings.stop_action
        result = gfnet_env.rollout(core, loaded, range(24))
    assert result.exit_step.shape == (24,) and result.stopped.dtype == bool
    if learns:  # a look costs ~5.7, a gain is at most 1: it learned to answer with the glance
        assert result.stopped.all() and (result.exit_step == 0).all(), result.exit_step


# --- paper-ppo-stop ------------------------------------------------------------------------------------------------
def _rollout_memory(policy, n_steps=3, batch=6, seed=0):
    torch.manual_seed(seed)
    memory, hidden = RolloutMemory(), policy.initial_state(batch)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        state = torch.randn(batch, policy.feature_map_channels, policy.feature_map_size, policy.feature_map_size)
        with torch.no_grad():
            params, _value, hidden = policy.step(state, hidden)
        action, logprob = policy.sample(params, generator=gen)
        memory.states.append(state)
        memory.actions.append(action)
        memory.logprobs.append(logprob)
        memory.rewards.append(torch.randn(1, batch))
    return memory


def test_masked_loss_with_every_step_running_is_the_papers_loss():
    policy = PatchPolicy(8, 2, 16, conv=True)
    memory = _rollout_memory(policy)
    plain, _ = ppo_loss(policy, memory)
    memory.masks = [torch.ones(1, 6) for _ in memory.states]
    masked, _ = ppo_loss(policy, memory)
    torch.testing.assert_close(masked, plain)


def test_stop_policy_sampling_and_evaluation_agree_and_steps_after_an_end_are_masked():
    policy = StopPatchPolicy(8, 2, 16, conv=True)
    memory = _rollout_memory(policy)
    actions = torch.stack(memory.actions)
    assert set(actions[..., 2].unique().tolist()) <= {0.0, 1.0}
    logprobs, values, entropy = policy.evaluate(torch.stack(memory.states), actions)
    torch.testing.assert_close(logprobs, torch.stack(memory.logprobs))  # the rollout's log-probs: ratio 1
    memory.masks = [torch.ones(1, 6), torch.tensor([[1.0, 1, 1, 0, 0, 0]]), torch.tensor([[1.0, 0, 0, 0, 0, 0]])]
    loss, _ = ppo_loss(policy, memory)
    memory.states[2][1:] = 1e3  # what comes after an episode's end changes nothing
    memory.actions[1][3:] = torch.tensor([0.3, 0.3, 1.0])
    torch.testing.assert_close(ppo_loss(policy, memory)[0], loss)


def test_stop_policy_keeps_the_papers_parts():
    plain = PatchPolicy(8, 2, 16, conv=False)
    stop = StopPatchPolicy.from_policy(plain)
    fmap = torch.randn(4, 8, 2, 2)
    torch.testing.assert_close(stop.step(fmap, stop.initial_state(4))[0][:, :2],
                               plain.step(fmap, plain.initial_state(4))[0])
    assert set(stop.state_dict()) - set(plain.state_dict()) == {"stop_head.0.weight", "stop_head.0.bias"}
    mean, _ = stop.mean_action(fmap)
    assert mean.shape == (4, 3) and set(mean[:, 2].tolist()) <= {0.0, 1.0}


def test_paper_ppo_stop_learns_to_stop_when_looks_cost_more_than_they_gain(tmp_path):
    from agents.paper_ppo import PaperPPOStopAgent, train_paper_ppo

    out = tmp_path / "stop"
    agent = train_paper_ppo(ENV_ID, 2400, out, seed=0, batch_size=8, device="cpu", lr=3e-3, stop=True,
                            checkpoint=tiny_model(), dataset=tiny_dataset(), step_cost=STEP_COST, episode_images=2)
    assert isinstance(agent, PaperPPOStopAgent) and agent.env_settings()["stop_action"] is True
    assert json.loads((out / "agent.json").read_text())["agent"] == "paper-ppo-stop"
    rows = (out / "progress.csv").read_text().splitlines()
    assert rows[0].endswith(",mean_looks,stopped")
    loaded = agents.load_agent(None, out)
    assert isinstance(loaded, PaperPPOStopAgent) and isinstance(loaded.policy, StopPatchPolicy)
    with pytest.raises(ValueError, match="stop head"):
        agents.load_agent("paper-ppo", out)
    with _core(loaded) as core:
        result = gfnet_env.rollout(core, loaded, range(24))
    assert result.stopped.all() and (result.exit_step == 0).all(), result.exit_step


def test_paper_ppo_refuses_the_stop_action_and_a_stop_policy_stays_out_of_checkpoints(tmp_path):
    from agents.paper_ppo import save_policy_into_checkpoint, train_paper_ppo

    with pytest.raises(ValueError, match="paper-ppo-stop"):
        train_paper_ppo(ENV_ID, 18, tmp_path / "p", batch_size=6, device="cpu", stop_action=True,
                        checkpoint=tiny_model(), dataset=tiny_dataset())
    with pytest.raises(ValueError, match="stop head"):
        save_policy_into_checkpoint(StopPatchPolicy(8, 2, 16, conv=True), tmp_path / "x.pth", tmp_path / "y.pth")


# --- the CLI ---------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST files not installed")
@pytest.mark.filterwarnings("ignore:.*the run is not learning", "ignore:.*fewer than 5 updates")
def test_cli_trains_stopping_agents_and_benchmarks_them_beside_plain_ones(tmp_path, capsys):
    from feature_nets.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tiny_model(num_classes=10), tmp_path / "tiny.pth.tar")
    kw = ["--env-kwarg", f"checkpoint={ckpt}", "--env-kwarg", "num_samples=40", "--device", "cpu", "--no-progress"]
    stop = ["--env-kwarg", "stop_action=true", "--env-kwarg", f"step_cost={STEP_COST}"]
    code, out = run_cli(["train-agent", "--agent", "paper-ppo-stop", "--env", FMNIST_ENV, "--steps", "36",
                         "--batch-size", "6", "--out", str(tmp_path / "pps"), "--env-kwarg", f"step_cost={STEP_COST}"]
                        + kw, capsys)
    assert code == 0, out
    code, out = run_cli(["train-agent", "--agent", "sb3-ppo", "--env", FMNIST_ENV, "--steps", "64", "--n-envs", "4",
                         "--grid-size", "3", "--hparams", "n_steps=16", "--hparams", "batch_size=32",
                         "--eval-episodes", "4", "--out", str(tmp_path / "sppo")] + stop + kw, capsys)
    assert code == 0, out
    assert agents.load_agent(None, tmp_path / "sppo").env_settings()["stop_action"] is True
    code, out = run_cli(["benchmark", "--env", FMNIST_ENV, "--agents", "random,paper-ppo-stop,sb3-ppo",
                         "--agent-dir", f"paper-ppo-stop={tmp_path / 'pps'}", "--agent-dir",
                         f"sb3-ppo={tmp_path / 'sppo'}", "--reference", "random", "--episodes", "6", "--seeds", "1",
                         "--batch-size", "4", "--out", str(tmp_path / "bench")] + kw[:-1], capsys)
    assert code == 0, out
