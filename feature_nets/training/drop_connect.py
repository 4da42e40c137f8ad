"""Stochastic depth ("drop-connect") of the MobileNet-V3 / EfficientNet blocks while training.

The original builds these encoders with ``drop_connect_rate=0.2``: in training mode, block i of the n blocks of
``blocks`` (counted over all stages, from 0) replaces its residual branch, per sample, by zero with probability
``rate · i / n`` and scales it by 1 / (1 − that probability) otherwise; in eval mode nothing changes. The
project's timm encoders are built without it; :func:`set_drop_connect` installs it on a built model (timm's
``DropPath`` in the blocks' ``drop_path`` slot: no parameters, so checkpoints are unaffected).
"""

from __future__ import annotations

from torch import nn

__all__ = ["set_drop_connect", "drop_connect_blocks"]

#: The timm block types whose residual branch the original drops (not the plain ``ConvBnAct``).
_DROPPABLE = ("DepthwiseSeparableConv", "InvertedResidual", "CondConvResidual", "EdgeResidual")


def drop_connect_blocks(encoder: nn.Module) -> list[nn.Module] | None:
    """The encoder's blocks in order (all stages flattened), or None when it has no timm-style ``blocks``."""
    stages = getattr(getattr(encoder, "net", None), "blocks", None)
    if not isinstance(stages, nn.Sequential):
        return None
    blocks = [b for stage in stages for b in (stage if isinstance(stage, nn.Sequential) else [stage])]
    if not blocks or not all(hasattr(b, "drop_path") for b in blocks):
        return None
    return blocks


def set_drop_connect(model: nn.Module, rate: float) -> int:
    """Set the drop-connect rate of both encoders of a GFNet (``rate`` 0 removes it).

    Args:
        model: a :class:`~feature_nets.gfnet.GFNet`.
        rate: the largest rate; block i of n gets ``rate · i / n``.

    Returns:
        the number of blocks that now drop their residual branch in training mode (both encoders).

    Raises:
        ValueError: ``rate`` > 0 for an encoder without such blocks (ResNet, DenseNet, RegNet, small CNN).
    """
    total = 0
    for encoder in (model.global_encoder, model.local_encoder):
        blocks = drop_connect_blocks(encoder)
        if blocks is None:
            if rate > 0:
                raise ValueError(f"drop_connect={rate} needs MobileNet-V3 / EfficientNet blocks; "
                                 f"{type(encoder).__name__} has none (use drop_connect=0)")
            continue
        from timm.layers import DropPath

        n = len(blocks)
        for i, block in enumerate(blocks):
            r = rate * i / n if type(block).__name__ in _DROPPABLE else 0.0
            block.drop_path = DropPath(r) if r > 0 else nn.Identity()
            total += int(r > 0 and bool(getattr(block, "has_skip", True)))
    return total
