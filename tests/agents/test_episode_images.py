"""Episode images in TensorBoard (``episodes/looks``): the picture itself, and both training paths logging it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import needs_fashion_mnist, tiny_dataset, tiny_model
from helpers import tiny_hparams

import agents
from agents.episode_images import TAG, episode_image, evaluation_core
from agents.sb3.callbacks import episode_image_callback
from agents.paper_ppo import train_paper_ppo
from agents.paper_ppo.train import _picture_batches

ENV_ID = "GFNet-ImageNet-v0"  # with the tiny model and dataset, as tests/agents/test_agents.py trains
EMBEDDED = "GFNet-ClutteredFashionMNIST-v0"


def image_steps(tb_dir: Path, tag: str = TAG) -> list[int]:
    """Sorted steps of every ``tag`` image in the event files under ``tb_dir`` (checking each is an RGB PNG)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(tb_dir.rglob("events.out.tfevents.*"))
    assert files, f"no event file under {tb_dir}"
    steps = []
    for f in files:
        ea = EventAccumulator(str(f), size_guidance={"images": 0})  # 0: keep them all (the default keeps 4)
        ea.Reload()
        if tag in ea.Tags()["images"]:
            for event in ea.Images(tag):
                assert event.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
                assert event.width > 100 and event.height > 100
                steps.append(event.step)
    return sorted(steps)


@needs_fashion_mnist
def test_episode_image_of_a_baseline_on_the_embedded_task():
    agent = agents.make("center")
    with evaluation_core(EMBEDDED, {}, 4, settings=agent.env_settings(), device="cpu") as core:
        image = episode_image(core, agent)
        again = episode_image(core, agent, [0, 1, 2, 3])
        model = core.model
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3  # HWC
    # 4 rows (one per image) of max_steps + 1 frames, each at least 128 pixels wide and tall
    assert image.shape[0] >= 4 * 128 and image.shape[1] >= (model.T + 1) * 128
    assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # drawn, not blank
    np.testing.assert_array_equal(image, again)  # the same images and deterministic actions: comparable pictures


def test_picture_batches_are_a_few_spread_over_the_run():
    assert _picture_batches(10) == {2, 4, 6, 8, 10}
    assert _picture_batches(4) == {1, 2, 3, 4}
    assert _picture_batches(1) == {1}
    assert max(_picture_batches(1234)) == 1234 and len(_picture_batches(1234)) == 5


def test_paper_ppo_training_logs_episode_images(tmp_path):
    # 72 steps / (6 images × 3 steps) = 4 updates: pictures at the start and after batches 1..4
    train_paper_ppo(ENV_ID, 72, tmp_path / "run", seed=0, batch_size=6, checkpoint=tiny_model(),
                    dataset=tiny_dataset(), device="cpu")
    assert image_steps(tmp_path / "run" / "tensorboard") == [0, 18, 36, 54, 72]

    train_paper_ppo(ENV_ID, 18, tmp_path / "off", seed=0, batch_size=6, checkpoint=tiny_model(),
                    dataset=tiny_dataset(), device="cpu", episode_images=0)
    assert image_steps(tmp_path / "off" / "tensorboard") == []
    with pytest.raises(ValueError, match="episode_images"):
        train_paper_ppo(ENV_ID, 18, tmp_path / "bad", batch_size=6, checkpoint=tiny_model(), dataset=tiny_dataset(),
                        device="cpu", episode_images=-1)


@pytest.mark.filterwarnings("ignore:.*fewer than 5 updates")  # 2 rollouts are enough here
def test_sb3_callback_logs_episode_images_and_closes_its_core(tmp_path, monkeypatch):
    from agents.sb3 import callbacks as episode_images  # the callback builds its core through this name
    from agents.sb3.agent import train_sb3

    cores = []  # every core the callback builds, to check it is closed afterwards
    build = episode_images.evaluation_core
    monkeypatch.setattr(episode_images, "evaluation_core", lambda *a, **kw: cores.append(build(*a, **kw)) or cores[-1])
    model, dataset = tiny_model(), tiny_dataset()
    out = tmp_path / "ppo"
    # one rollout is n_steps · n_envs = 32 env steps; 64 steps = 2 rollouts; train_sb3 adds the callback itself
    train_sb3("ppo", ENV_ID, 64, out, seed=0, n_envs=4, device="cpu", checkpoint=model, dataset=dataset,
              eval_episodes=4, eval_freq=32, checkpoint_freq=32, algo_kwargs={"n_steps": 8, "batch_size": 16},
              hparams=tiny_hparams("ppo", {"n_steps": 8, "batch_size": 16}, n_envs=4))
    # the start, every 32 steps, and the end (the same step as the last one: drawn once)
    assert image_steps(out / "tensorboard") == [0, 32, 64]
    assert len(cores) == 1
    for core in cores:
        with pytest.raises(RuntimeError, match="closed"):  # closed at the end of training
            core.reset_slots(np.arange(1), [0])
    # episode_images=0: no pictures
    train_sb3("ppo", ENV_ID, 32, tmp_path / "off", seed=0, n_envs=4, device="cpu", checkpoint=model,
              dataset=dataset, eval_episodes=4, eval_freq=32, algo_kwargs={"n_steps": 8, "batch_size": 16},
              episode_images=0, hparams=tiny_hparams("ppo", {"n_steps": 8, "batch_size": 16}, n_envs=4))
    assert image_steps(tmp_path / "off" / "tensorboard") == []


def test_sb3_callback_rejects_bad_arguments():
    from agents.sb3.agent import SB3PPOAgent

    with pytest.raises(ValueError, match="every_steps"):
        episode_image_callback(ENV_ID, {}, every_steps=0, wrap=SB3PPOAgent)
    with pytest.raises(ValueError, match="n_images"):
        episode_image_callback(ENV_ID, {}, every_steps=10, wrap=SB3PPOAgent, n_images=0)
