"""Per-backbone GFNet settings, one source of truth for every package (see docs/gfnet.md).

A :class:`BackboneConfig` says what the original implementation does with one encoder family: how long
its pooled vector is, how many channels its feature map has, how the policy reads that map, which
classifier follows it, and how images are prepared for it. Each backbone's config is registered with its
builder; :data:`feature_nets.registry.BACKBONE_CONFIGS` and :func:`feature_nets.registry.get_config` look them up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["BackboneConfig", "Interpolation", "Step0Head"]

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
            ``small_cnn``); selects the training recipe (``feature_nets.training.FAMILY_DEFAULTS``).
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
        """A copy with some fields changed (e.g. another image size for the dataset transforms)."""
        return replace(self, **kwargs)
