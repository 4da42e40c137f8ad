"""The small CNN encoder now lives in :mod:`feature_nets.backbones.small_cnn`; this module keeps the old import path."""

from .backbones.small_cnn import SMALL_CNN_NAME, SmallCNNEncoder, build_small_cnn, small_cnn, small_cnn_config

__all__ = ["SmallCNNEncoder", "small_cnn", "build_small_cnn", "small_cnn_config", "SMALL_CNN_NAME"]
