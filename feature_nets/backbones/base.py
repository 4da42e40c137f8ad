"""What every encoder with fixed (released) settings shares: its attributes come from its registered config."""

from __future__ import annotations

from torch import nn

from ..encoder import Encoder
from ..registry import get_config


def import_timm():
    """timm, imported when first needed: it is slow to import and only some families use it."""
    import timm

    return timm


class ReleasedEncoder(Encoder):
    """Common set-up of the released encoders: ``feature_num`` and ``feature_map_channels`` from the config."""

    def __init__(self, model_name: str, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        cfg = get_config(model_name)
        self.model_name = model_name
        self.feature_num = cfg.feature_num
        self.feature_map_channels = cfg.feature_map_channels
        self.num_classes = num_classes
        self.net = net

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, feature_num={self.feature_num}"
