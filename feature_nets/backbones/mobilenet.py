"""MobileNet-V3 backbones (timm): feature map = the last block's output, pooled through the "efficient head"."""

from __future__ import annotations

import torch

from ..configs import BackboneConfig
from ..registry import get_config, register_backbone
from .base import ReleasedEncoder, import_timm


class MobileNetV3Encoder(ReleasedEncoder):
    """timm MobileNet-V3.

    Feature map = the last block's output (before the 1x1 head conv). Pooled = global average pool ->
    ``conv_head`` (with bias) -> hard-swish -> flatten (the MobileNet-V3 "efficient head"). Head ``classifier``.
    """

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        fmap = n.blocks(n.bn1(n.conv_stem(x)))  # timm's bn1 is BatchNorm + activation
        v = fmap.mean((2, 3), keepdim=True)
        v = n.act2(n.norm_head(n.conv_head(v)))  # norm_head is Identity for MobileNet-V3
        return torch.flatten(v, 1), fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)


def _config(name: str, map_channels: int) -> BackboneConfig:
    """Every released MobileNet-V3: 1280-d vector, conv policy input, cascade classifier, step-0 logits from
    the encoder's head."""
    return BackboneConfig(
        model_name=name, feature_num=1280, feature_map_channels=map_channels, policy_conv=True, policy_hidden_dim=256,
        fc_rnn=False, fc_hidden_dim=None, image_size=224, crop_pct=0.875, dataset_interpolation="bilinear",
        glance_interpolation="bicubic", step0_head="encoder", head_name="classifier", family="mobilenet",
    )


def _mobilenetv3(name: str, multiplier: float, num_classes: int) -> MobileNetV3Encoder:
    timm = import_timm()
    if name in timm.list_models(name):
        net = timm.create_model(name, pretrained=False, num_classes=num_classes)
    else:
        # timm does not register every multiplier (x1.25 is missing): build through its MobileNet-V3 generator
        # with the multiplier, and an explicit (weight-less) pretrained config so timm looks nothing up.
        from timm.models.mobilenetv3 import _gen_mobilenet_v3

        cfg = get_config(name)
        net = _gen_mobilenet_v3(
            name,
            multiplier,
            pretrained=False,
            num_classes=num_classes,
            pretrained_cfg=dict(
                architecture=name,
                num_classes=num_classes,
                input_size=(3, cfg.image_size, cfg.image_size),
                crop_pct=cfg.crop_pct,
                interpolation=cfg.dataset_interpolation,
                first_conv="conv_stem",
                classifier="classifier",
            ),
        )
    enc = MobileNetV3Encoder(name, net, num_classes)
    if net.conv_head.in_channels != enc.feature_map_channels or net.conv_head.out_channels != enc.feature_num:
        raise RuntimeError(
            f"{name}: timm built conv_head {net.conv_head.in_channels}->{net.conv_head.out_channels}, "
            f"expected {enc.feature_map_channels}->{enc.feature_num}"
        )
    return enc


@register_backbone(_config("mobilenetv3_large_100", 960))
def mobilenetv3_large_100(num_classes: int = 1000) -> MobileNetV3Encoder:
    """MobileNet-V3-Large x1.0 (timm key names), randomly initialised: 960-ch map, 1280-d vector."""
    return _mobilenetv3("mobilenetv3_large_100", 1.0, num_classes)


@register_backbone(_config("mobilenetv3_large_125", 1200))
def mobilenetv3_large_125(num_classes: int = 1000) -> MobileNetV3Encoder:
    """MobileNet-V3-Large x1.25 (timm key names), randomly initialised: 1200-ch map, 1280-d vector."""
    return _mobilenetv3("mobilenetv3_large_125", 1.25, num_classes)
