"""The Gymnasium environment, its vector face and its SB3 face, on a tiny GFNet."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from PIL import Image
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import gfnet_env
from helpers import tiny_model
from helpers import config_names, load_config, write_official_checkpoint
from gfnet_env.actions import grid_to_unit

ENV_ID = "GFNet-ImageNet-v0"
MODES = [(o, a) for o in ("gru", "feature_map", "dict") for a in ("continuous", "grid")]


def make(model, dataset, **kw):
    kw.setdefault("device", "cpu")
    return gym.make(ENV_ID, checkpoint=model, dataset=dataset, **kw)


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    traj = [(obs, None, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        traj.append((obs, r, info))
        if term or trunc:
            break
    return traj


def _eq(a, b):
    if isinstance(a, dict):
        return all(_eq(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


def _close(a, b, atol=1e-5):
    """Equal up to float noise: a batch of N and N batches of 1 round convolutions differently (~1e-8)."""
    if isinstance(a, dict):
        return all(_close(a[k], b[k], atol) for k in a)
    return np.allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), atol=atol, rtol=0)


@pytest.mark.parametrize("obs_mode,action_mode", MODES)
def test_env_checkers_pass(model, dataset, obs_mode, action_mode):
    env = make(model, dataset, obs_mode=obs_mode, action_mode=action_mode, grid_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=False)


def test_spaces_and_episode_length(model, dataset):
    env = make(model, dataset)
    assert env.observation_space.shape == (32,)
    assert env.action_space.shape == (2,)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["step"] == 0
    steps = 0
    while True:
        obs, r, term, trunc, info = env.step(np.array([0.5, 0.5], np.float32))
        steps += 1
        assert not trunc
        if term:
            break
    assert steps == model.T - 1
    assert info["is_success"] == info["correct"]
    assert info["madds"] > 0 and info["box"].tolist()[2:] == [16, 16]


def test_same_seed_same_episode(model, dataset):
    env = make(model, dataset, obs_mode="dict")
    acts = [np.array([0.1, 0.9], np.float32), np.array([0.7, 0.2], np.float32), np.array([1.0, 0.0], np.float32)]
    a, b = rollout(env, 5, acts), rollout(env, 5, acts)
    for (oa, ra, ia), (ob, rb, ib) in zip(a, b):
        assert _eq(oa, ob) and ra == rb and ia["image_index"] == ib["image_index"]
    c = rollout(env, 6, acts)
    assert any(x[2]["image_index"] != y[2]["image_index"] for x, y in zip(a, c)) or not _eq(a[0][0], c[0][0])


def test_reward_is_confidence_gain_and_sums_to_total_gain(model, dataset):
    env = make(model, dataset)
    obs, info = env.reset(seed=1, options={"index": 3})
    assert info["image_index"] == 3
    core = env.unwrapped.core
    p0 = float(core.privileged_view().true_class_probs()[0])
    total = 0.0
    for _ in range(model.T - 1):
        _, r, term, _, info = env.step(np.array([0.3, 0.6], np.float32))
        total += r
    p_last = float(core.privileged_view().true_class_probs()[0])
    assert total == pytest.approx(p_last - p0, abs=1e-5)


@pytest.mark.parametrize("obs_mode,action_mode", [("gru", "continuous"), ("dict", "grid")])
def test_vector_env_equals_single_envs(model, dataset, obs_mode, action_mode):
    n = 3
    kw = dict(obs_mode=obs_mode, action_mode=action_mode, grid_size=3)
    venv = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", checkpoint=model,
                        dataset=dataset, device="cpu", **kw)
    rng = np.random.default_rng(0)
    T1 = model.T - 1
    if action_mode == "continuous":
        acts = rng.random((T1, n, 2)).astype(np.float32)
    else:
        acts = rng.integers(0, 9, (T1, n))
    vobs, vinfo = venv.reset(seed=10)
    vtraj = []
    for t in range(T1):
        o, r, term, trunc, info = venv.step(acts[t])
        vtraj.append((o, r, term, info))
    assert vtraj[-1][2].all()
    for i in range(n):
        env = make(model, dataset, **kw)
        obs, info = env.reset(seed=10 + i)
        assert _close(obs, {k: v[i] for k, v in vobs.items()} if isinstance(vobs, dict) else vobs[i])
        assert info["image_index"] == vinfo["image_index"][i]
        for t in range(T1):
            obs, r, term, _, info = env.step(acts[t][i])
            vo, vr, vterm, vi = vtraj[t]
            assert r == pytest.approx(vr[i], abs=1e-5)
            assert term == vterm[i]
            src = vi["final_info"] if term else vi
            assert info["prediction"] == src["prediction"][i] and info["box"].tolist() == src["box"][i].tolist()
            want_obs = vi["final_obs"][i] if term else ({k: v[i] for k, v in vo.items()} if isinstance(vo, dict) else vo[i])
            assert _close(obs, want_obs)


def test_sb3_adapter_equals_single_envs(model, dataset):
    n = 3
    vec = gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=n, checkpoint=model, dataset=dataset, device="cpu")
    vec.seed(20)
    obs = vec.reset()
    rng = np.random.default_rng(1)
    acts = rng.random((model.T - 1, n, 2)).astype(np.float32)
    steps = [vec.step(acts[t]) for t in range(model.T - 1)]
    last_obs, _, dones, infos = steps[-1]
    assert dones.all() and all("terminal_observation" in i and i["TimeLimit.truncated"] is False for i in infos)
    for i in range(n):
        env = make(model, dataset)
        o, _ = env.reset(seed=20 + i)
        np.testing.assert_allclose(o, obs[i], atol=1e-5)
        for t in range(model.T - 1):
            o, r, term, _, info = env.step(acts[t][i])
            assert r == pytest.approx(steps[t][1][i], abs=1e-5)
        np.testing.assert_allclose(o, infos[i]["terminal_observation"], atol=1e-5)
        assert info["is_success"] == infos[i]["is_success"]


def test_sb3_algorithms_learn_on_batched_adapter(model, dataset):
    from stable_baselines3 import PPO, SAC

    vec = gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=8, checkpoint=model, dataset=dataset, device="cpu", seed=0)
    PPO("MlpPolicy", vec, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu").learn(256)
    SAC("MlpPolicy", vec, learning_starts=32, batch_size=32, seed=0, device="cpu").learn(200)
    dvec = gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=8, checkpoint=model, dataset=dataset, device="cpu",
                                      obs_mode="dict", seed=0)
    PPO("MultiInputPolicy", dvec, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu").learn(256)


def test_grid_cells_cover_the_image():
    cells = torch.arange(9)
    unit = grid_to_unit(cells, 3)
    assert unit[0].tolist() == [0.0, 0.0] and unit[8].tolist() == [1.0, 1.0] and unit[5].tolist() == [0.5, 1.0]


def test_early_exit_ends_episode_when_confident(model, dataset):
    env = make(model, dataset, early_exit=1e-6)
    env.reset(seed=0)
    _, _, term, _, info = env.step(np.array([0.5, 0.5], np.float32))
    assert term and info["step"] == 1 and info["is_success"] == info["correct"]


def test_render_rgb_array(model, dataset):
    env = make(model, dataset, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    env.step(np.array([0.0, 0.0], np.float32))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert not np.array_equal(first, frame)  # the patch is drawn


# --- bad input --------------------------------------------------------------------------------------

def test_bad_actions_raise_clear_errors(model, dataset):
    env = make(model, dataset)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.unwrapped.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.unwrapped.core.step(np.array([[np.nan, 0.1]], np.float32))
    genv = make(model, dataset, action_mode="grid", grid_size=3)
    genv.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        genv.unwrapped.step(9)


def test_bad_settings_raise_clear_errors(model, dataset):
    with pytest.raises(ValueError, match="max_steps=9"):
        make(model, dataset, max_steps=9)
    with pytest.raises(ValueError, match="obs_mode"):
        make(model, dataset, obs_mode="pixels")
    with pytest.raises(ValueError, match="action_mode"):
        make(model, dataset, action_mode="box")
    with pytest.raises(ValueError, match="reward"):
        make(model, dataset, reward="accuracy")


def test_missing_checkpoint_and_data_say_what_to_do(monkeypatch):
    monkeypatch.delenv("GFNET_CHECKPOINT", raising=False)
    monkeypatch.delenv("GFNET_IMAGENET", raising=False)
    with pytest.raises(ValueError, match="GFNET_CHECKPOINT"):
        gym.make(ENV_ID)
    with pytest.raises(ValueError, match="GFNET_IMAGENET"):
        gym.make(ENV_ID, checkpoint=tiny_model())


def _write_folder(root: Path, n_per_class=2, size=60, corrupt=None):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    if corrupt:
        (root / "a" / corrupt).write_bytes(b"not an image at all")


def _folder_model():
    # resnet-style transforms need a config; the tiny model's config is used with image_size 48.
    return tiny_model()


def test_data_root_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        gym.make(ENV_ID, checkpoint=_folder_model(), data_root=tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        gym.make(ENV_ID, checkpoint=_folder_model(), data_root=tmp_path / "empty", device="cpu")


def test_corrupt_image_is_skipped_with_warning(tmp_path):
    _write_folder(tmp_path / "val", corrupt="0_bad.png")
    # no decoding threads: a background prefetch of the next random image could hit the bad file again
    env = gym.make(ENV_ID, checkpoint=_folder_model(), data_root=tmp_path, device="cpu", loader_threads=0)
    core = env.unwrapped.core
    bad = [i for i, (p, _) in enumerate(core.dataset.samples) if "bad" in str(p)][0]
    with pytest.warns(UserWarning, match="corrupt"):
        obs, info = env.reset(options={"index": bad})
    assert info["image_index"] == bad + 1 and core.skipped_images == 1
    _, _, _, _, info = env.step(np.array([0.5, 0.5], np.float32))
    assert info["step"] == 1


# --- faithfulness to the original inference loop ----------------------------------------------------

@pytest.mark.parametrize("name", [n for n in config_names() if n.startswith(("mobilenetv3_large_100_p96", "regnety_600m"))])
def test_conformance_env_driven_by_checkpoint_policy(name, tmp_path):
    """Driving the env with the checkpoint's policy (means on feature-map observations) reproduces the
    original loop's per-step logits and rewards."""
    meta, data = load_config(name)
    path = tmp_path / "c.pth.tar"
    write_official_checkpoint(meta, path)
    ds = torch.utils.data.TensorDataset(data["images"].float(), data["targets"].long())
    n = len(ds)
    venv = gfnet_env.GFNetVectorEnv(num_envs=n, checkpoint=str(path), dataset=ds, obs_mode="feature_map", device="cpu")
    obs, info = venv.reset(options={"indices": list(range(n))})
    core = venv.core
    policy = core.model.policy
    torch.testing.assert_close(core._logits, data["logits"][0].float(), atol=1e-4, rtol=0)
    hidden = policy.initial_state(n)
    for t in range(1, meta["T"]):
        with torch.no_grad():
            mean, _, hidden = policy.step(torch.as_tensor(obs), hidden)
        torch.testing.assert_close(mean, data["actions"][t - 1].float(), atol=1e-4, rtol=0)
        obs, r, term, trunc, info = venv.step(mean.numpy())
        np.testing.assert_allclose(r, data["rewards"][t - 1].float().numpy(), atol=1e-4)
        want = torch.softmax(data["logits"][t].float(), -1).max(-1)
        if term.any():  # the last step: the batch was auto-reset, the final step's results are in final_info
            assert term.all() and t == meta["T"] - 1
            np.testing.assert_allclose(info["final_info"]["confidence"], want.values.numpy(), atol=1e-5)
            assert info["final_info"]["prediction"].tolist() == want.indices.tolist()
        else:
            torch.testing.assert_close(core._logits, data["logits"][t].float(), atol=1e-4, rtol=0)


def test_threaded_prefetch_gives_the_same_episodes(model, dataset):
    """Decoding in threads with next-image prefetch changes nothing about which images episodes get."""
    def images_seen(threads):
        venv = gfnet_env.GFNetVectorEnv(num_envs=3, checkpoint=model, dataset=dataset, device="cpu",
                                        loader_threads=threads)
        _, info = venv.reset(seed=3)
        seen = [info["image_index"].tolist()]
        for _ in range(3 * (model.T - 1)):
            _, _, term, _, info = venv.step(np.full((3, 2), 0.5, np.float32))
            if term.any():
                seen.append(info["image_index"].tolist())
        venv.close()
        return seen

    assert images_seen(0) == images_seen(2)


def test_symmetric_action_range_maps_to_the_same_corners(model, dataset):
    unit = make(model, dataset)
    sym = make(model, dataset, action_range="symmetric")
    assert sym.action_space.low.tolist() == [-1.0, -1.0]
    unit.reset(seed=0)
    sym.reset(seed=0)
    for a in ([0.0, 1.0], [0.25, 0.5], [1.0, 0.0]):
        _, r1, _, _, i1 = unit.step(np.array(a, np.float32))
        _, r2, _, _, i2 = sym.step(np.array(a, np.float32) * 2 - 1)
        assert i1["box"].tolist() == i2["box"].tolist() and r1 == pytest.approx(r2, abs=1e-6)
