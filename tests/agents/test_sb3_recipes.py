"""SB3 recipes (agents/sb3/recipes.py), the exported features extractors, the VecMonitor of the adapter, replay-buffer
checkpoint pruning and the progress bar without ``rich``. Tiny models (tests/tiny.py): seconds on CPU."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from gymnasium import spaces

import gfnet_env
from agents.sb3.recipes import RECIPES, replay_buffer_size, resolve_recipe
from gfnet_env.sb3 import FeatureMapExtractor, GFNetDictExtractor
from helpers import tiny_dataset, tiny_model
from helpers import with_tiny_hparams

ENV_ID = "GFNet-ImageNet-v0"


def _tiny_env(n=4, **kw):
    return gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=n, checkpoint=tiny_model(), dataset=tiny_dataset(),
                                      device="cpu", seed=0, **kw)


def _train(algo, out, steps=64, recipe=False, **kw):
    from agents.sb3.agent import train_sb3

    kw.setdefault("n_envs", 4)
    if not recipe:  # the tiny settings (tests/tiny_sb3.py), not the embedded task's recipe
        kw = with_tiny_hparams(algo, kw)
    return train_sb3(algo, ENV_ID, steps, out, seed=0, device="cpu", checkpoint=tiny_model(),
                     dataset=tiny_dataset(), eval_episodes=4, eval_freq=steps // 2, checkpoint_freq=steps // 4, **kw)


# --- the table --------------------------------------------------------------------------------------------------
def test_every_algorithm_has_a_recipe_with_a_sized_rollout_or_buffer():
    from agents.sb3.algorithms import ACTION_MODES, ALGORITHMS

    assert set(RECIPES) == set(ALGORITHMS)
    for algo, r in RECIPES.items():
        assert r["action_mode"] in ACTION_MODES[algo] and r["obs_mode"] in ("gru", "feature_map", "dict")
        assert ("rollout_steps" in r) != ("buffer_size" in r), algo
        if r["action_mode"] == "continuous":
            assert r["action_range"] == "symmetric"  # a Gaussian's zero mean is the centre, not a corner


def test_hparams_override_given_values_which_override_the_recipe():
    r = resolve_recipe("dqn", n_envs=8, obs_mode=None, hparams={"learning_rate": 1e-4, "n_envs": 2})
    assert r["n_envs"] == 2 and r["learning_rate"] == 1e-4 and r["obs_mode"] == RECIPES["dqn"]["obs_mode"]
    assert resolve_recipe("dqn", n_envs=8)["n_envs"] == 8
    assert resolve_recipe("ppo", hparams={"obs_mode": "gru"})["obs_mode"] == "gru"
    r = resolve_recipe("ppo")
    r["net_arch"]["pi"].append(1)
    assert RECIPES["ppo"]["net_arch"]["pi"] == [256, 256]  # the table is copied, never changed


def test_replay_buffer_is_capped_by_bytes_and_memory():
    obs_bytes = 4 * 6400  # the MobileNet-V3 cascade's observation
    assert replay_buffer_size(1_000_000, obs_bytes, buffer_bytes=2**30, memory=2**40) == 2**30 // (2 * obs_bytes)
    assert replay_buffer_size(1_000_000, obs_bytes, buffer_bytes=None, memory=2**32) == 2**32 // 4 // (2 * obs_bytes)
    assert replay_buffer_size(5_000, 16, buffer_bytes=2**30, memory=2**40) == 5_000
    assert replay_buffer_size(1_000_000, obs_bytes, buffer_bytes=1, memory=2**40) == 1_000  # floor


def test_cli_trains_with_the_recipe_and_hparams_override_it(tmp_path, monkeypatch):
    import agents.sb3.agent as sb3
    from gfnet_cli.main import main

    seen = {}

    def fake_train(algo, env_id, steps, out_dir, **kw):
        seen.update(algo=algo, steps=steps, **kw)
        return sb3.AGENT_CLASSES["dqn"].__new__(sb3.AGENT_CLASSES["dqn"])

    monkeypatch.setattr(sb3, "train_sb3", fake_train)
    rc = main(["train-agent", "--agent", "sb3-dqn", "--env", ENV_ID, "--out", str(tmp_path / "d"),
               "--hparams", "learning_rate=1e-4", "--hparams", "net_arch=[64, 64]", "--hparams", "extractor=none",
               "--no-progress"])
    assert rc == 0 and "recipe" not in seen and seen["steps"] is None
    assert seen["hparams"] == {"learning_rate": 1e-4, "net_arch": [64, 64], "extractor": None}
    assert "obs_mode" not in seen and "n_envs" not in seen  # the recipe fills them


def test_recipe_sizes_the_rollout_to_n_envs_and_hparams_reach_the_model(tmp_path):
    agent = _train("ppo", tmp_path / "p", steps=64, recipe=True,
                   hparams={"rollout_steps": 32, "batch_size": 16, "learning_rate": 1e-3, "n_epochs": 1,
                            "extractor": "feature_map"})
    m = agent.model
    assert m.n_steps == 8 and m.batch_size == 16 and m.learning_rate == 1e-3
    assert isinstance(m.policy.features_extractor, FeatureMapExtractor)
    side = json.loads((tmp_path / "p" / "sb3_ppo.json").read_text())
    assert side["env_kwargs"]["obs_mode"] == "feature_map" and side["env_kwargs"]["action_mode"] == "grid"
    assert side["hparams"]["learning_rate"] == 1e-3
    from agents.trained import load_agent

    loaded = load_agent(None, tmp_path / "p", device="cpu")  # the extractor class loads without trust
    assert isinstance(loaded.model.policy.features_extractor, FeatureMapExtractor)


# --- extractors -------------------------------------------------------------------------------------------------
def test_extractor_feature_dims():
    fm = FeatureMapExtractor(spaces.Box(-np.inf, np.inf, (128, 4, 4), np.float32))
    assert fm.features_dim == 256 and fm(torch.rand(3, 128, 4, 4)).shape == (3, 256)
    d = spaces.Dict({"box": spaces.Box(0.0, 112.0, (4,), np.float32),
                     "feature_map": spaces.Box(-np.inf, np.inf, (128, 4, 4), np.float32),
                     "locations": spaces.Box(-1.0, 1.0, (4, 2), np.float32),
                     "state": spaces.Box(-1.0, 1.0, (256,), np.float32), "step": spaces.Discrete(5)})
    ext = GFNetDictExtractor(d)
    assert ext.features_dim == 256 + 4 + 8 + 256 + 5
    obs = {"box": torch.full((2, 4), 112.0), "feature_map": torch.rand(2, 128, 4, 4), "locations": -torch.ones(2, 4, 2),
           "state": torch.zeros(2, 256), "step": torch.nn.functional.one_hot(torch.tensor([0, 4]), 5).float()}
    out = ext(obs)
    assert out.shape == (2, 529) and torch.equal(out[:, :4].detach(), torch.ones(2, 4))  # box (first key): 112 → 1
    with pytest.raises(ValueError, match="obs_mode='feature_map'"):
        FeatureMapExtractor(spaces.Box(-1, 1, (256,), np.float32))


@pytest.mark.parametrize("obs_mode", ["feature_map", "dict"])
def test_extractors_train_a_step_with_plain_sb3(obs_mode):
    from stable_baselines3 import PPO

    cls = FeatureMapExtractor if obs_mode == "feature_map" else GFNetDictExtractor
    with _tiny_env(obs_mode=obs_mode, action_mode="grid", grid_size=3) as env:
        model = PPO("MultiInputPolicy" if obs_mode == "dict" else "MlpPolicy", env, n_steps=8, batch_size=16,
                    n_epochs=1, device="cpu", seed=0, policy_kwargs={"features_extractor_class": cls})
        before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
        model.learn(32)
        after = list(model.policy.features_extractor.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before))


# --- runs that behave -------------------------------------------------------------------------------------------
def test_vec_monitor_logs_episode_returns():
    with _tiny_env(n=3, action_range="symmetric") as env:
        env.reset()
        total = np.zeros(3)
        for _ in range(3):  # T = 4: three focus steps
            _, r, done, infos = env.step(np.zeros((3, 2), np.float32))
            total += r
            if done.all():
                break
        assert done.all()
        for i, info in enumerate(infos):
            assert info["episode"]["r"] == pytest.approx(total[i], abs=1e-5) and info["episode"]["l"] == 3
    bare = gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=2, checkpoint=tiny_model(), dataset=tiny_dataset(),
                                      device="cpu", monitor=False)
    assert type(bare).__name__ == "GFNetSB3VecEnv"
    bare.close()


@pytest.mark.parametrize("keep,checkpoints,buffers", [(None, 2, 0), ("latest", 2, 1), ("all", 2, 2), ("none", 2, 0),
                                                       ("all", None, 4)])
def test_checkpoints_keep_the_newest_and_buffers_only_when_asked(tmp_path, keep, checkpoints, buffers):
    kw = {} if keep is None else {"keep_replay_buffers": keep}
    _train("dqn", tmp_path / "d", steps=64, grid_size=3, algo_kwargs={"learning_starts": 16, "buffer_size": 1000},
           **kw, **({} if checkpoints else {"keep_checkpoints": None}))
    folder = tmp_path / "d" / "checkpoints"
    zips = sorted(folder.glob("dqn_*_steps.zip"), key=lambda f: int(f.name.split("_")[-2]))
    found = sorted(folder.glob("dqn_replay_buffer_*_steps.pkl"))
    assert [f.name for f in zips][-1] == "dqn_64_steps.zip" and len(zips) == (checkpoints or 4)
    assert len(found) == buffers
    if buffers:
        assert "dqn_replay_buffer_64_steps.pkl" in [f.name for f in found]
    assert (tmp_path / "d" / "best" / "best_model.zip").exists()


def test_a_run_that_stays_at_random_warns(tmp_path, monkeypatch):
    import agents.sb3.trainer as sb3_trainer
    from agents.sb3.callbacks import random_policy_reward

    with _tiny_env(n=4) as env:
        bar = random_policy_reward(env, 8, seed=0)
        assert np.isfinite(bar) and bar == random_policy_reward(env, 8, seed=0)  # seeded
    # a bar no policy can clear: the warning must come, once, after half the budget
    monkeypatch.setattr(sb3_trainer, "random_policy_reward", lambda *a, **k: float("inf"))
    with pytest.warns(UserWarning, match="at or below random actions") as record:
        _train("a2c", tmp_path / "a", steps=64, algo_kwargs={"n_steps": 2})
    assert sum("at or below random" in str(w.message) for w in record) == 1
    monkeypatch.setattr(sb3_trainer, "random_policy_reward", lambda *a, **k: float("-inf"))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        _train("a2c", tmp_path / "b", steps=64, algo_kwargs={"n_steps": 2})


def test_unfinished_training_folder_is_refused_with_how_to_resume(tmp_path):
    from agents.trained import load_agent, mark_finished, mark_unfinished, trained_paths, write_agent_json

    run = tmp_path / "run" / "seed_1"
    write_agent_json(run, "sb3-a2c", "sb3_a2c.zip")
    (run / "sb3_a2c.zip").write_bytes(b"x")
    mark_unfinished(run, "Resume it with the same command and --resume (seed 1, --out run).")
    for where in (run, run.parent):
        with pytest.raises(ValueError, match="has not finished.*--resume"):
            trained_paths("sb3-a2c", where)
    with pytest.raises(ValueError, match="has not finished"):
        load_agent("sb3-a2c", run)
    mark_finished(run)
    assert trained_paths("sb3-a2c", run.parent) == [run]


def test_train_agent_cli_marks_and_clears_unfinished(tmp_path):
    from gfnet_cli.main import main

    out = tmp_path / "a2c"
    rc = main(["train-agent", "--agent", "sb3-a2c", "--env", "GFNet-ClutteredFashionMNIST-v0", "--steps", "32",
               "--n-envs", "4", "--hparams", "n_steps=4", "--eval-episodes", "4", "--no-progress", "--seeds", "2",
               "--out", str(out)])
    assert rc == 0
    for seed in (0, 1):
        assert (out / f"seed_{seed}" / "agent.json").exists() and not (out / f"seed_{seed}" / "UNFINISHED").exists()
    bad = tmp_path / "bad"
    assert main(["train-agent", "--agent", "sb3-a2c", "--env", "GFNet-ClutteredFashionMNIST-v0", "--steps", "32",
                 "--hparams", "learning_rat=1", "--no-progress", "--out", str(bad)]) == 2
    assert not bad.exists()  # refused before any work: nothing left behind


def test_progress_bar_does_not_need_rich(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich", None)  # `import rich` now fails
    agent = _train("a2c", tmp_path / "a", steps=32, progress_bar=True, algo_kwargs={"n_steps": 4})
    assert agent.model.num_timesteps == 32
    assert "32/32" in capsys.readouterr().err


def test_unknown_hparam_is_a_clear_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="sb3-a2c:.*learning_rat"):
        _train("a2c", tmp_path / "bad", steps=32, recipe=True, hparams={"learning_rat": 1e-3})
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_continuous_off_policy_trains_with_default_checkpointing(tmp_path, algo):
    # no replay buffer saved by default, and no on-policy snapshot (SAC/TD3 policies have no single optimizer)
    agent = _train(algo, tmp_path / algo, steps=32, algo_kwargs={"learning_starts": 8, "buffer_size": 1000})
    assert agent.model.num_timesteps == 32
    folder = tmp_path / algo / "checkpoints"
    assert not list(folder.glob("*replay_buffer*")) and len(list(folder.glob(f"{algo}_*_steps.zip"))) == 2


def test_td3_exploration_noise_from_the_recipe_and_its_model_loads_safely(tmp_path):
    from stable_baselines3.common.noise import NormalActionNoise

    from agents.sb3.agent import SB3TD3Agent
    from agents.sb3.files import export_for_inference

    assert RECIPES["td3"]["action_noise_std"] == 0.1
    agent = _train("td3", tmp_path / "t", steps=32, hparams={"action_noise_std": 0.3},
                   algo_kwargs={"learning_starts": 8, "buffer_size": 1000})
    noise = agent.model.action_noise
    noise = getattr(noise, "base_noise", noise)  # SB3 wraps it per env (VectorizedActionNoise) for n_envs > 1
    assert isinstance(noise, NormalActionNoise) and np.allclose(noise._sigma, 0.3)
    # the saved zip holds the noise object; the restricted loader reads it without --trust-agent
    loaded = SB3TD3Agent.load(tmp_path / "t" / "sb3_td3.zip", device="cpu")
    assert np.allclose(getattr(loaded.model.action_noise, "base_noise", loaded.model.action_noise)._sigma, 0.3)
    # export drops both optimizers' moments (actor and critic) and acts the same
    small = export_for_inference(tmp_path / "t" / "sb3_td3.zip", tmp_path / "small.zip")
    assert small.stat().st_size < (tmp_path / "t" / "sb3_td3.zip").stat().st_size
    with pytest.raises(ValueError, match="continuous"):
        _train("dqn", tmp_path / "d", steps=32, hparams={"action_noise_std": 0.1})


def test_train_sb3_uses_the_recipe_by_default(tmp_path):
    from agents.sb3.agent import train_sb3

    agent = train_sb3("dqn", ENV_ID, 32, tmp_path / "d", seed=0, device="cpu", checkpoint=tiny_model(),
                      dataset=tiny_dataset(), eval_episodes=4, eval_freq=32, n_envs=4, grid_size=3,
                      hparams={"learning_starts": 8, "buffer_size": 1000})
    used = agent.metadata["hparams"]
    assert used["obs_mode"] == RECIPES["dqn"]["obs_mode"] == "feature_map" and used["gamma"] == RECIPES["dqn"]["gamma"]
    assert type(agent.model.policy.q_net.features_extractor).__name__ == "FeatureMapExtractor"
