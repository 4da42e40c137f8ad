"""Issue 11, items 1, 3, 9 (weights) and 12 (metadata): loading a checkpoint never runs code from the file unless
the caller passes the bool True, refuses such a file with our own advice, and checks what the file says."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import gfnet_env  # noqa: F401  (registers the env ids)
from helpers import TracePayload
from feature_nets.checkpoint import (CheckpointError, InvalidMetadataError, NonFiniteWeightsError,
                                     NotACheckpointError, UntrustedPickleError, checkpoint_dict, load_checkpoint,
                                     read_checkpoint_dict, save_checkpoint)
from feature_nets.gfnet import GFNetSpec
from helpers import tiny_dataset, tiny_model

pytestmark = pytest.mark.reliability

NOT_TRUE = ["no", "off", "false", "False", "True", "yes", 1, 0, None, np.True_, [True]]


def test_the_payload_runs_when_trusted(evil_ckpt):
    """The payload is real: full unpickling (trusted_pickle=True) writes the trace. The tests below rely on it."""
    path, trace = evil_ckpt
    load_checkpoint(path, trusted_pickle=True)
    assert trace.read_text() == "ran"


@pytest.mark.parametrize("value", NOT_TRUE, ids=repr)
def test_only_the_bool_true_enables_unpickling(evil_ckpt, value):
    path, trace = evil_ckpt
    for load in (lambda: load_checkpoint(path, trusted_pickle=value),
                 lambda: read_checkpoint_dict(path, trusted_pickle=value),
                 lambda: gym.make("GFNet-ImageNet-v0", checkpoint=str(path), dataset=tiny_dataset(),
                                  trusted_pickle=value, device="cpu")):
        with pytest.raises(TypeError, match="trusted_pickle must be True or False"):
            load()
    assert not trace.exists(), "the file's code ran"


def test_code_running_pickle_is_refused_with_our_advice(evil_ckpt):
    path, trace = evil_ckpt
    with pytest.raises(UntrustedPickleError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "run code" in msg and "exec" in msg
    assert "trusted_pickle=True" in msg and "--trusted-pickle" in msg
    assert "weights_only=False" not in msg and "will likely succeed" not in msg
    assert isinstance(info.value, CheckpointError) and info.value.__cause__ is None
    assert not trace.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("save_kwargs", [{"pickle_protocol": 4}, {"_use_new_zipfile_serialization": False}],
                         ids=["protocol4", "legacy-format"])
def test_refusal_does_not_depend_on_protocol_or_format(tmp_path, save_kwargs):
    """Protocol 4 names globals with STACK_GLOBAL; the legacy format is several pickles in a row."""
    trace = tmp_path / "TRACE"
    blob = {**checkpoint_dict(tiny_model()), "notes": TracePayload(trace)}
    path = tmp_path / "evil4.pth.tar"
    torch.save(blob, path, **save_kwargs)
    with pytest.raises(UntrustedPickleError, match="exec"):
        load_checkpoint(path, trusted_pickle=False)
    assert not trace.exists()


def test_garbage_is_not_a_checkpoint_and_gets_no_weights_only_advice(tmp_path):
    path = tmp_path / "garbage.pth.tar"
    path.write_bytes(b"\x80\x02garbage" * 20)
    with pytest.raises(NotACheckpointError) as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path, bad):
    model = tiny_model()
    with torch.no_grad():
        model.classifier.fc.weight[0, 0] = bad
    path = save_checkpoint(model, tmp_path / "nan.pth.tar")
    with pytest.raises(NonFiniteWeightsError, match=r"'fc'.*fc\.weight"):
        load_checkpoint(path)


def _saved(tmp_path, **changes):
    blob = checkpoint_dict(tiny_model())
    blob.update(changes)
    path = tmp_path / "edited.pth.tar"
    torch.save(blob, path)
    return path


def _spec_with(**changes):
    spec = tiny_model().spec.to_dict()
    spec.update(changes)
    return spec


@pytest.mark.parametrize("changes, match", [
    ({"patch_size": "ninety-six"}, "patch_size must be a positive integer"),
    ({"patch_size": -16}, "patch_size must be a positive integer"),
    ({"patch_size": 16.5}, "patch_size must be a positive integer"),
    ({"patch_size": 20}, "patch_size' is 20 but gfnet_spec says 16"),
    ({"flops": [1.0] * 7}, "'flops' has 7 entries but gfnet_spec says T=4"),
    ({"flops": ["a", "b"]}, "'flops' must be a list of numbers"),
    ({"flops": [1.0, float("nan"), 2.0, 3.0]}, "finite"),
    ({"gfnet_spec": _spec_with(patch_size=100, image_size=48)}, "exceeds image_size"),
    ({"gfnet_spec": _spec_with(T=0)}, "T must be a positive integer"),
    ({"gfnet_spec": _spec_with(T="5")}, "T must be a positive integer"),
    ({"model_flops": "lots"}, "multiply-add counts"),
])
def test_bad_metadata_is_a_clear_error_at_load(tmp_path, changes, match):
    with pytest.raises(InvalidMetadataError, match=match):
        load_checkpoint(_saved(tmp_path, **changes))


def test_spec_checks_its_own_fields():
    config = tiny_model().spec.config
    with pytest.raises(TypeError, match="patch_size must be a positive integer"):
        GFNetSpec(config, patch_size="ninety-six", T=4)
    with pytest.raises(ValueError, match="T must be a positive integer"):
        GFNetSpec(config, patch_size=16, T=-1)
    assert GFNetSpec(config, patch_size=np.int64(16), T=torch.tensor(4)).T == 4  # integer types are fine


@pytest.mark.parametrize("checkpoint", [123, 1.5, ["a.pth.tar"]], ids=repr)
def test_a_checkpoint_that_is_not_a_path_is_a_clear_error(checkpoint):
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        load_checkpoint(checkpoint)
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        gym.make("GFNet-ImageNet-v0", checkpoint=checkpoint, dataset=tiny_dataset(), device="cpu")


def test_valid_checkpoint_still_loads(tiny_ckpt):
    loaded = load_checkpoint(tiny_ckpt, trusted_pickle=False)
    assert loaded.T == 4 and loaded.patch_size == 16 and len(loaded.flops) == 4
