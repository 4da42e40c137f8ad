"""Issue 11, item 8: ImageFolderDataset follows symlinks without loops or double counting, and never opens a
FIFO (or another non-regular file) that carries an image extension."""

from __future__ import annotations

import os
import threading

import gymnasium as gym
import pytest

import gfnet_env  # noqa: F401
from gfnet_env.data.image_folder import CorruptImageError, ImageFolderDataset
from helpers import write_image_folder

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or os.name != "posix", reason="POSIX links and FIFOs")


def _within(seconds, fn):
    """fn() in a daemon thread; its result, or a failure if it is still running after ``seconds`` (a hang)."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (blocked on a FIFO?)"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_symlink_loops_are_listed_once(tmp_path):
    root = write_image_folder(tmp_path, n_per_class=6)
    val = root / "val"
    os.symlink(val / "a", val / "a" / "loop")          # a folder that contains itself
    os.symlink(val, val / "a" / "to_root")             # the dataset root (would relist every class)
    os.symlink(val / "b", val / "a" / "to_b")          # another class (would steal its images)
    os.symlink("..", val / "b" / "up")                 # relative link to the root
    with pytest.warns(UserWarning, match="skipped 4 symlinked folder"):
        ds = ImageFolderDataset(val)
    assert len(ds) == 12 and ds.targets.count(0) == 6 and ds.targets.count(1) == 6
    assert len({os.path.realpath(p) for p, _ in ds.samples}) == 12


def test_symlinked_class_folders_and_files_still_count(tmp_path):
    root = write_image_folder(tmp_path / "data", n_per_class=2)
    elsewhere = write_image_folder(tmp_path / "other", classes=("c",), n_per_class=3)
    os.symlink(elsewhere / "val" / "c", root / "val" / "c")               # a class folder that is a link
    os.symlink(root / "val" / "a" / "0.png", root / "val" / "b" / "x.png")  # a file link
    ds = ImageFolderDataset(root / "val")
    assert ds.classes == ["a", "b", "c"] and len(ds) == 2 + 3 + 3


def test_a_fifo_named_like_an_image_is_not_listed_and_reset_does_not_hang(tmp_path, tiny_ckpt):
    root = write_image_folder(tmp_path, n_per_class=2)
    os.mkfifo(root / "val" / "a" / "x.JPEG")
    ds = _within(20, lambda: ImageFolderDataset(root / "val"))
    assert len(ds) == 4 and not any(p.endswith("x.JPEG") for p, _ in ds.samples)

    def episodes():
        with gym.make("GFNet-ImageNet-v0", checkpoint=str(tiny_ckpt), data_root=str(root), device="cpu") as env:
            return [env.reset(options={"index": i})[1]["image_index"] for i in range(4)]

    assert _within(60, episodes) == [0, 1, 2, 3]


def test_a_file_replaced_by_a_fifo_after_listing_is_a_corrupt_image_not_a_hang(tmp_path):
    root = write_image_folder(tmp_path, n_per_class=2)
    ds = ImageFolderDataset(root / "val")
    path = ds.samples[1][0]
    os.remove(path)
    os.mkfifo(path)
    with pytest.raises(CorruptImageError, match="not a regular file"):
        _within(20, lambda: ds.load_image(1))
