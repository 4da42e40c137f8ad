"""The env as a TorchRL environment (issue 21, item 3): specs for every obs/action mode, rollouts equal to the
Gymnasium vector env's, tensors on the core's device, and ``import gfnet_env`` without torchrl."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from helpers import needs_fashion_mnist
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs.utils import check_env_specs

import gfnet_env
from gfnet_env.torchrl_env import GFNetTorchRLEnv, spec_of

ENV_ID = "GFNet-ImageNet-v0"
N = 4
G = 2


def make(model, dataset, **kw):
    return gfnet_env.make_torchrl_env(ENV_ID, num_envs=N, checkpoint=model, dataset=dataset, device="cpu", **kw)


@pytest.mark.parametrize("obs_mode,action_mode,stop", [(o, a, s) for o in ("gru", "feature_map", "dict")
                                                       for a, s in (("grid", False), ("continuous", True))]
                         + [("dict", "grid", True), ("gru", "continuous", False)])
def test_check_env_specs_passes(model, dataset, obs_mode, action_mode, stop):
    with_stop = dict(stop_action=True) if stop else {}
    env = make(model, dataset, obs_mode=obs_mode, action_mode=action_mode, grid_size=G, seed=0, **with_stop)
    try:
        check_env_specs(env, seed=0)
        assert env.batch_size == torch.Size([N]) and env.device == env.core.device
        want_obs = ["state", "feature_map", "step", "locations", "box"] if obs_mode == "dict" else ["observation"]
        assert sorted(k for k in env.observation_spec.keys() if k != "info") == sorted(want_obs)
        if action_mode == "grid":
            assert isinstance(env.action_spec, Categorical) and env.action_spec.space.n == G * G + int(stop)
        else:
            assert isinstance(env.action_spec, Bounded) and env.action_spec.shape == (N, 3 if stop else 2)
        td = env.rollout(6, break_when_any_done=False)  # past an episode's end: the ended envs were reset
        assert td.batch_size == (N, 6) and td["next", "done"].any()
    finally:
        env.close()


def test_spaces_map_to_specs():
    dev = torch.device("cpu")
    box = spec_of(spaces.Box(-1.0, 1.0, (3,), np.float32), (2,), dev)
    assert isinstance(box, Bounded) and box.shape == (2, 3) and float(box.space.low.min()) == -1.0
    assert isinstance(spec_of(spaces.Box(-np.inf, np.inf, (3,), np.float32), (2,), dev), Unbounded)
    cat = spec_of(spaces.Discrete(5), (2,), dev)
    assert isinstance(cat, Categorical) and cat.space.n == 5 and cat.dtype == torch.int64
    d = spec_of(spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0.0, 4.0, (2,), np.float32)}), (2,), dev)
    assert isinstance(d, Composite) and set(d.keys()) == {"a", "b"} and d["b"].shape == (2, 2)
    with pytest.raises(TypeError, match="no TorchRL spec"):
        spec_of(spaces.MultiBinary(3), (2,), dev)


@pytest.mark.parametrize("obs_mode,action_mode", [("gru", "grid"), ("dict", "continuous")])
def test_rollout_equals_the_gymnasium_vector_env(model, dataset, obs_mode, action_mode):
    """Same seed, same actions: TorchRL's (next) observations, rewards, terminations and infos are the vector env's
    (SAME_STEP: its final_obs / final_info where an episode ended, its returned obs as the next root obs)."""
    kw = dict(obs_mode=obs_mode, action_mode=action_mode, grid_size=G, stop_action=True)
    steps = 12
    rng = np.random.default_rng(0)
    if action_mode == "grid":
        acts = rng.integers(0, G * G + 1, (steps, N))
    else:
        acts = rng.random((steps, N, 3)).astype(np.float32)
        acts[..., 2] = np.where(rng.random((steps, N)) < 0.25, 0.9, 0.1)
    env = make(model, dataset, **kw)
    env.set_seed(7)
    k = iter(range(steps))

    def policy(td):
        return td.set("action", torch.as_tensor(acts[next(k)]))

    td = env.rollout(steps, policy, break_when_any_done=False)
    env.close()
    keys = ["state", "feature_map", "step", "locations", "box"] if obs_mode == "dict" else ["observation"]

    def obs_at(o, key, i):
        return np.asarray(o[key][i] if isinstance(o, dict) else o[i], np.float64)

    ends = 0
    with gym.make_vec(ENV_ID, num_envs=N, vectorization_mode="vector_entry_point", checkpoint=model,
                      dataset=dataset, device="cpu", **kw) as venv:
        obs, info = venv.reset(seed=7)
        for t in range(steps):
            for key in keys:
                for i in range(N):
                    np.testing.assert_allclose(td[i, t][key].numpy(), obs_at(obs, key, i), atol=1e-5)
            assert td[:, t]["info", "image_index"].tolist() == info["image_index"].tolist()
            obs, r, term, _, info = venv.step(acts[t])
            nxt = td[:, t]["next"]
            np.testing.assert_allclose(nxt["reward"].numpy()[:, 0], r, atol=1e-5)
            assert nxt["terminated"][:, 0].tolist() == nxt["done"][:, 0].tolist() == term.tolist()
            for i in range(N):
                final = info["final_info"] if term[i] else info
                assert nxt["info", "prediction"][i] == final["prediction"][i]
                assert nxt["info", "correct"][i] == final["correct"][i]
                assert nxt["info", "stopped"][i] == final["stopped"][i]
                for key in keys:
                    if term[i]:  # the ended episode's last obs; the returned obs is the next episode's
                        fo = info["final_obs"][i]
                        want = np.asarray(fo[key] if isinstance(fo, dict) else fo, np.float64)
                    else:
                        want = obs_at(obs, key, i)
                    np.testing.assert_allclose(nxt[key][i].numpy(), want, atol=1e-5)
            ends += int(term.sum())
    assert 0 < ends < steps * N


def test_observations_stay_on_the_core_device(model, dataset):
    """The env's tensors are the core's device tensors (CPU here; the GPU check is benchmarks/gpu_suite.sh)."""
    env = make(model, dataset, obs_mode="dict", action_mode="grid", grid_size=G)
    td = env.reset()
    for key in ("state", "feature_map", "step", "locations", "box", ("info", "correct")):
        assert td[key].device == env.core.device
    env.close()
    env.close()  # idempotent
    assert isinstance(env, GFNetTorchRLEnv)


def test_import_gfnet_env_does_not_import_torchrl():
    """The TorchRL face loads on first use of its names (the other tests use ``gfnet_env.make_torchrl_env``)."""
    code = "import sys, gfnet_env; assert 'torchrl' not in sys.modules and 'tensordict' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_fashion_mnist
def test_the_example_agent_runs_in_the_benchmark(tmp_path, monkeypatch, capsys):
    """examples/torchrl_ppo.py saves an agent that `gfnet benchmark --import examples/torchrl_ppo.py
    --agent-dir torchrl-ppo=DIR` (the command it prints) loads and evaluates."""
    from agents import registry
    from gfnet_cli import main as cli

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(registry._REGISTRY)
    spec = importlib.util.spec_from_file_location("torchrl_ppo_example", root / "examples" / "torchrl_ppo.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        torch.manual_seed(0)
        actor = example.mlp(128 * 4 * 4, [8], 49)
        example.save_agent(actor, 128 * 4 * 4, [8], 49, tmp_path / "agent", {"steps": 0})
        loaded = example.TorchRLPPOAgent.load(tmp_path / "agent" / "policy.pt", device="cpu")
        obs = torch.randn(3, 128, 4, 4)
        assert loaded.act(obs.numpy()).tolist() == actor(obs).argmax(-1).tolist()
        out = tmp_path / "bench"
        code = cli.main(["benchmark", "--env", "GFNet-ClutteredFashionMNIST-v0", "--import", "examples/torchrl_ppo.py",
                         "--agents", "random,torchrl-ppo", "--agent-dir", f"torchrl-ppo={tmp_path / 'agent'}",
                         "--episodes", "16", "--seeds", "1", "--fit-episodes", "16", "--batch-size", "16",
                         "--device", "cpu", "--out", str(out)])
        assert code == 0, capsys.readouterr()
        res = json.loads((out / "results.json").read_text())
        assert res["agents"]["torchrl-ppo"]["n_runs"] == 1 and res["episodes"] == 16
    finally:
        for name in set(registry._REGISTRY) - before:
            registry.unregister(name)
