"""The encoder contract every GFNet backbone follows.

An encoder is a full classification network (it keeps its own head, which GFNet uses for the step-0
logits of some families and for the deep-supervision loss of stage 1) that GFNet reads in two places:
the pooled vector feeds the classifier, the spatial feature map feeds the policy.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class of GFNet encoders.

    Subclasses hold the wrapped network and implement :meth:`features` and :meth:`head`.

    Attributes:
        model_name: the architecture name stored in checkpoints (``"resnet50"``, ``"small_cnn"``, …).
        feature_num: length F of the pooled vector.
        feature_map_channels: channels C of the spatial feature map.
        num_classes: outputs of the encoder's own head.
        arch_kwargs: keyword arguments that rebuild this architecture through its registered builder (stored
            in checkpoints as ``gfnet_spec.encoder_kwargs``); empty for the released architectures, which
            ``num_classes`` alone determines.
    """

    model_name: str
    feature_num: int
    feature_map_channels: int
    num_classes: int
    arch_kwargs: Mapping[str, Any] = MappingProxyType({})

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of images.

        Args:
            x: (B, 3, P, P) normalised images.

        Returns:
            pooled: (B, F) vector for the classifier.
            feature_map: (B, C, h, w) map for the policy.
        """
        raise NotImplementedError

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """The encoder's own classification head: (B, F) pooled vector -> (B, num_classes) logits."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features(x)

    # --- checkpoint names -------------------------------------------------------------------------
    # Released checkpoints spell keys as the original model code did. Most wrapped networks already
    # use those names, so the default maps ``net.<key>`` <-> ``<key>``; RegNet overrides both methods.

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with the key names of released checkpoints (no ``module.`` prefix)."""
        return dict(self.net.state_dict())

    def load_official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a state dict keyed as in released checkpoints (strict; keys already checked)."""
        self.net.load_state_dict(state_dict, strict=True)

    def feature_map_size(self, patch_size: int) -> int:
        """Side h = w of the feature map for a P×P input (ceil(P/32) for the released backbones)."""
        return -(-patch_size // 32)
