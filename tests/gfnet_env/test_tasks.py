"""Tasks: one registered object per env id (gfnet_env/tasks/) — a user's task added in one place and used by
gym.make, `gfnet benchmark` and `gfnet train-features`; per-task kwargs; the splits a Task decides;
re-registering an id."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from agents.benchmark.run import select_images
from agents.episode_images import evaluation_core
from agents.sb3.trainer import _default_eval_split
from feature_nets.checkpoint import load_checkpoint, save_checkpoint
from gfnet_cli.main import main
from gfnet_env.factory import make_core, split_env_kwargs
from gfnet_env.tasks import (Task, get_task, image_folder_split, image_folder_training_sets, load_model,
                             register_task, registered_tasks, unregister_task)
from helpers import tiny_model

ENV_ID = "Stripes-v0"


# --- a user's task, in one place (under 40 lines: images, a checkpoint, the Task) ---------------------------

def write_stripes(root, n: int = 6) -> None:
    """An ImageFolder of 32×32 PNGs, two classes (horizontal / vertical stripes), train/ and val/."""
    for split in ("train", "val"):
        for axis in ("horizontal", "vertical"):
            (root / split / axis).mkdir(parents=True)
            for i in range(n):
                pixels = np.zeros((32, 32, 3), np.uint8)
                (pixels[i::n] if axis == "horizontal" else pixels[:, i::n])[...] = 255
                Image.fromarray(pixels).save(root / split / axis / f"{i}.png")


@pytest.fixture
def stripes(tmp_path):
    root, checkpoint_path = tmp_path / "stripes", tmp_path / "stripes.pth.tar"
    write_stripes(root)
    save_checkpoint(tiny_model(num_classes=2, image_size=32), checkpoint_path)

    def load(checkpoint=checkpoint_path, split="val", trusted_pickle=False):
        model = load_model(checkpoint, trusted_pickle)
        return model, image_folder_split(root, split, model)

    def training_sets(model, options):
        return image_folder_training_sets(root, model, options)

    task = register_task(Task(ENV_ID, "stripes", load, num_classes=2, image_size=32,
                              model_families=("small_cnn",), training_sets=training_sets))
    yield task
    unregister_task(ENV_ID)


# --- ... works everywhere ---------------------------------------------------------------------------------

def test_a_user_task_works_with_gym_the_benchmark_and_train_features(stripes, tmp_path):
    env = gym.make(ENV_ID, loader_threads=0)
    env.reset(seed=0)
    done, steps = False, 0
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done, steps = terminated or truncated, steps + 1
    env.close()
    assert steps == tiny_model().T - 1

    out = tmp_path / "bench"
    assert main(["benchmark", "--env", ENV_ID, "--agents", "random,center", "--episodes", "4", "--seeds", "1",
                 "--batch-size", "2", "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["agents"]) == {"random", "center"} and results["episodes"] == 4
    assert "held-out images of the evaluation split" in results["fit"]["images"]  # the Task has no fit split

    assert main(["train-features", "--task", ENV_ID, "--model", "small_cnn", "--patch-size", "16", "--T", "3",
                 "--small-widths", "8,16", "--small-feature-num", "16", "--epochs", "1", "--batch-size", "4",
                 "--workers", "0", "--out", str(tmp_path / "features"), "--no-progress"]) == 0
    trained = load_checkpoint(tmp_path / "features" / "last.pth.tar").model
    assert (trained.num_classes, trained.image_size) == (2, 32)


def test_train_features_refuses_a_model_the_task_does_not_fit(stripes, tmp_path, capsys):
    assert main(["train-features", "--task", "stripes", "--model", "resnet50", "--out", str(tmp_path)]) == 2
    assert "--model resnet50 does not fit the task stripes (it is for --model small_cnn)" in capsys.readouterr().err
    assert main(["train-features", "--task", "No-Such-v0", "--model", "small_cnn", "--out", str(tmp_path)]) == 2
    assert "unknown GFNet env id 'No-Such-v0'" in capsys.readouterr().err


def test_make_core_applies_the_agent_env_settings(stripes):
    class GridAgent:
        def env_settings(self):
            return {"obs_mode": "feature_map", "action_mode": "grid", "grid_size": 3}

    with make_core(ENV_ID, 2, device="cpu", agent=GridAgent(), obs_mode="gru", loader_threads=0) as core:
        assert (core.settings.obs_mode, core.settings.action_mode, core.settings.grid_size) == ("feature_map",
                                                                                               "grid", 3)
    with pytest.raises(ValueError, match=r"env_settings\(\) must name \['action_mode'\]"):
        make_core(ENV_ID, 2, device="cpu", agent=type("A", (), {"env_settings": lambda self: {"obs_mode": "gru"}})())


# --- per-task kwargs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id, wrong, listed", [
    ("GFNet-ImageNet-v0", "num_samples", "prepared"),            # num_samples/seed: Fashion-MNIST's only
    ("GFNet-ClutteredFashionMNIST-v0", "prepared", "num_samples"),  # prepared: ImageNet's only
    (ENV_ID, "data_root", "trusted_pickle"),                     # a user task accepts its loader's parameters
])
def test_an_unknown_kwarg_lists_the_valid_ones_of_that_env_id(stripes, env_id, wrong, listed):
    with pytest.raises(TypeError, match=rf"unknown env arguments \['{wrong}'\] for {env_id}; valid: .*'{listed}'"):
        split_env_kwargs({wrong: 1}, env_id)
    with pytest.raises(TypeError, match=rf"unknown env arguments \['{wrong}'\] for {env_id}"):
        gym.make(env_id, **{wrong: 1})
    with pytest.raises(TypeError, match=rf"unknown task arguments \['{wrong}'\] for {env_id}"):
        get_task(env_id).load(**{wrong: 1})


def test_built_in_tasks_declare_their_own_kwargs_and_splits():
    imagenet, fmnist = get_task("GFNet-ImageNet-v0"), get_task("gfnet_env:GFNet-ClutteredFashionMNIST-v0")
    assert "prepared" in imagenet.kwargs and not {"num_samples", "seed"} & set(imagenet.kwargs)
    assert {"num_samples", "seed"} <= set(fmnist.kwargs) and "prepared" not in fmnist.kwargs
    assert (imagenet.eval_split, imagenet.fit_split, imagenet.validation_split) == ("val", None, "val")
    assert (fmnist.eval_split, fmnist.fit_split, fmnist.validation_split) == ("test", "val", "val")
    assert gym.spec("GFNet-ClutteredFashionMNIST-v0").kwargs == {"task": "cluttered_fashion_mnist", "split": "test"}
    assert get_task("cluttered-fashion-mnist") is fmnist and get_task("imagenet") is imagenet
    assert list(registered_tasks())[:2] == ["GFNet-ImageNet-v0", "GFNet-ClutteredFashionMNIST-v0"]


# --- the splits come from the Task --------------------------------------------------------------------------

def test_fit_and_validation_splits_come_from_the_task(stripes):
    held_out = select_images(ENV_ID, {}, 4, None, None)
    assert held_out.fit_dataset is held_out.eval_dataset and not set(held_out.fit_indices) & set(held_out.eval_indices)
    assert _default_eval_split(ENV_ID, {}) == "val"
    register_task(dataclasses.replace(stripes, fit_split="train", validation_split="train"), replace=True)
    own = select_images(ENV_ID, {}, 4, None, None)
    assert own.fit_source == "split 'train', 4 images spread evenly over it"
    assert own.fit_dataset.root.name == "train" and own.eval_dataset.root.name == "val"
    assert select_images(ENV_ID, {}, 4, "val", None).fit_source.startswith("split 'val'")  # an explicit one wins
    assert _default_eval_split(ENV_ID, {}) == "train"
    assert _default_eval_split(ENV_ID, {"dataset": object()}) is None  # a user dataset has no splits
    with evaluation_core(ENV_ID, {}, 2, device="cpu") as core:
        assert core.dataset.root.name == "train"


# --- registering ---------------------------------------------------------------------------------------------

def test_re_registering_an_id_needs_replace(stripes):
    assert register_task(stripes) is stripes  # the same task again: nothing to do
    other = dataclasses.replace(stripes, eval_split="train")
    with pytest.raises(ValueError, match="'Stripes-v0' is already registered .*pass replace=True"):
        register_task(other)
    assert register_task(other, replace=True) is get_task(ENV_ID) is other
    assert gym.spec(ENV_ID).kwargs["split"] == "train"  # Gymnasium's registration follows
    with pytest.raises(ValueError, match="the task name 'stripes' is already used by 'Stripes-v0'"):
        register_task(dataclasses.replace(stripes, env_id="Stripes-v1"))


def test_a_task_is_checked_when_made():
    def load_anything(**kwargs):
        return kwargs

    with pytest.raises(TypeError, match=r"must name every task kwarg it accepts \(no \*args/\*\*kwargs\)"):
        Task("Loose-v0", "loose", load_anything)
    with pytest.raises(ValueError, match="needs a split= parameter"):
        Task("Single-v0", "single", lambda checkpoint=None: None)
    with pytest.raises(ValueError, match="env_id must be a Gymnasium id"):
        Task("bad id!", "bad", lambda split="val": None)
    with pytest.raises(ValueError, match="unknown GFNet env id 'Nothing-v0'; registered: "):
        get_task("Nothing-v0")
