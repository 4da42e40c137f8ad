"""Backbone builders against the conformance data (keys, shapes, glance feature map, step-0 head) and
unit tests of the small CNN encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import (
    config_names,
    fill_state_dicts,
    load_config,
    strip_module,
    write_official_checkpoint,
)
from feature_nets.backbones import (
    ENCODER_BUILDERS,
    RegNetEncoder,
    build_encoder,
    pycls_to_timm_key,
    timm_to_pycls_key,
)
from feature_nets.registry import BACKBONE_CONFIGS, get_config
from feature_nets.encoder import Encoder
from feature_nets.backbones.small_cnn import SmallCNNEncoder, build_small_cnn, small_cnn

CONFIGS = config_names()
TOL = 1e-4


def _shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _json_shapes(meta: dict, field: str) -> dict[str, tuple[int, ...]]:
    return {strip_module(k): tuple(shape) for k, (shape, _dtype) in meta["checkpoint_keys"][field].items()}


# --- conformance: released configurations --------------------------------------------------------


def test_conformance_data_present():
    assert len(CONFIGS) == 14, CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_encoder_keys_conformance(name):
    """official_state_dict() has exactly the released keys and shapes (both encoders, order-insensitive)."""
    meta, _ = load_config(name)
    enc = build_encoder(meta["model_name"])
    assert isinstance(enc, Encoder)
    ours = _shapes(enc.official_state_dict())
    for field in ("model_state_dict", "model_prime_state_dict"):
        want = _json_shapes(meta, field)
        assert set(ours) == set(want), (
            f"{field}: missing {sorted(set(want) - set(ours))[:5]}, extra {sorted(set(ours) - set(want))[:5]}"
        )
        bad = {k: (ours[k], want[k]) for k in want if ours[k] != want[k]}
        assert not bad, f"{field}: shape mismatches {list(bad.items())[:5]}"
    cfg = get_config(meta["model_name"])
    assert (enc.feature_num, enc.feature_map_channels) == (cfg.feature_num, cfg.feature_map_channels)
    assert (enc.feature_num, enc.feature_map_channels) == (meta["feature_num"], meta["feature_map_channels"])
    assert enc.model_name == meta["model_name"]


@pytest.mark.parametrize("name", CONFIGS)
def test_glance_features_conformance(name):
    """With fill-rule weights, the global encoder's glance feature map (and, where the step-0 logits come
    from the encoder's own head, those logits) equal the official numbers."""
    meta, data = load_config(name)
    sds = fill_state_dicts(meta)
    enc = build_encoder(meta["model_name"])
    enc.load_official_state_dict({strip_module(k): v for k, v in sds["model_prime_state_dict"].items()})
    enc.eval()
    P = meta["patch_size"]
    x = F.interpolate(data["images"].float(), size=(P, P), mode=meta["prime_interpolation"], align_corners=True)
    with torch.no_grad():
        pooled, fmap = enc.features(x)
        logits = enc.head(pooled)

    B = x.shape[0]
    h = enc.feature_map_size(P)
    assert fmap.shape == (B, meta["feature_map_channels"], h, h)
    assert pooled.shape == (B, meta["feature_num"])
    assert logits.shape == (B, 1000)

    ref = data["policy_states"][0]
    assert fmap.shape == ref.shape
    torch.testing.assert_close(fmap, ref.float(), atol=TOL, rtol=0)
    if get_config(meta["model_name"]).step0_head == "encoder":
        torch.testing.assert_close(logits, data["logits"][0].float(), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_fill_state_dicts_conformance(name):
    """Fill-rule dicts follow the json exactly: fields, key order and spelling, shapes, dtypes."""
    meta, _ = load_config(name)
    sds = fill_state_dicts(meta)
    assert list(sds) == ["model_state_dict", "model_prime_state_dict", "fc", "policy"]
    for field, sd in sds.items():
        entries = meta["checkpoint_keys"][field]
        assert list(sd) == list(entries)
        for key, (shape, dtype) in entries.items():
            assert tuple(sd[key].shape) == tuple(shape), key
            assert sd[key].dtype == getattr(torch, dtype), key
    # The two encoders get different weights (different component names in the seed).
    k = next(iter(sds["model_state_dict"]))
    assert not torch.equal(sds["model_state_dict"][k], sds["model_prime_state_dict"][k])


def test_write_official_checkpoint_conformance(tmp_path):
    name = next(n for n in CONFIGS if n.startswith("mobilenetv3_large_100"))
    meta, _ = load_config(name)
    path = tmp_path / "ckpt.pth.tar"
    write_official_checkpoint(meta, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["model_name"] == meta["model_name"]
    assert ckpt["patch_size"] == meta["patch_size"]
    assert len(ckpt["flops"]) == meta["T"]
    for field in ("model_state_dict", "model_prime_state_dict", "fc", "policy"):
        assert list(ckpt[field]) == list(meta["checkpoint_keys"][field])
    assert all(k.startswith("module.") for k in ckpt["model_state_dict"])
    assert not any(k.startswith("module.") for k in ckpt["fc"])


# --- registry and RegNet rename -------------------------------------------------------------------


def test_registry_covers_released_architectures():
    assert set(ENCODER_BUILDERS) == set(BACKBONE_CONFIGS)
    with pytest.raises(ValueError, match="resnet50"):
        build_encoder("resnet51")


def test_regnet_rename_rules():
    assert pycls_to_timm_key("s1.b1.f.a_bn.weight") == "s1.b1.conv1.bn.weight"
    assert pycls_to_timm_key("s2.b3.f.se.f_ex.2.bias") == "s2.b3.se.fc2.bias"
    assert pycls_to_timm_key("s4.b1.proj.weight") == "s4.b1.downsample.conv.weight"
    assert pycls_to_timm_key("s4.b1.bn.running_var") == "s4.b1.downsample.bn.running_var"
    assert pycls_to_timm_key("stem.bn.num_batches_tracked") == "stem.bn.num_batches_tracked"
    assert pycls_to_timm_key("fc.weight") == "head.fc.weight"
    assert timm_to_pycls_key("s3.b10.conv3.conv.weight") == "s3.b10.f.c.weight"
    for bad in ("s1.b1.f.d.weight", "head.weight", "s1.b1.f.se.f_ex.1.weight"):
        with pytest.raises(KeyError):
            pycls_to_timm_key(bad)


def test_regnet_load_checks_keys_and_shapes():
    enc = build_encoder("regnety_600m")
    assert isinstance(enc, RegNetEncoder)
    sd = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in enc.official_state_dict().items()}
    enc.load_official_state_dict(sd)
    back = enc.official_state_dict()
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)

    wrong_shape = dict(sd)
    wrong_shape["s1.b1.f.a.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="shape"):
        enc.load_official_state_dict(wrong_shape)
    missing = dict(sd)
    del missing["fc.bias"]
    with pytest.raises(RuntimeError, match="missing"):
        enc.load_official_state_dict(missing)
    extra = dict(sd)
    extra["s9.b1.f.a.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="unexpected"):
        enc.load_official_state_dict(extra)


# --- small CNN --------------------------------------------------------------------------------------


def _macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of convs and linears for one forward pass."""
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        nonlocal total
        total += m.in_features * m.out_features

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return total


def test_small_cnn_shapes():
    enc = small_cnn(num_classes=10, in_channels=3, widths=(32, 64, 128), feature_num=128).eval()
    assert isinstance(enc, Encoder)
    assert enc.model_name == "small_cnn"
    assert (enc.feature_num, enc.feature_map_channels, enc.num_classes) == (128, 128, 10)
    x = torch.randn(2, 3, 28, 28)
    pooled, fmap = enc.features(x)
    assert fmap.shape == (2, 128, 4, 4)
    assert pooled.shape == (2, 128)
    assert enc.head(pooled).shape == (2, 10)
    torch.testing.assert_close(enc.head(pooled), enc.net(x))
    assert set(enc.official_state_dict()) == set(enc.net.state_dict())


@pytest.mark.parametrize("P", [16, 28, 32, 48])
@pytest.mark.parametrize("widths", [(32, 64, 128), (16, 32)])
def test_small_cnn_feature_map_size(P, widths):
    enc = small_cnn(widths=widths, feature_num=48, in_channels=1).eval()
    with torch.no_grad():
        pooled, fmap = enc.features(torch.randn(1, 1, P, P))
    h = enc.feature_map_size(P)
    assert fmap.shape == (1, 48, h, h)
    assert pooled.shape == (1, 48)
    if widths == (32, 64, 128) and P == 28:
        assert h == 4


def test_small_cnn_cost_and_rebuild():
    enc = small_cnn()
    assert _macs(enc.net, torch.randn(1, 3, 28, 28)) < 5_000_000
    kwargs = enc.arch_kwargs
    assert isinstance(kwargs, dict)
    assert all(isinstance(v, (int, float, list)) for v in kwargs.values())
    other = build_small_cnn(**kwargs)
    assert isinstance(other, SmallCNNEncoder)
    assert other.arch_kwargs == kwargs
    assert _shapes(other.official_state_dict()) == _shapes(enc.official_state_dict())
    other.load_official_state_dict(enc.official_state_dict())

    wide = build_small_cnn(num_classes=5, widths=[8, 16, 24, 32], feature_num=64, blocks_per_stage=2)
    pooled, fmap = wide.features(torch.randn(2, 3, 40, 40))
    assert fmap.shape == (2, 64, 3, 3) and wide.feature_map_size(40) == 3
    assert wide.head(pooled).shape == (2, 5)


# --- registering a backbone ---------------------------------------------------------------------------


@pytest.fixture
def restore_registry():
    """Undo registrations made by a test (the registry is process-wide)."""
    from feature_nets import registry

    tables = (registry._REGISTRY, registry.BACKBONE_CONFIGS, registry.ENCODER_BUILDERS)
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


def test_a_new_backbone_of_a_known_family_is_one_decorated_function(restore_registry, tmp_path):
    import torchvision

    from feature_nets.backbones.resnet import ResNetEncoder
    from feature_nets.checkpoint import load_checkpoint, save_checkpoint
    from feature_nets.gfnet import build_gfnet
    from feature_nets.registry import get_backbone, register_backbone
    from feature_nets.training import TrainConfig

    @register_backbone(get_config("resnet50").with_overrides(model_name="resnet18", feature_num=512,
                                                             feature_map_channels=512))
    def resnet18(num_classes: int = 1000) -> ResNetEncoder:
        return ResNetEncoder("resnet18", torchvision.models.resnet18(weights=None, num_classes=num_classes),
                             num_classes)

    assert get_backbone("resnet18").builder is resnet18 and "resnet18" in ENCODER_BUILDERS
    model = build_gfnet("resnet18", patch_size=32, T=2, num_classes=3)
    assert model.feature_map_shape == (512, 1, 1) and model.image_size == 224
    assert TrainConfig.for_model(model).lr_backbone == 0.01  # the ResNet family's recipe
    path = save_checkpoint(model, tmp_path / "r18.pth.tar")
    loaded = load_checkpoint(path).model
    assert loaded.spec.config.model_name == "resnet18"
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(get_config("resnet18"))(resnet18)


def test_the_small_cnn_is_registered_with_a_config_factory():
    from feature_nets.gfnet import build_gfnet, build_small_gfnet
    from feature_nets.registry import get_backbone

    backbone = get_backbone("small_cnn")
    assert backbone.configurable and backbone.default_patch_size == 28
    assert "small_cnn" not in BACKBONE_CONFIGS
    torch.manual_seed(0)
    a = build_gfnet("small_cnn", num_classes=4, encoder_kwargs=dict(widths=[8, 16], feature_num=16), gru_hidden=32)
    torch.manual_seed(0)
    b = build_small_gfnet(num_classes=4, widths=[8, 16], feature_num=16, gru_hidden=32)
    assert a.spec.to_dict() == b.spec.to_dict() and a.patch_size == 28 and a.image_size == 112
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.spec.config.feature_num == 16 and a.spec.config.fc_hidden_dim == 32
