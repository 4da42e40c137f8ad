"""EfficientNet backbones (timm): feature map after ``conv_head`` + ``bn2`` + SiLU, pooled = its global average."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..configs import BackboneConfig
from ..registry import register_backbone
from .base import ReleasedEncoder, import_timm


class EfficientNetEncoder(ReleasedEncoder):
    """timm EfficientNet: feature map after ``conv_head`` + ``bn2`` + SiLU, pooled = its global average."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.blocks(n.bn1(n.conv_stem(x)))
        fmap = n.bn2(n.conv_head(x))  # timm's bn2 is BatchNorm + activation
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)


def _config(name: str, width: int, image_size: int, crop_pct: float) -> BackboneConfig:
    """Every released EfficientNet: conv policy input, cascade classifier, bicubic everywhere, step-0 logits
    from the encoder's head; map and vector ``width`` wide."""
    return BackboneConfig(
        model_name=name, feature_num=width, feature_map_channels=width, policy_conv=True, policy_hidden_dim=256,
        fc_rnn=False, fc_hidden_dim=None, image_size=image_size, crop_pct=crop_pct, dataset_interpolation="bicubic",
        glance_interpolation="bicubic", step0_head="encoder", head_name="classifier", family="efficientnet",
    )


def _efficientnet(name: str, num_classes: int) -> EfficientNetEncoder:
    net = import_timm().create_model(name, pretrained=False, num_classes=num_classes)
    return EfficientNetEncoder(name, net, num_classes)


@register_backbone(_config("efficientnet_b2", 1408, image_size=260, crop_pct=0.875))
def efficientnet_b2(num_classes: int = 1000) -> EfficientNetEncoder:
    """EfficientNet-B2 (timm key names), randomly initialised: 1408-ch map and vector."""
    return _efficientnet("efficientnet_b2", num_classes)


@register_backbone(_config("efficientnet_b3", 1536, image_size=300, crop_pct=0.904))
def efficientnet_b3(num_classes: int = 1000) -> EfficientNetEncoder:
    """EfficientNet-B3 (timm key names), randomly initialised: 1536-ch map and vector."""
    return _efficientnet("efficientnet_b3", num_classes)
