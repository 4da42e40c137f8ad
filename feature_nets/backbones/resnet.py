"""ResNet backbones (torchvision): feature map = ``layer4`` output, pooled = its global average; head ``fc``."""

from __future__ import annotations

import torch
import torchvision

from ..configs import BackboneConfig
from ..registry import register_backbone
from .base import ReleasedEncoder


class ResNetEncoder(ReleasedEncoder):
    """torchvision ResNet: feature map = ``layer4`` output, pooled = its global average; head ``fc``."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        fmap = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        pooled = torch.flatten(n.avgpool(fmap), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.fc(pooled)


@register_backbone(BackboneConfig(
    model_name="resnet50", feature_num=2048, feature_map_channels=2048, policy_conv=False, policy_hidden_dim=1024,
    fc_rnn=True, fc_hidden_dim=1024, image_size=224, crop_pct=0.875, dataset_interpolation="bilinear",
    glance_interpolation="bicubic", step0_head="classifier", head_name="fc", family="resnet",
))
def resnet50(num_classes: int = 1000) -> ResNetEncoder:
    """ResNet-50 (torchvision key names), randomly initialised."""
    return ResNetEncoder("resnet50", torchvision.models.resnet50(weights=None, num_classes=num_classes), num_classes)
