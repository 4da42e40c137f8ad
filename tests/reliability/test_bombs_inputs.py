"""Issue 23, case 14 (input validation) and the SB3 part of case 15: values that loaded or trained as if they were
valid. A checkpoint's ``flops="11111"`` (a string) loaded as T=5; continuous actions accepted string and bool arrays
(grid actions refuse them); ``--hparams gamma=-5`` trained; ``learning_rate=nan`` was an SB3 AssertionError,
``net_arch=[200000, 200000]`` and ``n_steps=10**12`` allocator errors (the env's memory check did not cover SB3's
buffers). Each is now refused, in one line, before anything is built.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import ENV_ID, env_kwargs, run_cli, tiny_dataset, tiny_model, with_tiny_hparams, write_image_folder

pytestmark = pytest.mark.reliability


# --- flops ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flops", ["1111", b"1111", {"a": 1, "b": 2, "c": 3, "d": 4}, [1, 2, "3", 4], [1, 2, 3, True]],
                         ids=repr)
def test_flops_must_be_a_list_of_numbers(tmp_path, flops):
    """``flops="1111"`` iterated as four counts: the file loaded with T = len("1111")."""
    from feature_nets.checkpoint import InvalidMetadataError, load_checkpoint, save_checkpoint

    path = save_checkpoint(tiny_model(), tmp_path / "ckpt.pth.tar")  # T=4
    ckpt = torch.load(path, weights_only=True)
    ckpt["flops"] = flops
    torch.save(ckpt, path)
    with pytest.raises(InvalidMetadataError, match="'flops' must be a list of numbers"):
        load_checkpoint(path)


# --- continuous actions -----------------------------------------------------------------------------------------

def continuous_env():
    return gym.make(ENV_ID, checkpoint=tiny_model(), dataset=tiny_dataset(), device="cpu", action_mode="continuous")


@pytest.mark.parametrize("action", [np.array(["0.5", "0.5"]), ["0.2", "0.7"], np.array([True, False]),
                                    torch.tensor([True, False]), np.array([0.5, 0.5], dtype=object),
                                    np.array([0.5 + 1j, 0.5])], ids=lambda a: f"{type(a).__name__}:{a.dtype}"
                         if hasattr(a, "dtype") else repr(a))
def test_continuous_actions_must_be_real_numbers(action):
    """``np.array(["0.5", "0.5"])`` was parsed as the numbers and ``[True, False]`` taken as 1 and 0."""
    with continuous_env() as env:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="continuous actions must be real numbers"):
            env.unwrapped.step(action)


def test_numeric_continuous_actions_still_work():
    with continuous_env() as env:
        env.reset(seed=0)
        for action in (np.array([0.5, 0.5], np.float32), np.array([0, 1]), torch.tensor([0.25, 0.75]), [0.1, 0.9]):
            env.unwrapped.step(action)
            env.reset(seed=0)


# --- SB3 hyperparameters ------------------------------------------------------------------------------------------

BAD_HPARAMS = [
    ({"gamma": -5}, "gamma"), ({"gamma": 0}, "gamma"), ({"gamma": 1.5}, "gamma"),
    ({"learning_rate": float("nan")}, "learning_rate"), ({"learning_rate": 0}, "learning_rate"),
    ({"learning_rate": -1e-3}, "learning_rate"), ({"learning_rate": "fast"}, "learning_rate"),
    ({"learning_rate": float("inf")}, "learning_rate"), ({"gae_lambda": 2}, "gae_lambda"),
    ({"ent_coef": -0.1}, "ent_coef"), ({"n_steps": 0}, "n_steps"), ({"batch_size": 2.5}, "batch_size"),
    ({"n_epochs": True}, "n_epochs"), ({"clip_range": 0}, "clip_range"), ({"net_arch": [64, -1]}, "net_arch"),
    ({"net_arch": "big"}, "net_arch"), ({"n_envs": 0}, "n_envs"),
]


def tiny_ppo_kwargs(hparams):
    kw = with_tiny_hparams("ppo", {"n_envs": 4, "algo_kwargs": {"n_steps": 8, "batch_size": 16}, "hparams": hparams})
    return dict(seed=0, device="cpu", eval_episodes=4, eval_freq=10_000, episode_images=0, **env_kwargs(), **kw)


@pytest.mark.parametrize("hparams, key", BAD_HPARAMS, ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_out_of_range_hparams_are_refused_before_training(tmp_path, hparams, key):
    """``gamma=-5`` trained (and was recorded as if it were a discount factor)."""
    from agents.sb3.agent import train_sb3

    with pytest.raises(ValueError, match=rf"hparams: {key} .*must be") as info:
        train_sb3("ppo", ENV_ID, 32, tmp_path / "out", **tiny_ppo_kwargs(hparams))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("algo, hparams", [("sac", {"ent_coef": "auto_0.1", "learning_rate": lambda p: 1e-3 * p,
                                                    "gradient_steps": -1, "max_grad_norm": float("inf")}),
                                           ("ppo", {"clip_range_vf": None, "net_arch": {"pi": [8], "vf": [8]}})])
def test_valid_hparams_pass_the_check(algo, hparams):
    from agents.sb3.recipes import check_hparams, resolve_recipe

    check_hparams(resolve_recipe(algo, hparams))


@pytest.mark.parametrize("hparams, words", [({"net_arch": [200_000, 200_000]}, r"net_arch=\[200000, 200000\] needs"),
                                            ({"n_steps": 10**12}, "rollout buffer")])
def test_sb3_buffers_larger_than_memory_are_refused(tmp_path, hparams, words):
    """``net_arch=[200000, 200000]`` and ``n_steps=10**12`` were allocator errors (a traceback, or a machine out of
    memory); the env's own memory check (``num_envs``) did not cover SB3's networks and rollout buffer."""
    from agents.sb3.agent import train_sb3

    kw = tiny_ppo_kwargs(hparams)
    if "n_steps" in hparams:
        kw["algo_kwargs"] = {"batch_size": 16}
    with pytest.raises(ValueError, match=words) as info:
        train_sb3("ppo", ENV_ID, 32, tmp_path / "out", **kw)
    assert "free" in str(info.value) and "\n" not in str(info.value)


def test_bad_hparams_on_the_command_line_are_one_line(tmp_path, capsys):
    """Refused before the env is built, in one line, and no output folder is left (the code before trained: a few
    seconds with these tiny settings)."""
    from feature_nets.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tiny_model(), tmp_path / "tiny.pth.tar")
    data = write_image_folder(tmp_path / "data", split="train", n_per_class=4, size=48)
    write_image_folder(data, split="val", n_per_class=2, size=48)
    out = tmp_path / "out"
    code, text = run_cli(["train-agent", "--agent", "sb3-ppo", "--env", ENV_ID, "--env-kwarg", f"checkpoint={ckpt}",
                          "--env-kwarg", f"data_root={data}", "--out", str(out), "--hparams", "gamma=-5", "--hparams",
                          "n_steps=4", "--hparams", "batch_size=8", "--steps", "8", "--n-envs", "2", "--eval-episodes",
                          "2", "--device", "cpu", "--no-progress"], capsys)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, text
    assert lines[0].startswith("gfnet train-agent: hparams: gamma (the discount factor) must be a number in (0, 1]")
    assert not out.exists()
