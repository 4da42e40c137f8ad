"""A small configurable CNN encoder for CPU-sized GFNet tasks.

Example: 28x28 patches of Fashion-MNIST digits placed on a 112x112 canvas, 10 classes. Each stage is a
3x3 stride-2 conv -> BN -> ReLU (optionally followed by more 3x3 stride-1 conv-BN-ReLU layers), so a P×P
input gives a ceil(P / 2**len(widths)) map: 4x4 for P = 28 with the default three stages. When
``feature_num`` differs from the last width a 1x1 conv-BN-ReLU maps the last stage to ``feature_num``
channels. The pooled vector is the global average of the map; the head is a linear layer ``fc``.

With the defaults a 28x28 RGB patch costs about 2.3 M multiply-adds.

The constructor arguments are kept as a plain dict (:attr:`SmallCNNEncoder.arch_kwargs`) so that a
checkpoint can rebuild the network with :func:`build_small_cnn`. The GFNet settings depend on them (the
pooled vector's length) and on GFNet-level widths, so the backbone registers a config factory,
:func:`small_cnn_config`, instead of a fixed config.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import BackboneConfig
from ..encoder import Encoder
from ..registry import register_backbone

__all__ = ["SmallCNNEncoder", "small_cnn", "build_small_cnn", "small_cnn_config", "SMALL_CNN_NAME"]

SMALL_CNN_NAME = "small_cnn"


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _SmallCNN(nn.Module):
    """The wrapped classification network (its state-dict keys are the checkpoint keys)."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        widths: Sequence[int],
        feature_num: int,
        blocks_per_stage: int,
        dropout: float,
    ) -> None:
        super().__init__()
        stages = []
        c = in_channels
        for w in widths:
            layers = [_conv_bn_relu(c, w, 3, 2)]
            layers += [_conv_bn_relu(w, w, 3, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Identity() if feature_num == c else _conv_bn_relu(c, feature_num, 1, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(feature_num, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.proj(self.stages(x))
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)))


class SmallCNNEncoder(Encoder):
    """GFNet encoder around :class:`_SmallCNN`, randomly initialised.

    Args:
        num_classes: outputs of the linear head ``fc``.
        in_channels: image channels.
        widths: channels of each stride-2 stage (one halving of the resolution per entry).
        feature_num: length of the pooled vector and channels of the feature map (a 1x1 conv is added when
            it differs from ``widths[-1]``).
        blocks_per_stage: conv-BN-ReLU layers per stage (the first one strided).
        dropout: dropout before the head (training only).

    Attributes:
        arch_kwargs: the constructor arguments as a plain dict (ints, floats, a list of ints);
            ``build_small_cnn(**encoder.arch_kwargs)`` rebuilds the same architecture.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        feature_num: int = 128,
        blocks_per_stage: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or any(w <= 0 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths}")
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if feature_num <= 0 or num_classes <= 0 or in_channels <= 0:
            raise ValueError("num_classes, in_channels and feature_num must be positive")
        self.arch_kwargs: dict[str, Any] = dict(
            num_classes=int(num_classes),
            in_channels=int(in_channels),
            widths=widths,
            feature_num=int(feature_num),
            blocks_per_stage=int(blocks_per_stage),
            dropout=float(dropout),
        )
        self.model_name = SMALL_CNN_NAME
        self.num_classes = int(num_classes)
        self.feature_num = int(feature_num)
        self.feature_map_channels = int(feature_num)
        self.net = _SmallCNN(**self.arch_kwargs)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.net.proj(self.net.stages(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.fc(self.net.dropout(pooled))

    def feature_map_size(self, patch_size: int) -> int:
        """Side of the map for a P×P input: each stride-2 3x3 conv (padding 1) maps n to ceil(n / 2)."""
        n = int(patch_size)
        for _ in self.arch_kwargs["widths"]:
            n = (n + 1) // 2
        return n

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, arch_kwargs={self.arch_kwargs}"


def small_cnn_config(
    encoder: SmallCNNEncoder, image_size: int = 112, gru_hidden: int = 256, policy_hidden: int = 128
) -> BackboneConfig:
    """GFNet settings of a small CNN: the encoder's widths, a GRU classifier of ``gru_hidden`` units, a conv
    policy input with a ``policy_hidden``-wide GRU, S = ``image_size`` pixels, bilinear resizing everywhere,
    step-0 logits from the classifier."""
    return BackboneConfig(
        model_name=SMALL_CNN_NAME,
        feature_num=encoder.feature_num,
        feature_map_channels=encoder.feature_map_channels,
        policy_conv=True,
        policy_hidden_dim=policy_hidden,
        fc_rnn=True,
        fc_hidden_dim=gru_hidden,
        image_size=image_size,
        crop_pct=1.0,
        dataset_interpolation="bilinear",
        glance_interpolation="bilinear",
        step0_head="classifier",
        head_name="fc",
        family="small_cnn",
    )


@register_backbone(small_cnn_config, name=SMALL_CNN_NAME, default_patch_size=28)
def small_cnn(**arch_kwargs: Any) -> SmallCNNEncoder:
    """A small conv-BN-ReLU encoder (model_name ``"small_cnn"``), randomly initialised.

    Takes the keyword arguments of :class:`SmallCNNEncoder` (``num_classes``, ``in_channels``, ``widths``,
    ``feature_num``, ``blocks_per_stage``, ``dropout``); a checkpoint's ``arch_kwargs`` dict rebuilds the same
    architecture.
    """
    return SmallCNNEncoder(**arch_kwargs)


#: Rebuild a small CNN from its ``arch_kwargs`` dict (as stored in a checkpoint): the registered builder.
build_small_cnn = small_cnn
