"""Issue 23, cases 12 and 13: seeds set before anything random is built; a resume with other settings refused.

12. ``gfnet train-features --seed S`` twice gave different weights (up to 0.42 after one step): the model was built
    with random weights before anything was seeded.
13. ``--resume`` with other settings: paper-ppo accepted a new ``--lr`` (ignored: Adam kept 3e-4, while the metadata
    recorded 0.1), a new ``--batch-size`` mid-run, and recorded only the new ``--seed``; sb3-ppo ``--resume --hparams
    learning_rate=0.5`` kept 3e-4 and recorded 0.5. Now such a resume is refused, naming the differences, unless
    ``--force-settings``, which applies them from the resumed step on and records them; what is recorded is what ran.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from helpers import ENV_ID, env_kwargs, run_cli, train_tiny_ppo, write_image_folder

pytestmark = pytest.mark.reliability


# --- case 12 ----------------------------------------------------------------------------------------------------

def test_train_features_seed_repeats_the_weights(tmp_path, capsys):
    """Two runs with ``--seed 3`` (the global RNG in another state before each, as in two processes) give equal
    weights: the model's initial weights are drawn after seeding."""
    data = write_image_folder(tmp_path / "data", split="train", n_per_class=2, size=48)
    write_image_folder(data, split="val", n_per_class=2, size=48)
    weights = []
    for run, noise in enumerate((11, 12345)):
        torch.manual_seed(noise)
        out = tmp_path / f"out{run}"
        code, text = run_cli(["train-features", "--data-root", str(data), "--model", "small_cnn", "--image-size", "48",
                              "--patch-size", "16", "--T", "2", "--epochs", "1", "--max-steps-per-epoch", "1",
                              "--batch-size", "2", "--seed", "3", "--out", str(out), "--device", "cpu", "--workers",
                              "0", "--no-progress"], capsys)
        assert code == 0, text
        ckpt = torch.load(out / "last.pth.tar", weights_only=True)
        weights.append({f"{f}/{k}": v for f in ("model_prime_state_dict", "model_state_dict", "fc")
                        for k, v in ckpt[f].items()})
    different = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not different, f"--seed 3 twice: {len(different)} tensors differ ({different[:3]})"


# --- case 13: paper-ppo -------------------------------------------------------------------------------------------

def paper_ppo(out, steps, resume=False, batch_size=6, **kw):
    from agents.paper_ppo import train_paper_ppo

    return train_paper_ppo(ENV_ID, steps, out, seed=kw.pop("seed", 0), batch_size=batch_size, device="cpu",
                           resume=resume, episode_images=0, **env_kwargs(), **kw)


@pytest.fixture
def paper_run(tmp_path):
    """Two batches of paper-ppo (6 images × 3 steps each) in ``run/``: the run a resume continues."""
    out = tmp_path / "run"
    paper_ppo(out, 36)
    return out


@pytest.mark.parametrize("change, named", [({"lr": 0.1}, "lr: 0.0003 saved, 0.1 now"),
                                           ({"batch_size": 12}, "batch_size: 6 saved, 12 now"),
                                           ({"seed": 5}, "seed: 0 saved, 5 now")], ids=["lr", "batch_size", "seed"])
def test_paper_ppo_resume_with_other_settings_is_refused(paper_run, change, named):
    latest = (paper_run / "paper_ppo_latest.pt").read_bytes()
    with pytest.raises(ValueError, match="--force-settings") as info:
        paper_ppo(paper_run, 72, resume=True, **change)
    assert named in str(info.value) and "\n" not in str(info.value)
    assert (paper_run / "paper_ppo_latest.pt").read_bytes() == latest  # refused before any work


def test_paper_ppo_forced_lr_runs_and_is_recorded(paper_run):
    """Forced: Adam trains with the new rate (it kept 3e-4 before), and the file records both rates and when."""
    agent = paper_ppo(paper_run, 72, resume=True, lr=0.1, force_settings=True)
    latest = torch.load(paper_run / "paper_ppo_latest.pt", weights_only=True)
    assert [g["lr"] for g in latest["optimizer"]["param_groups"]] == [0.1]
    assert agent.metadata["lr"] == 0.1
    assert agent.metadata["forced_settings"] == [{"batch": 2, "env_steps": 36,
                                                  "changed": {"lr": {"saved": 0.0003, "now": 0.1}}}]
    final = torch.load(paper_run / "paper_ppo.pt", weights_only=True)["metadata"]
    assert final["forced_settings"] == agent.metadata["forced_settings"]


def test_paper_ppo_forced_batch_size_continues_where_the_run_stopped(paper_run):
    """Forced ``batch_size`` 6 → 12: the remaining 36 env steps are one batch of 12 images taken after the 12 images
    already used; the step counts and the recorded settings are those that ran."""
    agent = paper_ppo(paper_run, 72, resume=True, batch_size=12, force_settings=True)
    with open(paper_run / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["batch"]), int(r["env_steps"])) for r in rows] == [(1, 18), (2, 36), (3, 72)]
    assert agent.metadata["env_steps"] == 72 and agent.metadata["batches"] == 3
    assert agent.metadata["batch_size"] == 12
    assert agent.metadata["forced_settings"][0]["changed"] == {"batch_size": {"saved": 6, "now": 12}}
    latest = torch.load(paper_run / "paper_ppo_latest.pt", weights_only=True)
    assert (latest["batches_done"], latest["images_done"], latest["env_steps_done"]) == (3, 24, 72)


def test_paper_ppo_resume_with_the_same_settings_is_unchanged(tmp_path, paper_run):
    """A resume with the saved settings (a longer --steps is allowed) trains exactly as an uninterrupted run."""
    resumed = paper_ppo(paper_run, 72, resume=True)
    straight = paper_ppo(tmp_path / "straight", 72)
    assert "forced_settings" not in resumed.metadata
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k


# --- case 13: sb3 -------------------------------------------------------------------------------------------------

@pytest.fixture
def sb3_run(tmp_path):
    """sb3-ppo, 64 env steps (two rollouts of 4 envs × 8 steps) in ``run/``."""
    out = tmp_path / "run"
    train_tiny_ppo(out, 64, episode_images=0)
    return out


def test_sb3_resume_with_other_hparams_is_refused_then_forced(sb3_run):
    """``--resume --hparams learning_rate=0.5`` kept 3e-4 and recorded 0.5. Refused; forced, the model trains with
    0.5, and the agent, its sidecar, ``agent.json`` and ``train_settings.json`` record the change."""
    with pytest.raises(ValueError, match="learning_rate: 0.0003 saved, 0.5 now") as info:
        train_tiny_ppo(sb3_run, 128, resume=True, episode_images=0, hparams={"learning_rate": 0.5})
    assert "--force-settings" in str(info.value) and "\n" not in str(info.value)

    agent = train_tiny_ppo(sb3_run, 128, resume=True, episode_images=0, hparams={"learning_rate": 0.5},
                           force_settings=True)
    model = agent.model
    assert model.num_timesteps == 128
    assert model.learning_rate == 0.5 and model.lr_schedule(1.0) == 0.5
    assert [g["lr"] for g in model.policy.optimizer.param_groups] == [0.5]  # what the last update used
    assert agent.metadata["hparams"]["learning_rate"] == 0.5
    forced = [{"env_steps": 64, "changed": {"learning_rate": {"saved": 0.0003, "now": 0.5}}}]
    assert agent.metadata["forced_settings"] == forced
    assert json.loads((sb3_run / "agent.json").read_text())["forced_settings"] == forced
    assert json.loads((sb3_run / "train_settings.json").read_text())["learning_rate"] == 0.5


def test_sb3_resume_with_another_seed_is_refused(sb3_run):
    from agents.sb3.agent import train_sb3
    from helpers import with_tiny_hparams

    kw = with_tiny_hparams("ppo", {"n_envs": 4, "algo_kwargs": {"n_steps": 8, "batch_size": 16}})
    with pytest.raises(ValueError, match="seed: 0 saved, 7 now"):
        train_sb3("ppo", ENV_ID, 128, sb3_run, seed=7, device="cpu", eval_episodes=4, eval_freq=10_000,
                  checkpoint_freq=32, resume=True, episode_images=0, **env_kwargs(), **kw)


# --- the flag on the command line ---------------------------------------------------------------------------------

def test_force_settings_reaches_the_trainers(capsys):
    from agents.paper_ppo.agent import PaperPPOAgent
    from agents.sb3.agent import SB3PPOAgent
    from gfnet_cli.main import build_parser

    args = build_parser().parse_args(["train-agent", "--agent", "paper-ppo", "--env", ENV_ID, "--out", "x",
                                      "--resume", "--force-settings"])
    assert args.force_settings is True
    for agent in (PaperPPOAgent, SB3PPOAgent):
        assert agent.train_options({"force_settings": True})["force_settings"] is True
    assert build_parser().parse_args(["train-policy", "--checkpoint", "c", "--env", ENV_ID, "--steps", "1", "--out",
                                      "x", "--force-settings"]).force_settings is True
    code, text = run_cli(["train-agent", "--help"], capsys)
    assert "--force-settings" in text
