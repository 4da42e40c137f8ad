"""Unit tests of the feature networks: batched crop, checkpoint errors, multiply-adds, the model API."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import load_config, write_official_checkpoint
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
from helpers import tiny_model

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


def _edited_copy(checkpoint, tmp_path, edit):
    """A copy of a checkpoint file with ``edit(raw_dict)`` applied to its content."""
    ck = torch.load(checkpoint, weights_only=True)
    edit(ck)
    path = tmp_path / "edited.pth.tar"
    torch.save(ck, path)
    return path


def test_legacy_pickle_needs_opt_in(mobilenet_ckpt, tmp_path):
    legacy = _edited_copy(mobilenet_ckpt, tmp_path, lambda ck: ck.update(args=_LegacyArgs()))
    with pytest.raises(UntrustedPickleError, match="trusted_pickle=True"):
        load_checkpoint(legacy)
    loaded = load_checkpoint(legacy, trusted_pickle=True)
    assert loaded.model_name == "mobilenetv3_large_100"


class _LegacyArgs:  # a non-tensor object, as old training scripts pickled their argparse namespace
    lr = 0.1


def test_unknown_model_name(mobilenet_ckpt, tmp_path):
    p = _edited_copy(mobilenet_ckpt, tmp_path, lambda ck: ck.update(model_name="vgg16"))
    with pytest.raises(UnknownArchitectureError, match="vgg16"):
        load_checkpoint(p)


def test_missing_and_unexpected_keys_are_named_with_architecture_hint(mobilenet_ckpt, tmp_path):
    def edit(ck):
        sd = ck["model_state_dict"]
        sd.pop("module.conv_head.weight")
        sd["module.extra.weight"] = torch.zeros(1)

    with pytest.raises(StateDictMismatchError) as e:
        load_checkpoint(_edited_copy(mobilenet_ckpt, tmp_path, edit))
    msg = str(e.value)
    assert "conv_head.weight" in msg and "extra.weight" in msg and "mobilenetv3_large_100" in msg


def test_encoder_of_another_architecture_is_recognised(mobilenet_ckpt, tmp_path):
    meta, _ = load_config("efficientnet_b2_p128_T4")
    other = tmp_path / "e.pth.tar"
    write_official_checkpoint(meta, other)
    encoder = torch.load(other, weights_only=True)["model_state_dict"]
    p = _edited_copy(mobilenet_ckpt, tmp_path, lambda ck: ck.update(model_state_dict=encoder))
    with pytest.raises(StateDictMismatchError, match="look like a efficientnet_b2"):
        load_checkpoint(p)


def test_shape_mismatch(mobilenet_ckpt, tmp_path):
    p = _edited_copy(mobilenet_ckpt, tmp_path, lambda ck: ck["fc"].update({"fc_5.weight": torch.zeros(1000, 10)}))
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


# --- classifier protocol, checked loading into an existing model -------------------------------------

def test_classifiers_satisfy_the_protocol():
    import math

    from feature_nets.classifiers import CascadeClassifier, Classifier, GRUClassifier

    gru, cascade = GRUClassifier(8, 16, 3), CascadeClassifier(8, 3)
    assert isinstance(gru, Classifier) and isinstance(cascade, Classifier)
    assert (gru.state_dim, gru.state_bounds, gru.max_looks, gru.look_dependent) == (16, (-1.0, 1.0), None, False)
    assert (cascade.state_dim, cascade.max_looks, cascade.look_dependent) == (40, 5, True)
    assert cascade.state_bounds == (-math.inf, math.inf)
    gru.freeze_unused_looks(2)
    assert all(p.requires_grad for p in gru.parameters())
    cascade.freeze_unused_looks(3)
    assert [k for k in range(2, 6) if getattr(cascade, f"fc_{k}").weight.requires_grad] == [2, 3]


def test_strip_module_prefix():
    from feature_nets.checkpoint import strip_module_prefix

    sd = {"module.a.weight": 1, "b.bias": 2, "x.module.c": 3}
    assert strip_module_prefix(sd) == {"a.weight": 1, "b.bias": 2, "x.module.c": 3}


def test_load_training_state_checks_keys_and_shapes(tmp_path):
    from feature_nets.checkpoint import CheckpointError
    from feature_nets.training import load_training_state

    path = save_checkpoint(tiny_model(), tmp_path / "t.pth.tar")
    target = tiny_model(seed=1)
    load_training_state(target, path)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), tiny_model().state_dict().values()))
    with pytest.raises(ShapeMismatchError):
        load_training_state(tiny_model(gru_hidden=24), path)
    with pytest.raises(CheckpointError):
        load_training_state(tiny_model(widths=(8, 16)), path)
