"""DenseNet backbones (torchvision): feature map = ReLU(``features``), pooled = its global average."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision

from ..configs import BackboneConfig
from ..registry import register_backbone
from .base import ReleasedEncoder


class DenseNetEncoder(ReleasedEncoder):
    """torchvision DenseNet: feature map = ReLU(``features``), pooled = its global average; head ``classifier``."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = F.relu(self.net.features(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)


def _config(name: str, width: int) -> BackboneConfig:
    """Every released DenseNet: flat policy input, GRU classifier, bilinear glance; map and vector ``width`` wide."""
    return BackboneConfig(
        model_name=name, feature_num=width, feature_map_channels=width, policy_conv=False, policy_hidden_dim=1024,
        fc_rnn=True, fc_hidden_dim=1024, image_size=224, crop_pct=0.875, dataset_interpolation="bilinear",
        glance_interpolation="bilinear", step0_head="classifier", head_name="classifier", family="densenet",
    )


def _densenet(name: str, num_classes: int) -> DenseNetEncoder:
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    return DenseNetEncoder(name, net, num_classes)


@register_backbone(_config("densenet121", 1024))
def densenet121(num_classes: int = 1000) -> DenseNetEncoder:
    """DenseNet-121 (torchvision, new-style ``norm1``/``conv1`` key names), randomly initialised."""
    return _densenet("densenet121", num_classes)


@register_backbone(_config("densenet169", 1664))
def densenet169(num_classes: int = 1000) -> DenseNetEncoder:
    """DenseNet-169 (torchvision key names), randomly initialised."""
    return _densenet("densenet169", num_classes)


@register_backbone(_config("densenet201", 1920))
def densenet201(num_classes: int = 1000) -> DenseNetEncoder:
    """DenseNet-201 (torchvision key names), randomly initialised."""
    return _densenet("densenet201", num_classes)
