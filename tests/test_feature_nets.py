"""Unit tests of the feature networks: batched crop, checkpoint errors, multiply-adds, the model API."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance_utils import load_config, write_official_checkpoint
from feature_nets.checkpoint import (
    CheckpointNotFoundError,
    NotACheckpointError,
    ShapeMismatchError,
    StateDictMismatchError,
    UnknownArchitectureError,
    UntrustedPickleError,
    load_checkpoint,
    save_checkpoint,
)
from feature_nets.crop import crop_corners, crop_patches, crop_patches_reference
from feature_nets.gfnet import build_gfnet
from feature_nets.madds import count_madds
from tiny import tiny_model

unit = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    s=st.integers(8, 40),
    p_frac=st.floats(0.1, 1.0),
    actions=st.lists(st.tuples(st.sampled_from([0.0, 1.0]) | unit, st.sampled_from([0.0, 1.0]) | unit),
                     min_size=1, max_size=5),
)
def test_batched_crop_equals_per_sample_reference(s, p_frac, actions):
    p = max(1, int(s * p_frac))
    a = torch.tensor(actions, dtype=torch.float32)
    images = torch.randn(len(actions), 3, s, s)
    corners = crop_corners(a, s, p)
    assert (corners >= 0).all() and (corners <= s - p).all()
    assert torch.equal(corners, torch.floor(a * (s - p)).long())
    assert torch.equal(crop_patches(images, corners, p), crop_patches_reference(images, corners, p))
    # many patches from the same images: patch m comes from image source[m]
    source = torch.arange(len(actions)).flip(0).repeat(2)
    many = crop_patches(images, corners.flip(0).repeat(2, 1), p, source)
    assert torch.equal(many, crop_patches_reference(images[source], corners.flip(0).repeat(2, 1), p))


def test_crop_rows_come_from_first_action_coordinate():
    images = torch.arange(10 * 10, dtype=torch.float32).view(1, 1, 10, 10).expand(1, 3, 10, 10)
    corners = crop_corners(torch.tensor([[1.0, 0.0]]), 10, 4)
    assert corners.tolist() == [[6, 0]]
    assert crop_patches(images, corners, 4)[0, 0, 0, 0].item() == 60.0


# --- checkpoints ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet_ckpt(tmp_path_factory):
    meta, _ = load_config("mobilenetv3_large_100_p96_T3")
    path = tmp_path_factory.mktemp("ck") / "m.pth.tar"
    write_official_checkpoint(meta, path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth.tar")


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(NotACheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pth.tar"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(NotACheckpointError, match="lacks"):
        load_checkpoint(other)


def test_truncated_checkpoint(mobilenet_ckpt, tmp_path):
    data = mobilenet_ckpt.read_bytes()
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(NotACheckpointError):
        load_checkpoint(cut)


def test_legacy_pickle_needs_opt_in(mobilenet_ckpt, tmp_path):
    ck = torch.load(mobilenet_ckpt, weights_only=True)

    ck["args"] = _LegacyArgs()
    legacy = tmp_path / "legacy.pth.tar"
    torch.save(ck, legacy)
    with pytest.raises(UntrustedPickleError, match="trusted_pickle=True"):
        load_checkpoint(legacy)
    loaded = load_checkpoint(legacy, trusted_pickle=True)
    assert loaded.model_name == "mobilenetv3_large_100"


class _LegacyArgs:  # a non-tensor object, as old training scripts pickled their argparse namespace
    lr = 0.1


def test_unknown_model_name(mobilenet_ckpt, tmp_path):
    ck = torch.load(mobilenet_ckpt, weights_only=True)
    ck["model_name"] = "vgg16"
    p = tmp_path / "u.pth.tar"
    torch.save(ck, p)
    with pytest.raises(UnknownArchitectureError, match="vgg16"):
        load_checkpoint(p)


def test_missing_and_unexpected_keys_are_named_with_architecture_hint(mobilenet_ckpt, tmp_path):
    ck = torch.load(mobilenet_ckpt, weights_only=True)
    sd = ck["model_state_dict"]
    removed = "module.conv_head.weight"
    sd.pop(removed)
    sd["module.extra.weight"] = torch.zeros(1)
    p = tmp_path / "k.pth.tar"
    torch.save(ck, p)
    with pytest.raises(StateDictMismatchError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert "conv_head.weight" in msg and "extra.weight" in msg and "mobilenetv3_large_100" in msg


def test_encoder_of_another_architecture_is_recognised(mobilenet_ckpt, tmp_path):
    meta, _ = load_config("efficientnet_b2_p128_T4")
    other = tmp_path / "e.pth.tar"
    write_official_checkpoint(meta, other)
    ck = torch.load(mobilenet_ckpt, weights_only=True)
    ck["model_state_dict"] = torch.load(other, weights_only=True)["model_state_dict"]
    p = tmp_path / "mixed.pth.tar"
    torch.save(ck, p)
    with pytest.raises(StateDictMismatchError, match="look like a efficientnet_b2"):
        load_checkpoint(p)


def test_shape_mismatch(mobilenet_ckpt, tmp_path):
    ck = torch.load(mobilenet_ckpt, weights_only=True)
    ck["fc"]["fc_5.weight"] = torch.zeros(1000, 10)
    p = tmp_path / "s.pth.tar"
    torch.save(ck, p)
    with pytest.raises(ShapeMismatchError, match="fc_5.weight"):
        load_checkpoint(p)


def test_save_load_roundtrip_small_model(tmp_path):
    m = tiny_model()
    path = save_checkpoint(m, tmp_path / "tiny.pth.tar", anytime_classification=[1.0, 2.0, 3.0, 4.0])
    raw = torch.load(path, weights_only=True)  # our files never need a full unpickle
    assert raw["model_name"] == "small_cnn" and len(raw["flops"]) == m.T
    assert not any(k.startswith("module.") for k in raw["model_state_dict"])
    loaded = load_checkpoint(path)
    assert loaded.anytime_classification == [1.0, 2.0, 3.0, 4.0]
    x = torch.randn(2, 3, m.image_size, m.image_size)
    a = m.run(x)[0][-1].logits
    b = loaded.model.run(x)[0][-1].logits
    assert torch.allclose(a, b, atol=1e-6)


# --- multiply-adds ----------------------------------------------------------------------------------

def test_resnet50_madds_at_96_is_about_075_g():
    model = build_gfnet("resnet50", 96, 5, with_policy=False)
    m = count_madds(model)
    assert abs(m["focus"] - 0.75e9) / 0.75e9 < 0.02, m["focus"]
    assert m["glance"] == m["focus"]  # step-0 logits come from the classifier for ResNet
    assert len(m["cumulative"]) == 5 and m["cumulative"][-1] == sum(m["per_step"])


def test_madds_stored_in_saved_checkpoint_match_count(tmp_path):
    m = tiny_model()
    save_checkpoint(m, tmp_path / "t.pth.tar")
    loaded = load_checkpoint(tmp_path / "t.pth.tar")
    counted = count_madds(loaded.model)
    assert loaded.model_flops == counted["focus"] and loaded.flops == [float(c) for c in counted["cumulative"]]


def test_images_of_wrong_size_are_rejected():
    m = tiny_model()
    with pytest.raises(ValueError, match="48"):
        m.glance(torch.zeros(1, 3, 40, 40))
