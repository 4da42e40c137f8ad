"""Per-backbone GFNet settings (gfnet-reference §2), one source of truth for every package.

A :class:`BackboneConfig` says what the original implementation does with one encoder family: how long
its pooled vector is, how many channels its feature map has, how the policy reads that map, which
classifier follows it, and how images are prepared for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Interpolation = Literal["bilinear", "bicubic"]
Step0Head = Literal["classifier", "encoder"]


@dataclass(frozen=True)
class BackboneConfig:
    """What GFNet does with one backbone.

    Attributes:
        model_name: the ``model_name`` string stored in checkpoints.
        feature_num: length of the pooled vector an encoder returns.
        feature_map_channels: channels of the spatial feature map the policy sees.
        policy_conv: policy state encoder starts with a 1x1 conv (True) or flattens the map (False).
        policy_hidden_dim: width of the policy's GRU.
        fc_rnn: GRU classifier (True) or cascade of linear heads (False).
        fc_hidden_dim: GRU classifier width (None for the cascade).
        image_size: side S of the full-resolution image, pixels.
        crop_pct: centre-crop fraction of the evaluation transform.
        dataset_interpolation: resize mode of the evaluation transform.
        glance_interpolation: mode used to shrink the S×S image to P×P for the glance.
        step0_head: where the glance's logits come from: the GFNet classifier, or the encoder's own head.
        head_name: state-dict name of the encoder's own classification head (``fc`` / ``classifier``).
        family: architecture family (``resnet``, ``densenet``, ``regnet``, ``mobilenet``, ``efficientnet``,
            ``small_cnn``); decides the training recipe.
    """

    model_name: str
    feature_num: int
    feature_map_channels: int
    policy_conv: bool
    policy_hidden_dim: int
    fc_rnn: bool
    fc_hidden_dim: int | None
    image_size: int
    crop_pct: float
    dataset_interpolation: Interpolation
    glance_interpolation: Interpolation
    step0_head: Step0Head
    head_name: str
    family: str

    def with_overrides(self, **kwargs) -> "BackboneConfig":
        """A copy with some fields changed (for the small CNN family and user-made encoders)."""
        return replace(self, **kwargs)


def _cfg(name, fnum, fmap, pconv, phid, rnn, image_size, crop, dint, gint, step0, head, family):
    return BackboneConfig(
        model_name=name,
        feature_num=fnum,
        feature_map_channels=fmap,
        policy_conv=pconv,
        policy_hidden_dim=phid,
        fc_rnn=rnn,
        fc_hidden_dim=1024 if rnn else None,
        image_size=image_size,
        crop_pct=crop,
        dataset_interpolation=dint,
        glance_interpolation=gint,
        step0_head=step0,
        head_name=head,
        family=family,
    )


#: The 11 released architectures, exactly as gfnet-reference §2 lists them.
BACKBONE_CONFIGS: dict[str, BackboneConfig] = {
    c.model_name: c
    for c in [
        _cfg("resnet50", 2048, 2048, False, 1024, True, 224, 0.875, "bilinear", "bicubic", "classifier", "fc", "resnet"),
        _cfg("densenet121", 1024, 1024, False, 1024, True, 224, 0.875, "bilinear", "bilinear", "classifier", "classifier", "densenet"),
        _cfg("densenet169", 1664, 1664, False, 1024, True, 224, 0.875, "bilinear", "bilinear", "classifier", "classifier", "densenet"),
        _cfg("densenet201", 1920, 1920, False, 1024, True, 224, 0.875, "bilinear", "bilinear", "classifier", "classifier", "densenet"),
        _cfg("mobilenetv3_large_100", 1280, 960, True, 256, False, 224, 0.875, "bilinear", "bicubic", "encoder", "classifier", "mobilenet"),
        _cfg("mobilenetv3_large_125", 1280, 1200, True, 256, False, 224, 0.875, "bilinear", "bicubic", "encoder", "classifier", "mobilenet"),
        _cfg("efficientnet_b2", 1408, 1408, True, 256, False, 260, 0.875, "bicubic", "bicubic", "encoder", "classifier", "efficientnet"),
        _cfg("efficientnet_b3", 1536, 1536, True, 256, False, 300, 0.904, "bicubic", "bicubic", "encoder", "classifier", "efficientnet"),
        _cfg("regnety_600m", 608, 608, True, 256, True, 224, 0.875, "bilinear", "bilinear", "encoder", "fc", "regnet"),
        _cfg("regnety_800m", 768, 768, True, 256, True, 224, 0.875, "bilinear", "bilinear", "encoder", "fc", "regnet"),
        _cfg("regnety_1.6g", 888, 888, True, 256, True, 224, 0.875, "bilinear", "bilinear", "encoder", "fc", "regnet"),
    ]
}

#: Number of cascade heads the original code always builds (fc_2 … fc_5), whatever T is.
CASCADE_MAX_STEPS = 5


def feature_map_size(patch_size: int) -> int:
    """Side of an encoder's spatial feature map for a P×P input: ceil(P / 32) for every backbone."""
    return -(-patch_size // 32)


def get_config(model_name: str) -> BackboneConfig:
    """The configuration of a released architecture, or a clear error listing the known ones."""
    try:
        return BACKBONE_CONFIGS[model_name]
    except KeyError:
        known = ", ".join(sorted(BACKBONE_CONFIGS))
        raise ValueError(
            f"unknown GFNet model_name {model_name!r}; known architectures: {known}. "
            "Small CPU encoders are built with feature_nets.small_cnn instead."
        ) from None
