"""The stop action (``stop_action=True``): spaces, what a stop does, and the same contract in every face."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env

import gfnet_env  # noqa: F401  (registers the ids)
from gfnet_env.cache import GridFeatureCache
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings
from gfnet_env.sb3 import GFNetSB3VecEnv
from helpers import needs_fashion_mnist

ENV_ID = "GFNet-ImageNet-v0"
G = 3


def make(model, dataset, **kw):
    return gym.make(ENV_ID, checkpoint=model, dataset=dataset, device="cpu", **kw)


def core_of(model, dataset, n, **settings):
    return GFNetCore(model, dataset, n, EnvSettings(**settings), device="cpu")


@needs_fashion_mnist
def test_embedded_task_grid_space_has_one_more_action():
    with gym.make("GFNet-ClutteredFashionMNIST-v0", stop_action=True, action_mode="grid", device="cpu") as env:
        assert env.action_space == spaces.Discrete(7 * 7 + 1)


@pytest.mark.parametrize("action_range,low,threshold", [("unit", 0.0, 0.5), ("symmetric", -1.0, 0.0)])
def test_continuous_space_has_a_stop_component(model, dataset, action_range, low, threshold):
    with make(model, dataset, stop_action=True, action_range=action_range) as env:
        assert env.action_space == spaces.Box(low, 1.0, (3,), np.float32)
        env.reset(seed=0)
        _, _, term, _, info = env.step(np.array([0.5, 0.5, threshold - 1e-3], np.float32))
        assert not term and not info["stopped"] and info["step"] == 1
        _, r, term, _, info = env.step(np.array([0.5, 0.5, threshold], np.float32))
        assert term and info["stopped"] and info["step"] == 1 and r == 0.0
        with pytest.raises(ValueError, match="stop component"):
            env.reset(seed=0)
            env.step(np.array([0.5, 0.5], np.float32))


def test_without_stop_action_nothing_changes(model, dataset):
    with make(model, dataset, action_mode="grid", grid_size=G) as env:
        assert env.action_space == spaces.Discrete(G * G)
        env.reset(seed=0)
        _, _, _, _, info = env.step(0)
        assert info["stopped"] is False
        with pytest.raises(ValueError, match=r"\[0, 8\]"):
            env.step(G * G)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_stop_at_step_k_answers_with_the_anytime_prediction(model, dataset, k):
    """A stop after k looks: terminated, no reward (even with a step cost), madds unchanged, and the prediction
    and confidence those of the same image after the same k looks without a stop action."""
    looks = [4, 0, 8]
    with make(model, dataset, action_mode="grid", grid_size=G, stop_action=True, step_cost=1e-6) as env, \
            make(model, dataset, action_mode="grid", grid_size=G) as plain:
        _, info = env.reset(options={"index": 5})
        _, ref = plain.reset(options={"index": 5})
        for a in looks[:k]:
            _, _, term, _, info = env.step(a)
            _, _, _, _, ref = plain.step(a)
            assert not term and not info["stopped"]
        madds = info["madds"]
        _, r, term, trunc, stopped = env.step(G * G)
        assert term and not trunc and r == 0.0 and stopped["stopped"]
        assert stopped["madds"] == madds == ref["madds"] and stopped["step"] == k
        assert stopped["prediction"] == ref["prediction"]
        assert stopped["confidence"] == pytest.approx(ref["confidence"], abs=1e-6)
        assert stopped["is_success"] == (ref["prediction"] == ref["target"])
        with pytest.raises(RuntimeError, match="finished"):
            env.step(0)


def test_env_checker_passes_with_the_stop_action(model, dataset):
    for mode in ("grid", "continuous"):
        with make(model, dataset, action_mode=mode, grid_size=G, stop_action=True, obs_mode="dict") as env:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gym_check_env(env.unwrapped)


def test_vector_env_stops_some_envs_and_resets_only_them(model, dataset):
    with gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", checkpoint=model,
                      dataset=dataset, device="cpu", action_mode="grid", grid_size=G, stop_action=True) as venv:
        assert venv.single_action_space == spaces.Discrete(G * G + 1)
        venv.reset(seed=0)
        _, r, term, _, info = venv.step(np.array([G * G, 0, G * G, 1]))
        assert term.tolist() == [True, False, True, False] and r[0] == 0.0 and r[2] == 0.0
        final = info["final_info"]  # same-step autoreset: the ended episodes' info is under final_info
        assert final["stopped"].tolist() == term.tolist() and final["step"][[0, 2]].tolist() == [0, 0]
        assert info["step"].tolist() == [0, 1, 0, 1] and not info["stopped"].any()  # new episodes at their glance


def test_sb3_adapter_reports_a_stop(model, dataset):
    with GFNetSB3VecEnv(core_of(model, dataset, 2, action_mode="grid", grid_size=G, stop_action=True)) as venv:
        assert venv.action_space == spaces.Discrete(G * G + 1)
        venv.reset()
        venv.step_async(np.array([2, G * G]))
        _, r, dones, infos = venv.step_wait()
        assert dones.tolist() == [False, True] and r[1] == 0.0
        assert infos[1]["stopped"] is True and "terminal_observation" in infos[1] and infos[0]["stopped"] is False


class StopAt:
    """Grid agent: looks at cells ``plan`` in order and stops episode i after ``exits[i]`` looks."""

    def __init__(self, exits, plan=(4, 0, 8)):
        self.exits, self.plan = np.asarray(exits), plan

    def reset(self, n):
        self.t = 0

    def act(self, obs, deterministic=True):
        a = np.full(len(self.exits), self.plan[min(self.t, len(self.plan) - 1)])
        a[self.exits <= self.t] = G * G
        self.t += 1
        return a


def test_rollout_records_exits_and_keeps_each_answer(model, dataset):
    """Episodes end at different steps; each answer is the anytime prediction of a full rollout with the same
    looks at that step, and later steps are neither computed nor charged."""
    exits = np.array([0, 1, 2, 3, 1, 0])  # max_steps = T - 1 = 3
    indices = list(range(6))
    with core_of(model, dataset, 6, action_mode="grid", grid_size=G, stop_action=True) as core:
        stopped = rollout(core, StopAt(exits), indices)
        madds_cumulative = core.madds_cumulative
    with core_of(model, dataset, 6, action_mode="grid", grid_size=G) as core:
        full = rollout(core, StopAt(np.full(6, 99)), indices)
    assert stopped.exit_step.tolist() == exits.tolist()
    assert stopped.stopped.tolist() == (exits < 3).tolist()
    np.testing.assert_array_equal(stopped.madds, madds_cumulative[exits])
    for i, k in enumerate(exits):
        torch.testing.assert_close(stopped.probs[k:, i], full.probs[k, i].expand_as(stopped.probs[k:, i]))
        torch.testing.assert_close(stopped.probs[: k + 1, i], full.probs[: k + 1, i])
        assert (stopped.rewards[k:, i] == 0).all() and (stopped.boxes[k:, i] == 0).all()
        np.testing.assert_array_equal(stopped.boxes[:k, i], full.boxes[:k, i])
    assert stopped.final_top1() == pytest.approx(
        100.0 * np.mean([int(full.probs[k, i].argmax() == full.targets[i]) for i, k in enumerate(exits)]))


def test_rollout_without_stops_is_unchanged(model, dataset):
    with core_of(model, dataset, 4, action_mode="grid", grid_size=G) as core:
        plain = rollout(core, StopAt(np.full(4, 99)), range(10))
    with core_of(model, dataset, 4, action_mode="grid", grid_size=G, stop_action=True) as core:
        never = rollout(core, StopAt(np.full(4, 99)), range(10))
    assert torch.equal(plain.probs, never.probs) and np.array_equal(plain.boxes, never.boxes)
    assert plain.exit_step.tolist() == [3] * 10 and not never.stopped.any()


def test_rollout_handles_early_exit(model, dataset):
    """early_exit ends episodes at the confidence threshold; rollout steps only those still running."""
    with core_of(model, dataset, 4, action_mode="grid", grid_size=G) as core:
        full = rollout(core, StopAt(np.full(4, 99)), range(8))
    conf = full.probs.max(-1).values  # (T', E)
    threshold = float(conf[1:].median())
    with core_of(model, dataset, 4, action_mode="grid", grid_size=G, early_exit=threshold) as core:
        early = rollout(core, StopAt(np.full(4, 99)), range(8))
    for i in range(8):
        reached = [t for t in range(1, 4) if conf[t, i] >= threshold]
        assert early.exit_step[i] == (reached[0] if reached else 3)
    assert not early.stopped.any() and (early.exit_step < 3).any()


def test_feature_cache_gives_the_same_stops(model, dataset):
    exits = np.array([2, 0, 1, 3])
    with core_of(model, dataset, 4, action_mode="grid", grid_size=G, stop_action=True) as core:
        plain = rollout(core, StopAt(exits), range(4))
    with GFNetCore(model, dataset, 4, EnvSettings(action_mode="grid", grid_size=G, stop_action=True), device="cpu",
                   feature_cache=GridFeatureCache()) as core:
        cached = rollout(core, StopAt(exits), range(4))
    torch.testing.assert_close(plain.probs, cached.probs, atol=1e-5, rtol=0)
    assert cached.exit_step.tolist() == exits.tolist()


def test_stop_action_must_be_a_bool(model, dataset):
    with pytest.raises(TypeError, match="stop_action must be True or False"):
        make(model, dataset, stop_action="yes")



def test_stepping_some_slots_checks_them(model, dataset):
    with core_of(model, dataset, 3, action_mode="grid", grid_size=G) as core:
        core.reset_slots(np.arange(3), [0, 1, 2])
        for bad in ([0, 0], [3], [], [[0]], [0.5]):
            with pytest.raises(ValueError, match="slots must be"):
                core.step(np.zeros(len(bad), dtype=np.int64) if bad and np.ndim(bad) == 1 else np.zeros(1, int),
                          slots=np.asarray(bad))
        _, term, info = core.step(np.array([4]), slots=np.array([1]))
        assert info["step"].tolist() == [1] and core.view().num_envs == 3
        _, _, info = core.step(np.array([0, 0, 0]))  # slots 0 and 2 are at their glance, slot 1 after one look
        assert info["step"].tolist() == [1, 2, 1]
