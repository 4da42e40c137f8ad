"""Cluttered Fashion-MNIST (gfnet_env.data.cluttered_fashion_mnist): determinism, geometry, splits, errors.

Tests that need the real data skip when the IDX files are not installed (Debian package
``dataset-fashion-mnist``, or ``FASHION_MNIST_DIR``); the file-discovery tests build tiny IDX files.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import gfnet_env.data.cluttered_fashion_mnist as cfm
from gfnet_env.data.cluttered_fashion_mnist import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    ClutteredFashionMNIST,
    FashionMNISTItems,
    FashionMNISTNotFoundError,
    find_fashion_mnist_dir,
    load_fashion_mnist,
    read_idx,
)
from helpers import needs_fashion_mnist



N = 64  # canvases per test: keep it light


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_dataset(folder: Path, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 100, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 20, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        _write_idx(folder / name, arr, gz)
    return arrays


@pytest.fixture
def no_default_locations(monkeypatch, tmp_path):
    """Hide every location the loader would look at besides the ones a test names."""
    monkeypatch.delenv(cfm.ENV_VAR, raising=False)
    monkeypatch.setattr(cfm, "DEBIAN_DIR", tmp_path / "no-debian-here")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache-here"))
    monkeypatch.setattr(cfm, "_cache", {})


# --------------------------------------------------------------------------------------------------
# files


def test_clear_error_when_no_files_found(no_default_locations, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FashionMNISTNotFoundError) as info:
        ClutteredFashionMNIST("train", root=empty)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "root=" in msg and "FASHION_MNIST_DIR" in msg
    assert "download=True" in msg
    assert str(empty) in msg
    with pytest.raises(FileNotFoundError):
        FashionMNISTItems("test", root=empty)


def test_error_without_root_either(no_default_locations):
    with pytest.raises(FashionMNISTNotFoundError, match="dataset-fashion-mnist"):
        find_fashion_mnist_dir()


@pytest.mark.parametrize("gz", [True, False])
def test_root_env_var_and_torchvision_layout(no_default_locations, monkeypatch, tmp_path, gz):
    arrays = _fake_dataset(tmp_path / "plain", gz)
    assert find_fashion_mnist_dir(tmp_path / "plain") == tmp_path / "plain"
    data = load_fashion_mnist(tmp_path / "plain")
    np.testing.assert_array_equal(data["train_images"], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data["test_labels"], arrays["t10k-labels-idx1-ubyte"])
    # FASHION_MNIST_DIR is used when no root is given
    monkeypatch.setenv(cfm.ENV_VAR, str(tmp_path / "plain"))
    assert find_fashion_mnist_dir() == tmp_path / "plain"
    monkeypatch.delenv(cfm.ENV_VAR)
    # torchvision stores the raw files under root/FashionMNIST/raw
    tv = tmp_path / "tv"
    _fake_dataset(tv / "FashionMNIST" / "raw", gz)
    assert find_fashion_mnist_dir(tv) == tv / "FashionMNIST" / "raw"
    ds = FashionMNISTItems("val", root=tv, val_size=10, num_samples=3, normalize=False, channels=1)
    x, y = ds[0]
    assert len(ds) == 3 and x.shape == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    canvases = ClutteredFashionMNIST("train", root=tv, val_size=10)
    assert len(canvases) == 90 and canvases[89][0].shape == (3, 112, 112)


def test_read_idx_rejects_garbage(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"abc")
    with pytest.raises(ValueError, match="shape"):
        read_idx(short)


# --------------------------------------------------------------------------------------------------
# real data


@needs_fashion_mnist
def test_raw_data_and_normalisation_constants():
    data = load_fashion_mnist()
    assert data["train_images"].shape == (60000, 28, 28)
    assert data["test_images"].shape == (10000, 28, 28)
    assert set(np.unique(data["train_labels"]).tolist()) == set(range(10))
    x = data["train_images"].astype(np.float64) / 255.0
    assert x.mean() == pytest.approx(FASHION_MNIST_MEAN, abs=1e-12)
    assert x.std() == pytest.approx(FASHION_MNIST_STD, abs=1e-12)


def _canvases(ds, n=N):
    return [ds.render(i) for i in range(n)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (ca, la, pa), (cb, lb, pb) in zip(a, b):
        np.testing.assert_array_equal(ca, cb)
        assert la == lb and pa == pb


@needs_fashion_mnist
def test_same_seed_same_canvases_different_seed_different():
    a = _canvases(ClutteredFashionMNIST("train", seed=3))
    b = _canvases(ClutteredFashionMNIST("train", seed=3))
    _assert_same(a, b)
    c = _canvases(ClutteredFashionMNIST("train", seed=4))
    assert [x[1] for x in a] == [x[1] for x in c]  # same items, same labels
    assert sum(np.array_equal(x[0], y[0]) for x, y in zip(a, c)) == 0
    assert sum(x[2] == y[2] for x, y in zip(a, c)) < N // 4


@needs_fashion_mnist
def test_random_access_is_order_independent():
    ds = ClutteredFashionMNIST("val", seed=1)
    forward = _canvases(ds, 16)
    backward = [ds.render(i) for i in reversed(range(16))][::-1]
    _assert_same(forward, backward)
    x1, y1 = ds[5]
    x2, y2 = ds[5 - len(ds)]
    assert torch.equal(x1, x2) and y1 == y2 == int(ds.labels[5])


@needs_fashion_mnist
def test_set_epoch_changes_clutter_not_labels():
    ds = ClutteredFashionMNIST("train", seed=0)
    e0 = _canvases(ds)
    ds.set_epoch(1)
    assert ds.epoch == 1
    e1 = _canvases(ds)
    assert [x[1] for x in e0] == [x[1] for x in e1] == ds.labels[:N].tolist()
    for i in (0, 7, 31):  # the same item every epoch
        np.testing.assert_array_equal(ds.clean_item(i), load_fashion_mnist()["train_images"][i])
    assert sum(np.array_equal(x[0], y[0]) for x, y in zip(e0, e1)) == 0
    ds.set_epoch(0)
    _assert_same(e0, _canvases(ds))
    with pytest.raises(ValueError):
        ds.set_epoch(-1)


@needs_fashion_mnist
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_item_lies_at_item_position(split):
    ds = ClutteredFashionMNIST(split, seed=2, normalize=False, channels=1)
    C = ds.canvas_size
    for i in range(N):
        canvas, label, (r, c) = ds.render(i)
        assert (r, c) == ds.item_position(i)
        assert 0 <= r <= C - 28 and 0 <= c <= C - 28
        item = ds.clean_item(i)
        region = canvas[r : r + 28, c : c + 28]
        assert bool((region >= item).all())  # max-combined: every item pixel is there
        assert (region == item).mean() > 0.6  # clutter covers only a small part of it
        img, lab, pos = ds.item(i)
        assert lab == label and pos == (r, c)
        torch.testing.assert_close(img[0], torch.from_numpy(canvas).float() / 255.0)
        assert canvas.dtype == np.uint8 and canvas.shape == (C, C)


@needs_fashion_mnist
def test_no_clutter_canvas_is_just_the_item():
    ds = ClutteredFashionMNIST("test", num_clutter=0, canvas_size=60, normalize=False, channels=1)
    canvas, _, (r, c) = ds.render(3)
    expected = np.zeros((60, 60), np.uint8)
    expected[r : r + 28, c : c + 28] = ds.clean_item(3)
    np.testing.assert_array_equal(canvas, expected)


@needs_fashion_mnist
def test_value_range_shape_dtype():
    raw = ClutteredFashionMNIST("val", normalize=False, num_samples=N)
    norm = ClutteredFashionMNIST("val", normalize=True, num_samples=N)
    lo, hi = (0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD, (1 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert len(raw) == N
    for i in range(0, N, 7):
        x, y = raw[i]
        z, y2 = norm[i]
        assert x.shape == z.shape == (3, 112, 112) and x.dtype == z.dtype == torch.float32
        assert isinstance(y, int) and y == y2 and 0 <= y < 10
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert float(x.max()) > 0.5  # there is an item
        assert lo - 1e-5 <= float(z.min()) and float(z.max()) <= hi + 1e-5
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
        torch.testing.assert_close(z, (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)


@needs_fashion_mnist
def test_splits_sizes_and_disjoint():
    train = ClutteredFashionMNIST("train")
    val = ClutteredFashionMNIST("val")
    test = ClutteredFashionMNIST("test")
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    data = load_fashion_mnist()
    np.testing.assert_array_equal(val.clean_item(0), data["train_images"][55000])
    np.testing.assert_array_equal(train.clean_item(-1), data["train_images"][54999])
    np.testing.assert_array_equal(test.clean_item(0), data["test_images"][0])
    # the two parts of the training file share no image
    tr = {bytes(img) for img in data["train_images"][:55000].reshape(55000, -1)}
    va = [bytes(img) for img in data["train_images"][55000:].reshape(5000, -1)]
    assert not any(v in tr for v in va)
    small = ClutteredFashionMNIST("val", val_size=1000)
    assert len(small) == 1000 and len(ClutteredFashionMNIST("train", val_size=1000)) == 59000
    # the same canvas in a different split is different (split is part of the seed)
    assert not np.array_equal(train.render(0)[0], ClutteredFashionMNIST("test").render(0)[0])


@needs_fashion_mnist
def test_num_samples_prefix_is_the_same_canvases():
    full = ClutteredFashionMNIST("test", seed=5)
    part = ClutteredFashionMNIST("test", seed=5, num_samples=10)
    assert len(part) == 10
    _assert_same(_canvases(full, 10), _canvases(part, 10))
    with pytest.raises(IndexError):
        part[10]
    with pytest.raises(ValueError, match="num_samples"):
        ClutteredFashionMNIST("test", num_samples=10001)


@needs_fashion_mnist
def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        ClutteredFashionMNIST("validation")
    with pytest.raises(ValueError, match="canvas_size"):
        ClutteredFashionMNIST("val", canvas_size=20)
    with pytest.raises(ValueError, match="fragment_size"):
        ClutteredFashionMNIST("val", fragment_size=29)
    with pytest.raises(ValueError, match="channels"):
        FashionMNISTItems("val", channels=0)


@needs_fashion_mnist
def test_items_dataset():
    ds = FashionMNISTItems("train", num_samples=N)
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    assert ClutteredFashionMNIST.classes == ds.classes
    x, y = ds[1]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32
    raw = load_fashion_mnist()["train_images"][1].astype(np.float32) / 255.0
    torch.testing.assert_close(x[2], (torch.from_numpy(raw) - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)
    assert y == int(load_fashion_mnist()["train_labels"][1])
    assert len(FashionMNISTItems("val")) == 5000 and len(FashionMNISTItems("test")) == 10000


@needs_fashion_mnist
def test_works_with_a_dataloader():
    ds = ClutteredFashionMNIST("val", num_samples=8)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert x.shape == (8, 3, 112, 112) and y.tolist() == ds.labels.tolist()
