"""The prepared evaluation cache: exact pixels, env episodes identical to the JPEGs, stale caches refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from gfnet_env.data.image_folder import ImageFolderDataset, imagenet_split
from gfnet_env.factory import make_core
from gfnet_env.data.prepared import (PreparedDataset, StalePreparedError, default_prepared_path, open_prepared,
                                prepare_split)
from helpers import tiny_model, write_jpegs


@pytest.fixture()
def data_root(tmp_path):
    write_jpegs(tmp_path / "val")
    return tmp_path


def test_prepared_items_are_bit_identical_to_the_jpeg_path(data_root):
    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    path = prepare_split(folder, threads=2)
    assert path == data_root / "val.gfnet-prepared.npy" == default_prepared_path(folder)
    cache = open_prepared(folder, image_size=model.image_size)
    assert isinstance(cache, PreparedDataset) and len(cache) == len(folder) == 12
    assert isinstance(cache.pixels, np.memmap)  # memory-mapped, not loaded
    assert cache.pixels.shape == (12, 3, 48, 48) and cache.pixels.dtype == np.uint8
    assert cache.targets == folder.targets
    for i in range(len(folder)):
        a, ya = folder[i]
        b, yb = cache[i]
        assert ya == yb and a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b), f"item {i} differs by {(a - b).abs().max()}"
    assert not list(data_root.glob("*.tmp*")), "temporary files left behind"
    import pickle
    blob = pickle.dumps(cache)
    assert len(blob) < cache.pixels.nbytes  # the memory map is reopened, not copied, when pickled
    assert torch.equal(pickle.loads(blob)[5][0], cache[5][0])


def test_env_episodes_from_the_cache_equal_episodes_from_the_jpegs(data_root):
    model = tiny_model()
    prepare_split(imagenet_split(data_root, "val", model.spec.config))
    results = []
    for prepared in (False, None):  # False: decode the JPEGs; None: the cache found beside val/
        with make_core("imagenet", 6, device="cpu", checkpoint=model, data_root=data_root, prepared=prepared,
                       loader_threads=0) as core:
            assert isinstance(core.dataset, PreparedDataset) == (prepared is None)
            core.reset_slots(np.arange(6), [0, 3, 5, 7, 9, 11])
            obs, rewards = [core.observe()], []
            rng = np.random.default_rng(0)
            for _ in range(core.max_steps):
                r, _term, info = core.step(rng.random((6, 2), dtype=np.float32))
                obs.append(core.observe())
                rewards.append(r)
            results.append((obs, np.stack(rewards), info["target"]))
    (obs_a, rew_a, tgt_a), (obs_b, rew_b, tgt_b) = results
    assert np.array_equal(tgt_a, tgt_b)
    assert np.array_equal(rew_a, rew_b)
    assert len(obs_a) == len(obs_b) == 4  # glance + 3 focus steps (tiny model T=4)
    for oa, ob in zip(obs_a, obs_b):
        oa, ob = (oa, ob) if isinstance(oa, dict) else ({"obs": oa}, {"obs": ob})
        for k in oa:
            assert np.array_equal(oa[k], ob[k]), k


def test_stale_cache_is_refused_and_a_missing_one_falls_back(data_root):
    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    assert open_prepared(folder) is None  # nothing written yet: silently decode the JPEGs
    with make_core("imagenet", 2, device="cpu", checkpoint=model, data_root=data_root) as core:
        assert isinstance(core.dataset, ImageFolderDataset)
    prepare_split(folder)
    victim = data_root / "val" / "c1" / "img2.JPEG"
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(StalePreparedError, match=r"image files changed.*changed \(size or mtime\).*img2"):
        make_core("imagenet", 2, device="cpu", checkpoint=model, data_root=data_root)
    prepare_split(imagenet_split(data_root, "val", model.spec.config))  # rebuilt: accepted again
    (data_root / "val" / "c0" / "img0.JPEG").unlink()
    with pytest.raises(StalePreparedError, match=r"1 removed"):
        open_prepared(imagenet_split(data_root, "val", model.spec.config))
    with pytest.raises(FileNotFoundError, match="prepare-data"):
        open_prepared(folder, data_root / "elsewhere.npy")
    with pytest.raises(ValueError, match="val split"):
        make_core("imagenet", 2, device="cpu", checkpoint=model, data_root=data_root, split="train",
                  prepared=str(data_root / "val.gfnet-prepared.npy"))


def test_cache_of_another_image_size_or_transform_is_stale(data_root):
    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    prepare_split(folder)
    other = imagenet_split(data_root, "val", model.spec.config.with_overrides(image_size=40))
    with pytest.raises(StalePreparedError, match="image_size"):
        open_prepared(other, image_size=40)
    with pytest.raises(ValueError, match="deterministic"):  # the train transform cannot be cached exactly
        from gfnet_env.data.image_folder import train_transform
        prepare_split(ImageFolderDataset(data_root / "val", train_transform(model.spec.config)))


def test_corrupt_images_are_recorded_and_raise_on_read(data_root):
    model = tiny_model()
    (data_root / "val" / "c2" / "img1.JPEG").write_bytes(b"not a jpeg")
    folder = imagenet_split(data_root, "val", model.spec.config)
    prepare_split(folder)
    meta = json.loads((data_root / "val.gfnet-prepared.npy.json").read_text())
    bad = [i for i, (p, _) in enumerate(folder.samples) if p.endswith("c2/img1.JPEG")]
    assert meta["corrupt"] == bad
    cache = open_prepared(folder)
    from gfnet_env.data.image_folder import CorruptImageError
    with pytest.raises(CorruptImageError, match="img1"):
        cache[bad[0]]
    with make_core("imagenet", 3, device="cpu", checkpoint=model, data_root=data_root, loader_threads=0) as core:
        with pytest.warns(UserWarning, match="skipping corrupt image"):
            core.reset_slots(np.arange(3), [bad[0], 0, 1])
        assert core.skipped_images == 1


def test_prepare_data_command(data_root, tmp_path, capsys):
    from gfnet_cli.main import main

    out = tmp_path / "custom" / "v.npy"
    rc = main(["prepare-data", "--data-root", str(data_root), "--split", "val", "--model", "mobilenetv3_large_100",
               "--image-size", "32", "--out", str(out)])
    assert rc in (0, None)
    cache = PreparedDataset(out)
    assert cache.pixels.shape == (12, 3, 32, 32)
    assert "12 images" in capsys.readouterr().out


def test_benchmark_uses_the_cache_and_says_so(data_root, capsys):
    from agents.benchmark.run import run_benchmark

    model = tiny_model()
    kwargs = {"checkpoint": model, "data_root": str(data_root)}
    plain = run_benchmark("GFNet-ImageNet-v0", ["center"], None, episodes=6, env_kwargs=kwargs, batch_size=3,
                          device="cpu", verbose=False)
    assert plain["image_source"].startswith("image folder")
    prepare_split(imagenet_split(data_root, "val", model.spec.config))
    cached = run_benchmark("GFNet-ImageNet-v0", ["center"], None, episodes=6, env_kwargs=kwargs, batch_size=3,
                           device="cpu", verbose=True)
    assert cached["image_source"].startswith("prepared cache") and "prepared cache" in capsys.readouterr().out
    assert cached["agents"]["center"]["anytime_top1"] == plain["agents"]["center"]["anytime_top1"]
