"""`gfnet train-features` defaults that fit the machine: data-loader workers from the cores present, and sample
caps (``--train-samples`` / ``--val-samples``) that take items spread over the split, so that every class is in
them (as the benchmark's images are), not the first N of a folder sorted by class."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch
from torch.utils.data import Subset

from feature_nets.checkpoint import load_checkpoint
from feature_nets.devices import available_cpus, default_workers
from feature_nets.sampling import spread_indices, spread_subset
from gfnet_cli.commands import train_features
from gfnet_env.tasks import TrainingOptions, get_task, image_folder_training_sets
from helpers import tiny_model, write_image_folder


@pytest.fixture
def two_cores(monkeypatch):
    """The process may run on 2 cores (what os.sched_getaffinity says, which PyTorch's DataLoader reads too)."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)


def folder_of_three_classes(root, per_class: int = 4):
    for split in ("train", "val"):
        write_image_folder(root, split, classes=("a", "b", "c"), n_per_class=per_class, size=40)
    return root


def labels(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def test_default_workers_never_exceed_the_cores(two_cores):
    assert available_cpus() == 2
    assert default_workers(8) == 2 and default_workers(1) == 1 and default_workers(0) == 0
    assert default_workers(8, cpus=16) == 8
    args = argparse.Namespace(workers=None)
    assert train_features._workers(args, None) == 2                          # an ImageFolder: 8, capped by 2 cores
    assert train_features._workers(args, get_task("cluttered-fashion-mnist")) == 0  # canvases made in memory
    assert train_features._workers(argparse.Namespace(workers=5), None) == 5  # asked for: as given
    with pytest.raises(ValueError, match="--workers must be 0 or more"):
        train_features._workers(argparse.Namespace(workers=-1), None)


def test_sample_caps_span_the_classes_of_a_folder(tmp_path):
    root = folder_of_three_classes(tmp_path)
    options = TrainingOptions(train_samples=3, val_samples=6)
    train, val = image_folder_training_sets(root, tiny_model(image_size=40), options)
    assert isinstance(val, Subset) and len(val) == 6 and len(train) == 3
    assert sorted(labels(val)) == [0, 0, 1, 1, 2, 2]   # the first 6 would be 4 of class a and 2 of b
    assert sorted(labels(train)) == [0, 1, 2]
    again, _ = image_folder_training_sets(root, tiny_model(image_size=40), options)
    assert again.indices == train.indices               # no randomness: the same items every time
    full_train, full_val = image_folder_training_sets(root, tiny_model(image_size=40), TrainingOptions())
    assert len(full_train) == len(full_val) == 12       # no cap: everything


def test_spread_subset_is_the_benchmarks_rule():
    data = list(range(10))
    assert spread_subset(data, 4).indices == spread_indices(10, 4)[0] == [0, 2, 5, 7]
    assert spread_subset(data, None) is data and spread_subset(data, 0) is data and spread_subset(data, 10) is data
    with pytest.raises(ValueError, match="whole number"):
        spread_subset(data, -2)


def test_train_features_on_two_cores_starts_no_more_workers_than_cores(two_cores, tmp_path):
    root = folder_of_three_classes(tmp_path / "images", per_class=4)
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = train_features.main(["--model", "small_cnn", "--data-root", str(root), "--image-size", "48",
                                  "--patch-size", "16", "--T", "3", "--small-widths", "8,16", "--small-feature-num",
                                  "16", "--val-samples", "6", "--epochs", "1", "--batch-size", "6",
                                  "--max-steps-per-epoch", "1", "--threads", str(torch.get_num_threads()),
                                  "--no-progress", "--out", str(out)])
    assert rc == 0
    stored = load_checkpoint(out / "last.pth.tar").extra["train_config"]
    assert stored["workers"] == 2
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
