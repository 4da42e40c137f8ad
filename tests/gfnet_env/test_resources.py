"""Envs release what they start: image-loading threads end on close(), close() is idempotent, the ``with``
form closes, and a closed env refuses to reset.

Every env here reads a tiny ImageFolder written to tmp_path: image folders are decoded in loader threads
(in-memory datasets start none), so a leak would show in ``threading.active_count()``.
"""

from __future__ import annotations

import gc
import threading
import time

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import gfnet_env
from feature_nets.checkpoint import save_checkpoint
from helpers import tiny_model

ENV_ID = "GFNet-ImageNet-v0"
CYCLES = 20


def _write_folder(root, n_per_class=3, size=60):
    """``root/val/<class>/<i>.png``: random RGB images in ImageFolder layout (the tiny model resizes them)."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "val" / c).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "val" / c / f"{i}.png")
    return root


@pytest.fixture
def task(tmp_path):
    """Env kwargs of a tiny checkpoint file and an image folder."""
    ckpt = save_checkpoint(tiny_model(), tmp_path / "tiny.pth.tar")
    return dict(checkpoint=str(ckpt), data_root=str(_write_folder(tmp_path / "images")), device="cpu")


def _threads_settle(expected: int, timeout: float = 5.0) -> int:
    """``threading.active_count()`` once it reaches ``expected`` (or after ``timeout``)."""
    end = time.monotonic() + timeout
    while threading.active_count() != expected and time.monotonic() < end:
        time.sleep(0.01)
    return threading.active_count()


def _single(task):
    env = gym.make(ENV_ID, **task)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    return env


def _vector(task):
    env = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **task)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    return env


def _sb3(task):
    env = gfnet_env.make_sb3_vec_env(ENV_ID, n_envs=2, seed=0, **task)
    env.reset()
    env.step(np.stack([env.action_space.sample() for _ in range(env.num_envs)]))
    return env


FACES = {"single": _single, "vector": _vector, "sb3": _sb3}


def _core(env):
    return env.unwrapped.core if hasattr(env, "unwrapped") else env.core


def _warm_up(make, task) -> int:
    """Make and close one env (anything started once per process, not per env, starts here); the thread count
    after it, once nothing is left to collect."""
    make(task).close()
    gc.collect()
    return _stable_count()


def _stable_count(quiet: float = 0.2, timeout: float = 5.0) -> int:
    """``threading.active_count()`` once it has not changed for ``quiet`` seconds (threads of collected
    objects end asynchronously)."""
    end = time.monotonic() + timeout
    count, since = threading.active_count(), time.monotonic()
    while time.monotonic() < end and time.monotonic() - since < quiet:
        time.sleep(0.01)
        now = threading.active_count()
        if now != count:
            count, since = now, time.monotonic()
    return count


@pytest.mark.parametrize("face", sorted(FACES))
def test_creating_and_closing_envs_leaves_no_thread(task, face):
    make = FACES[face]
    start = _warm_up(make, task)
    kept = []  # every env stays referenced: only close(), not garbage collection, may end its threads
    for i in range(CYCLES):
        env = make(task)
        kept.append(env)
        if i == 0:  # the images are really decoded in threads, so the check below can fail
            assert threading.active_count() > start, "no loader thread started: the test checks nothing"
        env.close()
    assert _threads_settle(start) == start, (
        f"{face}: {threading.active_count() - start} threads left after {CYCLES} envs were closed: "
        f"{[t.name for t in threading.enumerate()]}")


@pytest.mark.parametrize("face", sorted(FACES))
def test_close_is_idempotent_and_closed_env_refuses_reset(task, face):
    env = FACES[face](task)
    core = _core(env)
    env.close()
    env.close()  # a second close is a no-op
    core.close()
    with pytest.raises(RuntimeError, match="closed"):
        core.reset_slots(np.arange(core.num_envs))
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


@pytest.mark.parametrize("face", sorted(FACES))
def test_with_form_closes(task, face):
    start = _warm_up(FACES[face], task)
    with FACES[face](task) as env:
        core = _core(env)
        assert threading.active_count() > start
    assert _threads_settle(start) == start
    with pytest.raises(RuntimeError, match="closed"):
        core.reset_slots(np.arange(core.num_envs))


def test_core_with_form_and_closed_core_refuses_reset(task):
    from gfnet_env.factory import make_core

    gc.collect()
    start = _stable_count()
    with make_core(ENV_ID, 2, **task) as core:
        core.reset_slots(np.arange(2))
        _rewards, _terminated, info = core.step(np.full((2, 2), 0.5, np.float32))
        assert info["step"].tolist() == [1, 1]
        assert threading.active_count() > start
    assert _threads_settle(start) == start
    core.close()  # idempotent after the with block too
    with pytest.raises(RuntimeError, match="closed; make a new one"):
        core.reset_slots(np.arange(2))
