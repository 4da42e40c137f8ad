"""Issue 11, items 9 (settings and dataset items), 11 (closed envs) and 12 (env arguments, reset options, seeds,
indices, actions): every bad input is a clear error at the boundary; valid inputs behave as before."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import gfnet_env
from gfnet_env.factory import make_core
from helpers import tiny_dataset, tiny_model

pytestmark = pytest.mark.reliability

ENV = "GFNet-ImageNet-v0"


def make(**kw):
    return gym.make(ENV, checkpoint=tiny_model(), dataset=kw.pop("dataset", tiny_dataset()), device="cpu", **kw)


def make_vec(n=2, **kw):
    return gym.make_vec(ENV, num_envs=n, vectorization_mode="vector_entry_point", checkpoint=tiny_model(),
                        dataset=kw.pop("dataset", tiny_dataset()), device="cpu", **kw)


# --- settings ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, error, match", [
    ({"step_cost": float("nan")}, ValueError, "step_cost must be a finite number"),
    ({"step_cost": float("inf")}, ValueError, "step_cost must be a finite number"),
    ({"step_cost": -1e-9}, ValueError, "step_cost"),
    ({"step_cost": "0.1"}, TypeError, "step_cost must be a number"),
    ({"early_exit": float("nan")}, ValueError, "early_exit"),
    ({"early_exit": "0.9"}, TypeError, "early_exit must be a number"),
    ({"max_steps": 2.5}, TypeError, "max_steps must be an integer"),
    ({"loader_threads": -1}, ValueError, "loader_threads"),
])
def test_bad_settings_are_refused(kw, error, match):
    with pytest.raises(error, match=match):
        make(**kw)


# --- num_envs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, error", [(2.5, TypeError), ("4", TypeError), (True, TypeError), (0, ValueError)])
def test_num_envs_must_be_a_positive_integer(n, error):
    with pytest.raises(error, match="num_envs must be"):
        make_core(ENV, n, checkpoint=tiny_model(), dataset=tiny_dataset(), device="cpu")


def test_too_many_envs_are_refused_up_front_with_the_estimate():
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"num_envs=10000000 needs about .* per env.*Use fewer envs"):
        make_core(ENV, 10**7, checkpoint=tiny_model(), dataset=tiny_dataset(), device="cpu")
    assert time.monotonic() - start < 10, "the estimate must come before any allocation"


# --- seeds, options, indices --------------------------------------------------------------------------------

def test_vector_reset_takes_a_list_of_seeds_like_single_envs():
    with make_vec(3) as venv:
        _, info = venv.reset(seed=[7, 3, 11])
        listed = info["image_index"].tolist()
        _, info = venv.reset(seed=7)
        assert info["image_index"][0] == listed[0]
    for i, s in enumerate([7, 3, 11]):
        env = make()
        _, single = env.reset(seed=s)
        assert single["image_index"] == listed[i]
        env.close()


@pytest.mark.parametrize("seed, error", [([1, 2, 3], ValueError), ([1.5, 2], TypeError), (2.5, TypeError),
                                         ([-1, 2], ValueError)])
def test_bad_vector_seeds_are_refused(seed, error):
    with make_vec(2) as venv, pytest.raises(error, match="seed"):
        venv.reset(seed=seed)


def test_unknown_reset_options_name_the_valid_keys():
    env = make()
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['indx'\]; valid keys: \['index'\]"):
        env.reset(options={"indx": 3})
    with make_vec(2) as venv, pytest.raises(ValueError, match="did you mean 'indices'"):
        venv.reset(options={"index": [0, 1]})
    sb3 = gfnet_env.make_sb3_vec_env(ENV, n_envs=2, checkpoint=tiny_model(), dataset=tiny_dataset(), device="cpu")
    sb3.set_options({"indx": [0, 1]})
    with pytest.raises(ValueError, match="valid keys"):
        sb3.reset()
    sb3.close()


@pytest.mark.parametrize("index, error", [(1.7, TypeError), (2.0, TypeError), ("3", TypeError), (True, TypeError),
                                          (-1, IndexError), (24, IndexError)])
def test_image_index_must_be_an_integer_in_range(index, error):
    env = make()
    with pytest.raises(error, match="image index"):
        env.reset(options={"index": index})


def test_integer_indices_of_any_integer_type_work():
    env = make()
    for index in (2, np.int64(5), torch.tensor(7)):
        _, info = env.reset(options={"index": index})
        assert info["image_index"] == int(index)
    with make_vec(2) as venv:
        _, info = venv.reset(options={"indices": np.array([3, 4])})
        assert info["image_index"].tolist() == [3, 4]
        with pytest.raises(TypeError, match="image index"):
            venv.reset(options={"indices": [1, 1.5]})


# --- actions --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", ["3", True, np.array("3"), 3.5, np.array([1, 2])], ids=repr)
def test_bad_grid_actions_are_refused(action):
    env = make(action_mode="grid", grid_size=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="grid"):
        env.unwrapped.step(action)


def test_nan_in_tensor_actions_names_the_envs():
    with make_vec(3) as venv:
        venv.reset(seed=0)
        actions = torch.full((3, 2), 0.5)
        actions[1, 0] = float("nan")
        with pytest.raises(ValueError, match=r"NaN in actions of envs \[1\]"):
            venv.unwrapped.core.step(actions)


# --- closed envs (item 11) ---------------------------------------------------------------------------------

def test_step_after_close_raises():
    env = make()
    env.reset(seed=0)
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env.unwrapped.step(np.array([0.5, 0.5], np.float32))
    with make_vec(2) as venv:
        venv.reset(seed=0)
    with pytest.raises(RuntimeError, match="closed"):
        venv.step(np.full((2, 2), 0.5, np.float32))


# --- dataset items (item 9) ----------------------------------------------------------------------------------

class Items(torch.utils.data.Dataset):
    """A dataset of given (image, label) items."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _items(n=6, **replace):
    g = torch.Generator().manual_seed(0)
    items = [(torch.randn(3, 48, 48, generator=g), i % 5) for i in range(n)]
    for i, item in replace.items():
        items[int(i[1:])] = item
    return Items(items)


@pytest.mark.parametrize("first, match", [
    ((torch.full((3, 48, 48), float("nan")), 0), "NaN or infinite"),
    ((torch.full((3, 48, 48), float("inf")), 0), "NaN or infinite"),
    ((torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8), 0), "raw 0–255 pixels: convert to float and normalise"),
    ((torch.randn(3, 48, 48), 0.7), "Float labels are refused"),
    ((torch.randn(3, 48, 48), 3.0), "even integral ones such as 3.0"),
    ((torch.randn(3, 48, 48), 7), "outside the checkpoint's classes 0..4"),
])
def test_bad_first_item_is_refused_when_the_env_is_made(first, match):
    with pytest.raises(ValueError, match=match):
        make(dataset=_items(i0=first))


@pytest.mark.parametrize("item, match", [
    ((torch.full((3, 48, 48), float("nan")), 1), r"dataset images \[3\] contain NaN"),
    ((torch.randn(3, 48, 48), 0.7), r"dataset\[3\]\[1\] \(the label\)"),
    ((torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8), 1), r"dataset\[3\]\[0\].*uint8"),
    ((torch.randn(3, 40, 40), 1), r"dataset\[3\]\[0\].*shape"),
    ((torch.randn(3, 48, 48), 9), r"outside the checkpoint's classes"),
])
def test_bad_later_item_is_refused_when_loaded(item, match):
    env = make(dataset=_items(i3=item))
    env.reset(options={"index": 2})  # a good item
    with pytest.raises(ValueError, match=match):
        env.reset(options={"index": 3})


def test_nan_images_never_give_nan_rewards():
    images = torch.randn(8, 3, 48, 48)
    images[5, 0, 0, 0] = float("nan")
    with make_vec(4, dataset=TensorDataset(images, torch.arange(8) % 5)) as venv:
        venv.reset(seed=0, options={"indices": [0, 1, 2, 3]})
        with pytest.raises(ValueError, match=r"\[5\] contain NaN"):
            for _ in range(50):  # autoreset draws random images until image 5 comes up
                venv.step(np.full((4, 2), 0.5, np.float32))


def test_data_root_that_is_a_file_says_so(tmp_path, tiny_ckpt):
    f = tmp_path / "imagenet.tar"
    f.write_bytes(b"not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        gym.make(ENV, checkpoint=str(tiny_ckpt), data_root=str(f), device="cpu")
