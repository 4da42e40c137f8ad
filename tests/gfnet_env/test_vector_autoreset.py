"""The vector env's autoreset modes and tensor observations, step by step against Gymnasium's own ``SyncVectorEnv``
over single :class:`GFNetEnv` envs with the same seeds (issue 21, item 4).

Episodes end at different steps (the stop action), so every mode meets envs that end while others run.
"""

from __future__ import annotations

from contextlib import closing

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import gfnet_env
from gfnet_env.vector import autoreset_mode_of

ENV_ID = "GFNet-ImageNet-v0"
N = 4
G = 2  # grid 2×2 + stop: one action in five stops, so episodes end at different steps


def settings(obs_mode: str, action_mode: str) -> dict:
    return dict(obs_mode=obs_mode, action_mode=action_mode, grid_size=G, stop_action=True, device="cpu")


def actions(rng: np.random.Generator, action_mode: str) -> np.ndarray:
    if action_mode == "grid":
        return rng.integers(0, G * G + 1, N)
    a = rng.random((N, 3)).astype(np.float32)
    a[:, 2] = np.where(rng.random(N) < 0.25, 0.9, 0.1)  # stop a quarter of the time
    return a


def as_numpy(x):
    if isinstance(x, dict):
        return {k: as_numpy(v) for k, v in x.items()}
    return x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def assert_obs_equal(ours, theirs) -> None:
    ours, theirs = as_numpy(ours), as_numpy(theirs)
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs)
        for k in theirs:
            assert_obs_equal(ours[k], theirs[k])
    else:
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.astype(np.float64), theirs.astype(np.float64), atol=1e-5)


def assert_info_equal(ours: dict, theirs: dict, where: str) -> None:
    """Same keys, same ``_key`` masks, same values where a mask is True (elsewhere Gymnasium leaves zeros)."""
    assert set(ours) == set(theirs), f"{where}: keys {sorted(set(ours) ^ set(theirs))} differ"
    for k, want in theirs.items():
        if k.startswith("_"):
            assert ours[k].tolist() == want.tolist(), f"{where}: mask {k}"
            continue
        mask = theirs["_" + k]
        if k == "final_obs":
            for i in range(N):
                assert (ours[k][i] is None) == (want[i] is None), f"{where}: final_obs[{i}]"
                if want[i] is not None:
                    assert_obs_equal(ours[k][i], want[i])
        elif isinstance(want, dict):
            assert_info_equal(ours[k], want, f"{where}/{k}")
        else:
            np.testing.assert_allclose(np.asarray(ours[k][mask], np.float64), np.asarray(want[mask], np.float64),
                                       atol=1e-5, err_msg=f"{where}: {k}")


def pair(model, dataset, mode, obs_mode="gru", action_mode="grid", tensor_obs=False):
    kw = settings(obs_mode, action_mode)
    ours = gym.make_vec(ENV_ID, num_envs=N, vectorization_mode="vector_entry_point", checkpoint=model,
                        dataset=dataset, autoreset_mode=mode, tensor_obs=tensor_obs, **kw)
    theirs = SyncVectorEnv([lambda: gfnet_env.GFNetEnv(checkpoint=model, dataset=dataset, **kw)
                            for _ in range(N)], autoreset_mode=mode)
    return ours, theirs


@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("obs_mode,action_mode", [("gru", "grid"), ("dict", "continuous")])
def test_each_mode_equals_gymnasium_sync_vector_env(model, dataset, mode, obs_mode, action_mode):
    ours, theirs = pair(model, dataset, mode, obs_mode, action_mode)
    assert ours.metadata["autoreset_mode"] == theirs.metadata["autoreset_mode"] == mode
    rng = np.random.default_rng(0)
    seen_ends = 0
    with ours, closing(theirs):
        o1, i1 = ours.reset(seed=5)
        o2, i2 = theirs.reset(seed=5)
        assert_obs_equal(o1, o2)
        assert_info_equal(i1, i2, "reset")
        for t in range(14):
            a = actions(rng, action_mode)
            o1, r1, te1, tr1, i1 = ours.step(a)
            o2, r2, te2, tr2, i2 = theirs.step(a)
            assert te1.tolist() == te2.tolist() and tr1.tolist() == tr2.tolist() == [False] * N
            np.testing.assert_allclose(r1, r2, atol=1e-5)
            assert_obs_equal(o1, o2)
            assert_info_equal(i1, i2, f"step {t}")
            seen_ends += int(te1.sum())
            if mode == AutoresetMode.DISABLED and te1.any():  # the caller resets the ended envs itself
                o1, i1 = ours.reset(options={"reset_mask": te1.copy()})
                o2, i2 = theirs.reset(options={"reset_mask": te2.copy()})
                assert_obs_equal(o1, o2)
                assert_info_equal(i1, i2, f"reset_mask after step {t}")
    assert 0 < seen_ends < 14 * N  # episodes did end, and not all at every step


def test_what_each_mode_returns_when_an_episode_ends(model, dataset):
    """The documented contract, read off one env that stops at its first step while the others look."""
    stop = np.array([G * G, 0, 1, 2])
    for mode in AutoresetMode:
        with pair(model, dataset, mode)[0] as venv:
            venv.reset(seed=1)
            obs, r, term, _, info = venv.step(stop)
            assert term.tolist() == [True, False, False, False] and r[0] == 0.0
            if mode == AutoresetMode.SAME_STEP:  # next episode's first obs; the ended one in final_*
                assert info["step"][0] == 0 and info["final_info"]["stopped"][0] and info["_final_info"][0]
                assert "is_success" not in info and info["final_info"]["_is_success"].tolist() == term.tolist()
                assert info["final_obs"][0] is not None and info["final_obs"][1] is None
            else:  # the ended episode's own last obs and info, is_success at the top level
                assert info["stopped"][0] and "final_info" not in info
                assert info["_is_success"].tolist() == term.tolist()
                assert info["is_success"][0] == info["correct"][0]
            if mode == AutoresetMode.NEXT_STEP:  # the next step resets env 0, whatever its action
                _, r, term, _, info = venv.step(np.zeros(N, np.int64))
                assert r[0] == 0.0 and not term[0] and info["step"].tolist() == [0, 2, 2, 2]
            if mode == AutoresetMode.DISABLED:
                with pytest.raises(RuntimeError, match="reset them"):
                    venv.step(np.zeros(N, np.int64))
                venv.reset(options={"reset_mask": term})
                assert venv.step(np.zeros(N, np.int64))[4]["step"].tolist() == [1, 2, 2, 2]


def test_mode_names_and_bad_modes(model, dataset):
    for name in ("NEXT_STEP", "next_step", "NextStep"):
        assert autoreset_mode_of(name) == AutoresetMode.NEXT_STEP
    with pair(model, dataset, "Disabled")[0] as venv:
        assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
        assert type(venv).metadata["autoreset_mode"] == AutoresetMode.SAME_STEP  # the class default is untouched
    with pytest.raises(ValueError, match="unknown autoreset_mode 'sometimes'.*NEXT_STEP"):
        pair(model, dataset, "sometimes")
    with pytest.raises(TypeError, match="tensor_obs"):
        pair(model, dataset, AutoresetMode.SAME_STEP, tensor_obs="yes")
    with pair(model, dataset, AutoresetMode.DISABLED)[0] as venv:
        venv.reset(seed=0)
        for bad, error in [([True] * N, TypeError), (np.ones(N + 1, bool), ValueError), (np.zeros(N, bool), ValueError),
                           (np.ones(N, np.int64), TypeError)]:
            with pytest.raises(error, match="reset_mask"):
                venv.reset(options={"reset_mask": bad})


@pytest.mark.parametrize("obs_mode,action_mode,mode", [("feature_map", "continuous", AutoresetMode.SAME_STEP),
                                                       ("dict", "grid", AutoresetMode.SAME_STEP),
                                                       ("gru", "continuous", AutoresetMode.NEXT_STEP)])
def test_tensor_observations_on_the_core_device(model, dataset, obs_mode, action_mode, mode):
    """``tensor_obs=True``: the same numbers as torch tensors on the core's device, device-tensor actions accepted
    (NEXT_STEP: also when only some envs step), ``final_obs`` rows as tensors too."""
    ours, host = pair(model, dataset, mode, obs_mode, action_mode, tensor_obs=True)[0], \
        pair(model, dataset, mode, obs_mode, action_mode)[0]
    rng = np.random.default_rng(2)
    ends = 0
    with ours, host:
        o1, _ = ours.reset(seed=3)
        o2, _ = host.reset(seed=3)
        for t in range(8):
            tensors = o1.values() if isinstance(o1, dict) else [o1]
            assert all(torch.is_tensor(x) and x.device == ours.core.device for x in tensors)
            assert_obs_equal(o1, o2)
            a = actions(rng, action_mode)
            o1, r1, te1, _, i1 = ours.step(torch.as_tensor(a, device=ours.core.device))
            o2, r2, te2, _, i2 = host.step(a)
            assert te1.tolist() == te2.tolist() and isinstance(r1, np.ndarray)
            ends += int(te1.sum()) if t < 7 else 0  # ended before the last step: reset within the loop
            np.testing.assert_allclose(r1, r2, atol=1e-6)
            for i in np.flatnonzero(te1) if mode == AutoresetMode.SAME_STEP else ():
                first = next(iter(i1["final_obs"][i].values())) if obs_mode == "dict" else i1["final_obs"][i]
                assert torch.is_tensor(first)
                assert_obs_equal(i1["final_obs"][i], i2["final_obs"][i])
        assert_obs_equal(o1, o2)
    assert ends > 0
