"""The GFNet backbones, one module per family, each builder registered with its settings (see docs/gfnet.md).

Every builder returns an :class:`~feature_nets.encoder.Encoder` with randomly initialised weights: nothing is
downloaded, and weights are loaded separately through :meth:`Encoder.load_official_state_dict`.

What each family hands to GFNet:

============  =========================================================  =======================================
family        feature map (policy)                                       pooled vector (classifier)
============  =========================================================  =======================================
ResNet        ``layer4`` output                                          global average pool of it
DenseNet      ReLU of ``features``                                       global average pool of it
MobileNet-V3  last block's output (960 / 1200 ch, before ``conv_head``)  avg pool -> ``conv_head`` -> h-swish
EfficientNet  after ``conv_head`` + ``bn2`` + activation                 global average pool of it
RegNet-Y      last stage's output                                        global average pool of it
small CNN     last stage (or its 1x1 projection to ``feature_num``)      global average pool of it
============  =========================================================  =======================================

ResNet / DenseNet come from torchvision, MobileNet-V3 / EfficientNet / RegNet-Y from timm. All but RegNet-Y
already carry the released key names; RegNet-Y checkpoints use pycls names (see :mod:`.regnet`). Importing
this package registers every family (see :mod:`feature_nets.registry` to add one).
"""

from __future__ import annotations

from ..registry import ENCODER_BUILDERS, build_encoder
from .densenet import DenseNetEncoder, densenet121, densenet169, densenet201
from .efficientnet import EfficientNetEncoder, efficientnet_b2, efficientnet_b3
from .mobilenet import MobileNetV3Encoder, mobilenetv3_large_100, mobilenetv3_large_125
from .regnet import RegNetEncoder, pycls_to_timm_key, regnety_1_6g, regnety_600m, regnety_800m, timm_to_pycls_key
from .resnet import ResNetEncoder, resnet50
from .small_cnn import SmallCNNEncoder, build_small_cnn, small_cnn

__all__ = [
    "ResNetEncoder",
    "DenseNetEncoder",
    "MobileNetV3Encoder",
    "EfficientNetEncoder",
    "RegNetEncoder",
    "SmallCNNEncoder",
    "resnet50",
    "densenet121",
    "densenet169",
    "densenet201",
    "regnety_600m",
    "regnety_800m",
    "regnety_1_6g",
    "mobilenetv3_large_100",
    "mobilenetv3_large_125",
    "efficientnet_b2",
    "efficientnet_b3",
    "small_cnn",
    "build_small_cnn",
    "pycls_to_timm_key",
    "timm_to_pycls_key",
    "ENCODER_BUILDERS",
    "build_encoder",
]
