"""Agents: the protocol and registry, the baselines, the paper's PPO agent and training, the SB3 agents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
from agents.base import Agent
from agents.baselines import OracleAgent, RasterAgent, SaliencyAgent
from agents.paper_ppo import PaperPPOAgent, save_policy_into_checkpoint, train_paper_ppo
from agents.trained import load_agent, read_agent_json
from feature_nets.checkpoint import load_checkpoint, save_checkpoint
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import bind_view
from gfnet_env.settings import EnvSettings
from helpers import tiny_dataset, tiny_model
from helpers import with_tiny_hparams

ENV_ID = "GFNet-ImageNet-v0"
BASELINES = ["random", "center", "raster", "saliency", "oracle"]
SB3 = ["sb3-ppo", "sb3-a2c", "sb3-sac", "sb3-td3", "sb3-dqn", "sb3-recurrent-ppo"]


def core_for(agent: Agent, model, dataset, n: int = 5, **settings) -> GFNetCore:
    s = {**agent.env_settings(), **settings}
    core = GFNetCore(model, dataset, n, EnvSettings(**s), device="cpu")
    bind_view(core, agent)  # the public view, or the privileged one for label-reading agents
    return core


def run_episode(agent: Agent, core: GFNetCore, indices=None):
    """Actions of each step and the final info of one batch of episodes."""
    n = core.num_envs
    agent.reset(n)
    core.reset_slots(np.arange(n), indices if indices is not None else list(range(n)))
    actions, info = [], None
    for _ in range(core.max_steps):
        a = agent.act(core.observe(), deterministic=True)
        actions.append(a)
        _, _, info = core.step(a)
    return actions, info


def check_actions(agent: Agent, actions: list[np.ndarray], n: int) -> None:
    for a in actions:
        assert isinstance(a, np.ndarray)
        if agent.action_mode == "continuous":
            assert a.shape == (n, 2) and a.dtype == np.float32
            low = -1.0 if agent.action_range == "symmetric" else 0.0  # the env's action box
            assert np.all((a >= low) & (a <= 1)) and np.isfinite(a).all()
        else:
            g = agent.env_settings()["grid_size"]
            assert a.shape == (n,) and a.dtype == np.int64
            assert np.all((a >= 0) & (a < g * g))


# --- registry --------------------------------------------------------------------------------------------

def test_registry_lists_every_agent_and_rejects_unknown():
    names = agents.available()
    for name in BASELINES + ["paper-ppo"] + SB3:
        assert name in names
    with pytest.raises(KeyError, match="registered agents"):
        agents.make("no-such-agent")
    assert agents.is_trainable("paper-ppo") and agents.is_trainable("sb3-dqn")
    assert not agents.is_trainable("random")


def test_register_custom_agent():
    class Mine(Agent):
        name = "mine-test"

        def act(self, obs, deterministic=True):
            return np.zeros((len(obs), 2), np.float32)

    agents.register("mine-test", Mine)
    try:
        assert isinstance(agents.make("mine-test"), Mine)
        with pytest.raises(ValueError, match="already registered"):
            agents.register("mine-test", Mine)
    finally:
        agents.unregister("mine-test")


# --- baselines --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BASELINES + ["paper-ppo"])
def test_agent_acts_on_a_batch(model, dataset, name):
    agent = PaperPPOAgent.from_checkpoint(model, device="cpu") if name == "paper-ppo" else \
        agents.make(name, **({"grid_size": 3} if name == "oracle" else {}))
    core = core_for(agent, model, dataset, n=5)
    actions, info = run_episode(agent, core)
    assert len(actions) == model.T - 1
    check_actions(agent, actions, 5)
    assert info["step"].tolist() == [model.T - 1] * 5


def test_random_is_seeded(model, dataset):
    a = agents.make("random", seed=3).act(np.zeros((4, 32)))
    b = agents.make("random", seed=3).act(np.zeros((4, 32)))
    c = agents.make("random", seed=4).act(np.zeros((4, 32)))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_raster_scans_cells_in_snake_order(model, dataset):
    agent = RasterAgent(grid_size=3)
    agent.reset(2)
    got = [tuple(agent.act(np.zeros((2, 4)))[0]) for _ in range(10)]
    cells = [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0), (2, 0), (2, 1), (2, 2), (0, 0)]
    assert got == [(r / 2, c / 2) for r, c in cells]
    # with a bound core: ⌈√(T−1)⌉ = 2 cells per side for T = 4
    core = core_for(RasterAgent(), model, dataset, n=2)
    agent = RasterAgent()
    agent.bind(core.view())
    assert agent.cell_order() == [(0, 0), (0, 1), (1, 1), (1, 0)]


def test_saliency_centres_the_patch_on_the_strongest_cell(model, dataset):
    agent = SaliencyAgent()
    core = core_for(agent, model, dataset, n=2)
    agent.reset(2)
    core.reset_slots(np.arange(2), [0, 1])  # after the glance the map covers the whole image
    c, h, w = model.feature_map_shape
    s, p = model.image_size, model.patch_size
    fmap = np.zeros((2, c, h, w), np.float32)
    fmap[0, :, 0, 0] = 1.0        # top-left cell
    fmap[1, :, h - 1, 1] = 1.0    # bottom row, second column
    obs = core.observe()
    assert obs["box"].tolist() == [[0, 0, s, s]] * 2  # the glance saw the whole image
    a = agent.act({**obs, "feature_map": fmap})

    def expect(i, j):
        return np.clip([((i + 0.5) / h * s - p / 2) / (s - p), ((j + 0.5) / w * s - p / 2) / (s - p)], 0, 1)

    np.testing.assert_allclose(a[0], expect(0, 0), atol=1e-6)
    np.testing.assert_allclose(a[1], expect(h - 1, 1), atol=1e-6)
    # after a focus step the map covers the previous patch: the action stays near that patch
    core.step(np.array([[0.0, 0.0], [1.0, 1.0]], np.float32))
    a = agent.act(core.observe())
    corner = a * (s - p)
    assert np.all(corner[0] <= p) and np.all(corner[1] >= s - 2 * p)


def test_oracle_picks_the_cell_with_the_highest_true_class_probability(model, dataset):
    g, n = 3, 4
    oracle = OracleAgent(grid_size=g)
    core = core_for(oracle, model, dataset, n=n, grid_size=g)
    oracle.reset(n)
    core.reset_slots(np.arange(n), list(range(n)))
    probe = GFNetCore(model, dataset, n, EnvSettings(action_mode="grid", grid_size=g), device="cpu")
    history: list[np.ndarray] = []
    for _step in range(model.T - 1):
        cand = oracle.candidate_probs()                       # (n, G²)
        # brute force: replay the episode so far on a probe core, then step every image at one cell
        for cell in range(g * g):
            probe.reset_slots(np.arange(n), list(range(n)))
            for past in history:
                probe.step(past)
            probe.step(np.full(n, cell))
            py = torch.as_tensor(probe.privileged_view().true_class_probs())
            torch.testing.assert_close(cand[:, cell], py, atol=1e-5, rtol=0)
        a = oracle.act(core.observe())
        assert np.array_equal(a, cand.argmax(1).numpy())
        core.step(a)
        py = torch.as_tensor(core.privileged_view().true_class_probs())
        torch.testing.assert_close(py, cand.max(1).values, atol=1e-5, rtol=0)
        history.append(a)


def test_oracle_refuses_a_different_grid(model, dataset):
    oracle = OracleAgent(grid_size=3)
    core = core_for(oracle, model, dataset, n=2, grid_size=4)
    oracle.reset(2)
    core.reset_slots(np.arange(2), [0, 1])
    with pytest.raises(ValueError, match="grid_size=3"):
        oracle.act(core.observe())


# --- the paper's PPO --------------------------------------------------------------------------------------

def test_paper_ppo_deterministic_actions_are_the_models_own(model, dataset):
    """The checkpoint policy as an agent takes exactly the actions GFNet's own inference loop takes."""
    agent = PaperPPOAgent.from_checkpoint(model, device="cpu")
    core = core_for(agent, model, dataset, n=4)
    actions, _ = run_episode(agent, core)
    images = torch.stack([dataset[i][0] for i in range(4)])
    _, ref = model.run(images)
    for a, r in zip(actions, ref):
        np.testing.assert_allclose(a, r.numpy(), atol=1e-6)
    # stochastic actions are in range and differ from the mean
    agent.reset(4)
    core.reset_slots(np.arange(4), [0, 1, 2, 3])
    s = agent.act(core.observe(), deterministic=False)
    assert s.shape == (4, 2) and np.all((s >= 0) & (s <= 1)) and not np.allclose(s, actions[0])


def _train_ppo(out, steps=72, **kw):
    return train_paper_ppo(ENV_ID, steps, out, seed=0, batch_size=6, checkpoint=tiny_model(), dataset=tiny_dataset(),
                           device="cpu", **kw)


def test_paper_ppo_train_save_load_roundtrip(tmp_path):
    agent = _train_ppo(tmp_path / "run")
    out = tmp_path / "run"
    assert (out / "paper_ppo.pt").exists() and (out / "paper_ppo_latest.pt").exists()
    assert read_agent_json(out)["agent"] == "paper-ppo"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    rows = (out / "progress.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and "accuracy_step_3" in rows[0]  # 72 steps / (6 images × 3 steps) = 4 updates
    assert isinstance(agent.policy, torch.nn.Module)
    loaded = load_agent("paper-ppo", out, device="cpu")
    for k, v in agent.policy.state_dict().items():
        assert torch.equal(v.cpu(), loaded.policy.state_dict()[k])
    obs = np.random.default_rng(0).normal(size=(3, *tiny_model().feature_map_shape)).astype(np.float32)
    agent.reset(3), loaded.reset(3)
    np.testing.assert_array_equal(agent.act(obs), loaded.act(obs))
    # the file round-trips on its own too
    again = PaperPPOAgent.load(agent.save(tmp_path / "copy.pt"))
    assert torch.equal(again.policy.actor[0].weight, agent.policy.actor[0].weight.cpu())


def test_paper_ppo_training_changes_the_policy_and_resume_is_exact(tmp_path):
    straight = _train_ppo(tmp_path / "a", steps=72)
    _train_ppo(tmp_path / "b", steps=36)
    resumed = _train_ppo(tmp_path / "b", steps=72, resume=True)
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k
    assert len((tmp_path / "b" / "progress.csv").read_text().splitlines()) == 1 + 4
    one = _train_ppo(tmp_path / "c", steps=18)  # a single update from the same seeded start
    assert not torch.equal(one.policy.actor[0].weight, straight.policy.actor[0].weight)


def test_policy_written_back_into_a_checkpoint(tmp_path, model):
    src = save_checkpoint(model, tmp_path / "gfnet.pth.tar", anytime_classification=[1.0, 2.0, 3.0, 4.0])
    agent = _train_ppo(tmp_path / "run", steps=18, init_policy=model.policy)
    dst = save_policy_into_checkpoint(agent.policy, src, tmp_path / "gfnet_stage2.pth.tar", stage=2)
    loaded = load_checkpoint(dst)
    for k, v in agent.policy.state_dict().items():
        assert torch.equal(loaded.model.policy.state_dict()[k], v.cpu())
    assert loaded.anytime_classification is None and loaded.extra["stage"] == 2
    for k, v in model.local_encoder.state_dict().items():
        assert torch.equal(loaded.model.local_encoder.state_dict()[k], v)


def test_paper_ppo_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="feature_map"):
        _train_ppo(tmp_path / "x", obs_mode="gru")


# --- SB3 agents -------------------------------------------------------------------------------------------

def _sb3_kwargs(name: str) -> dict:
    if name in ("sb3-ppo", "sb3-recurrent-ppo"):
        return {"n_steps": 8, "batch_size": 16}
    if name == "sb3-a2c":
        return {"n_steps": 4}
    return {"learning_starts": 16, "buffer_size": 1000}


def train_tiny_sb3(name: str, out, steps: int = 96, resume: bool = False, **kw):
    from agents.sb3.agent import train_sb3

    kw.setdefault("grid_size", 3 if name == "sb3-dqn" else None)
    kw = with_tiny_hparams(name, {"n_envs": 4, "algo_kwargs": _sb3_kwargs(name), **kw})  # not the task's recipe
    return train_sb3(name, ENV_ID, steps, out, seed=0, device="cpu", checkpoint=tiny_model(),
                     dataset=tiny_dataset(), eval_episodes=4, eval_freq=steps // 2, checkpoint_freq=steps // 2,
                     resume=resume, **kw)


@pytest.mark.parametrize("name", SB3)
def test_sb3_train_save_load_roundtrip(tmp_path, name):
    out = tmp_path / name
    agent = train_tiny_sb3(name, out)
    file = f"{name.replace('-', '_')}.zip"
    assert (out / file).exists() and (out / file).with_suffix(".json").exists()
    meta = read_agent_json(out)
    assert meta["agent"] == name and meta["file"] == file
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "eval" / "evaluations.npz").exists()
    assert list((out / "checkpoints").glob("*_steps.zip"))
    sidecar = json.loads((out / file).with_suffix(".json").read_text())
    assert sidecar["env_kwargs"]["obs_mode"] == "gru"
    loaded = load_agent(None, out, device="cpu")
    assert type(loaded) is type(agent) and loaded.env_settings() == agent.env_settings()
    if name == "sb3-dqn":
        assert agent.env_settings() == {"obs_mode": "gru", "action_mode": "grid", "grid_size": 3}
    core = core_for(loaded, tiny_model(), tiny_dataset(), n=5)
    actions, _ = run_episode(loaded, core)
    check_actions(loaded, actions, 5)
    bind_view(core, agent)
    again, _ = run_episode(agent, core)
    for a, b in zip(actions, again):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_recurrent_ppo_keeps_lstm_state_per_env(tmp_path):
    agent = train_tiny_sb3("sb3-recurrent-ppo", tmp_path / "r")
    agent.reset(3)
    assert agent._state is None and agent._episode_start.all()
    obs = np.zeros((3, 32), np.float32)
    agent.act(obs)
    h1 = [s.copy() for s in agent._state]
    assert not agent._episode_start.any() and h1[0].shape[1] == 3
    agent.act(obs)
    assert any(not np.array_equal(a, b) for a, b in zip(h1, agent._state))  # memory moved on
    agent.reset(3)
    assert agent._state is None


def test_sb3_resume_continues_from_the_latest_checkpoint(tmp_path):
    out = tmp_path / "ppo"
    first = train_tiny_sb3("sb3-ppo", out, steps=64)
    assert first.model.num_timesteps >= 64
    second = train_tiny_sb3("sb3-ppo", out, steps=128, resume=True)
    assert 128 <= second.model.num_timesteps < 128 + 64  # continued, not restarted
    assert json.loads((out / "sb3_ppo.json").read_text())["num_timesteps"] == second.model.num_timesteps


def test_sb3_agent_without_a_model_says_how_to_train():
    with pytest.raises(ValueError, match="gfnet train-agent --agent sb3-sac"):
        agents.make("sb3-sac")


def test_sb3_rejects_unsupported_action_mode(tmp_path):
    with pytest.raises(ValueError, match="sb3-sac supports"):
        train_tiny_sb3("sb3-sac", tmp_path / "s", action_mode="grid")


def test_load_agent_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_agent("paper-ppo", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="agent.json"):
        load_agent(None, tmp_path / "empty")
    Path(tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(Exception):
        load_agent("paper-ppo", tmp_path / "bad.pt")


def test_export_for_inference_keeps_the_policy_and_drops_optimizer_moments(tmp_path):
    from agents.sb3.files import export_for_inference

    out = tmp_path / "ppo"
    train_tiny_sb3("sb3-ppo", out)
    small = export_for_inference(out / "sb3_ppo.zip", tmp_path / "small.zip")
    assert small.stat().st_size < (out / "sb3_ppo.zip").stat().st_size
    full, lean = load_agent("sb3-ppo", out / "sb3_ppo.zip", device="cpu"), load_agent("sb3-ppo", small, device="cpu")
    core = core_for(full, tiny_model(), tiny_dataset(), n=5)
    a, _ = run_episode(full, core)
    b, _ = run_episode(lean, core)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
