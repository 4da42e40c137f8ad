"""Builders of the released GFNet backbones (gfnet-reference §2-§3).

One builder per architecture, named as the architecture, each returning an :class:`~feature_nets.encoder.Encoder`
with randomly initialised weights: nothing is downloaded, and weights are loaded separately through
:meth:`Encoder.load_official_state_dict`.

What each family hands to GFNet:

============  =========================================================  =======================================
family        feature map (policy)                                       pooled vector (classifier)
============  =========================================================  =======================================
ResNet        ``layer4`` output                                          global average pool of it
DenseNet      ReLU of ``features``                                       global average pool of it
MobileNet-V3  last block's output (960 / 1200 ch, before ``conv_head``)  avg pool -> ``conv_head`` -> h-swish
EfficientNet  after ``conv_head`` + ``bn2`` + activation                 global average pool of it
RegNet-Y      last stage's output                                        global average pool of it
============  =========================================================  =======================================

ResNet / DenseNet come from torchvision, MobileNet-V3 / EfficientNet / RegNet-Y from timm. All but RegNet-Y
already carry the released key names. RegNet-Y checkpoints use pycls names; :class:`RegNetEncoder` renames
keys one to one by explicit rules and checks every shape.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .configs import get_config
from .encoder import Encoder

__all__ = [
    "ResNetEncoder",
    "DenseNetEncoder",
    "MobileNetV3Encoder",
    "EfficientNetEncoder",
    "RegNetEncoder",
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
    "ENCODER_BUILDERS",
    "build_encoder",
]


def _timm():
    # timm is imported lazily: it is slow to import and only some families need it.
    import timm

    return timm


class _ReleasedEncoder(Encoder):
    """Common set-up: the attributes come from the backbone table (configs.py)."""

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


# --- ResNet (torchvision) -----------------------------------------------------------------------


class ResNetEncoder(_ReleasedEncoder):
    """torchvision ResNet: feature map = ``layer4`` output, pooled = its global average; head ``fc``."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        fmap = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        pooled = torch.flatten(n.avgpool(fmap), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.fc(pooled)


def resnet50(num_classes: int = 1000) -> ResNetEncoder:
    """ResNet-50 (torchvision key names), randomly initialised."""
    return ResNetEncoder("resnet50", torchvision.models.resnet50(weights=None, num_classes=num_classes), num_classes)


# --- DenseNet (torchvision) ---------------------------------------------------------------------


class DenseNetEncoder(_ReleasedEncoder):
    """torchvision DenseNet: feature map = ReLU(``features``), pooled = its global average; head ``classifier``."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = F.relu(self.net.features(x))
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)


def _densenet(name: str, num_classes: int) -> DenseNetEncoder:
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    return DenseNetEncoder(name, net, num_classes)


def densenet121(num_classes: int = 1000) -> DenseNetEncoder:
    """DenseNet-121 (torchvision, new-style ``norm1``/``conv1`` key names), randomly initialised."""
    return _densenet("densenet121", num_classes)


def densenet169(num_classes: int = 1000) -> DenseNetEncoder:
    """DenseNet-169 (torchvision key names), randomly initialised."""
    return _densenet("densenet169", num_classes)


def densenet201(num_classes: int = 1000) -> DenseNetEncoder:
    """DenseNet-201 (torchvision key names), randomly initialised."""
    return _densenet("densenet201", num_classes)


# --- MobileNet-V3 (timm) ------------------------------------------------------------------------


class MobileNetV3Encoder(_ReleasedEncoder):
    """timm MobileNet-V3.

    Feature map = the last block's output (before the 1x1 head conv). Pooled = global average pool ->
    ``conv_head`` (with bias) -> hard-swish -> flatten (the MobileNet-V3 "efficient head"). Head ``classifier``.
    """

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        fmap = n.blocks(n.bn1(n.conv_stem(x)))  # timm's bn1 is BatchNorm + activation
        v = fmap.mean((2, 3), keepdim=True)
        v = n.act2(n.norm_head(n.conv_head(v)))  # norm_head is Identity for MobileNet-V3
        return torch.flatten(v, 1), fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)


def _mobilenetv3(name: str, multiplier: float, num_classes: int) -> MobileNetV3Encoder:
    timm = _timm()
    if name in timm.list_models(name):
        net = timm.create_model(name, pretrained=False, num_classes=num_classes)
    else:
        # timm does not register every multiplier (x1.25 is missing): build through its MobileNet-V3 generator
        # with the multiplier, and an explicit (weight-less) pretrained config so timm looks nothing up.
        from timm.models.mobilenetv3 import _gen_mobilenet_v3

        cfg = get_config(name)
        net = _gen_mobilenet_v3(
            name,
            multiplier,
            pretrained=False,
            num_classes=num_classes,
            pretrained_cfg=dict(
                architecture=name,
                num_classes=num_classes,
                input_size=(3, cfg.image_size, cfg.image_size),
                crop_pct=cfg.crop_pct,
                interpolation=cfg.dataset_interpolation,
                first_conv="conv_stem",
                classifier="classifier",
            ),
        )
    enc = MobileNetV3Encoder(name, net, num_classes)
    if net.conv_head.in_channels != enc.feature_map_channels or net.conv_head.out_channels != enc.feature_num:
        raise RuntimeError(
            f"{name}: timm built conv_head {net.conv_head.in_channels}->{net.conv_head.out_channels}, "
            f"expected {enc.feature_map_channels}->{enc.feature_num}"
        )
    return enc


def mobilenetv3_large_100(num_classes: int = 1000) -> MobileNetV3Encoder:
    """MobileNet-V3-Large x1.0 (timm key names), randomly initialised: 960-ch map, 1280-d vector."""
    return _mobilenetv3("mobilenetv3_large_100", 1.0, num_classes)


def mobilenetv3_large_125(num_classes: int = 1000) -> MobileNetV3Encoder:
    """MobileNet-V3-Large x1.25 (timm key names), randomly initialised: 1200-ch map, 1280-d vector."""
    return _mobilenetv3("mobilenetv3_large_125", 1.25, num_classes)


# --- EfficientNet (timm) ------------------------------------------------------------------------


class EfficientNetEncoder(_ReleasedEncoder):
    """timm EfficientNet: feature map after ``conv_head`` + ``bn2`` + SiLU, pooled = its global average."""

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.blocks(n.bn1(n.conv_stem(x)))
        fmap = n.bn2(n.conv_head(x))  # timm's bn2 is BatchNorm + activation
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(pooled)


def _efficientnet(name: str, num_classes: int) -> EfficientNetEncoder:
    net = _timm().create_model(name, pretrained=False, num_classes=num_classes)
    return EfficientNetEncoder(name, net, num_classes)


def efficientnet_b2(num_classes: int = 1000) -> EfficientNetEncoder:
    """EfficientNet-B2 (timm key names), randomly initialised: 1408-ch map and vector."""
    return _efficientnet("efficientnet_b2", num_classes)


def efficientnet_b3(num_classes: int = 1000) -> EfficientNetEncoder:
    """EfficientNet-B3 (timm key names), randomly initialised: 1536-ch map and vector."""
    return _efficientnet("efficientnet_b3", num_classes)


# --- RegNet-Y (timm network, pycls key names) ---------------------------------------------------

# pycls RegNetY settings (configs/dds_baselines/regnety/RegNetY-*_dds_8gpu.yaml): depth, w0, wa, wm, group width,
# SE ratio 0.25 of the block *input* width, ReLU everywhere, bottleneck ratio 1, 3x3 stride-2 stem of 32 ch.
# timm's regnety_006 / _008 / _016 are the same networks (SE squeeze width round(in_chs * 0.25), ReLU in the
# squeeze path, sigmoid gate, 1x1 strided conv + BN shortcut). _check_pycls_structure verifies this on every
# build against the pycls width/depth/group recipe below; the conformance tests pin the key shapes as well.
_PYCLS_REGNETY = {
    "regnety_600m": dict(timm_name="regnety_006", depth=15, w0=48, wa=32.54, wm=2.32, group_size=16),
    "regnety_800m": dict(timm_name="regnety_008", depth=14, w0=56, wa=38.84, wm=2.4, group_size=16),
    "regnety_1.6g": dict(timm_name="regnety_016", depth=27, w0=48, wa=20.71, wm=2.65, group_size=24),
}

# (pycls suffix inside a block, timm suffix inside a block). Matched on the whole parameter path below
# "sN.bM.", so each rule renames exactly one module.
_REGNET_BLOCK_RULES: list[tuple[str, str]] = [
    ("proj", "downsample.conv"),
    ("bn", "downsample.bn"),
    ("f.a", "conv1.conv"),
    ("f.a_bn", "conv1.bn"),
    ("f.b", "conv2.conv"),
    ("f.b_bn", "conv2.bn"),
    ("f.se.f_ex.0", "se.fc1"),
    ("f.se.f_ex.2", "se.fc2"),
    ("f.c", "conv3.conv"),
    ("f.c_bn", "conv3.bn"),
]
_REGNET_TOP_RULES: list[tuple[str, str]] = [
    ("stem.conv", "stem.conv"),
    ("stem.bn", "stem.bn"),
    ("fc", "head.fc"),
]
_PARAM_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BLOCK_RE = re.compile(r"^(s\d+\.b\d+)\.(.+)$")


def _rename(key: str, rules: list[tuple[str, str]], src: int) -> str | None:
    """Rename ``key`` with the rule table, reading column ``src`` (0 = pycls, 1 = timm); None if no rule fits."""
    module, _, leaf = key.rpartition(".")
    if leaf not in _PARAM_LEAVES:
        return None
    m = _BLOCK_RE.match(module) if module else None
    table = rules if m is None else _REGNET_BLOCK_RULES
    prefix, inner = ("", module) if m is None else (m.group(1) + ".", m.group(2))
    for rule in table:
        if rule[src] == inner:
            return f"{prefix}{rule[1 - src]}.{leaf}"
    return None


def pycls_to_timm_key(key: str) -> str:
    """The timm name of a pycls RegNet-Y state-dict key (``s1.b1.f.a_bn.weight`` -> ``s1.b1.conv1.bn.weight``)."""
    out = _rename(key, _REGNET_TOP_RULES, 0)
    if out is None:
        raise KeyError(f"no pycls->timm rename rule for RegNet key {key!r}")
    return out


def timm_to_pycls_key(key: str) -> str:
    """The pycls name of a timm RegNet-Y state-dict key (inverse of :func:`pycls_to_timm_key`)."""
    out = _rename(key, _REGNET_TOP_RULES, 1)
    if out is None:
        raise KeyError(f"no timm->pycls rename rule for RegNet key {key!r}")
    return out


class RegNetEncoder(_ReleasedEncoder):
    """RegNet-Y (timm network) exposed under pycls key names.

    Feature map = the last stage's output, pooled = its global average (pycls's parameter-free ``head``);
    head ``fc`` (timm ``head.fc``).
    """

    def __init__(self, model_name: str, net: nn.Module, num_classes: int) -> None:
        super().__init__(model_name, net, num_classes)
        # Check the rename once: one-to-one and invertible over this network's keys.
        timm_keys = list(net.state_dict())
        pycls_keys = [timm_to_pycls_key(k) for k in timm_keys]
        if len(set(pycls_keys)) != len(pycls_keys):
            raise RuntimeError(f"{model_name}: RegNet key rename is not one-to-one")
        if [pycls_to_timm_key(k) for k in pycls_keys] != timm_keys:
            raise RuntimeError(f"{model_name}: RegNet key rename is not invertible")

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.stem(x)
        fmap = n.s4(n.s3(n.s2(n.s1(x))))
        pooled = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        return pooled, fmap

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net.head.fc(pooled)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict with pycls key names (``stem.conv.weight``, ``s1.b1.f.a.weight``, …, ``fc.weight``)."""
        return {timm_to_pycls_key(k): v for k, v in self.net.state_dict().items()}

    def load_official_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a pycls-keyed state dict: every key renamed by rule, every shape checked, nothing left over."""
        own = self.net.state_dict()
        renamed: dict[str, torch.Tensor] = {}
        errors: list[str] = []
        for key, value in state_dict.items():
            try:
                tkey = pycls_to_timm_key(key)
            except KeyError as e:
                errors.append(str(e.args[0]))
                continue
            if tkey not in own:
                errors.append(f"unexpected key {key!r} (-> {tkey!r})")
            elif tuple(own[tkey].shape) != tuple(value.shape):
                errors.append(f"shape of {key!r}: checkpoint {tuple(value.shape)}, model {tuple(own[tkey].shape)}")
            renamed[tkey] = value
        errors += [f"missing key {timm_to_pycls_key(k)!r}" for k in own if k not in renamed]
        if errors:
            raise RuntimeError(f"{self.model_name}: cannot load RegNet state dict:\n  " + "\n  ".join(errors[:20]))
        self.net.load_state_dict(renamed, strict=True)


def pycls_regnet_stages(depth: int, w0: int, wa: float, wm: float, group_size: int, q: int = 8) -> list[tuple[int, int, int]]:
    """(width, depth, group width) of each stage, computed as pycls does (``generate_regnet`` + block compatibility,
    bottleneck ratio 1)."""
    import math

    ks = [round(math.log((i * wa + w0) / w0) / math.log(wm)) for i in range(depth)]
    ws_all = [int(round(w0 * wm**k / q)) * q for k in ks]
    stages: list[tuple[int, int, int]] = []
    for w in sorted(set(ws_all)):
        g = min(group_size, w)
        w_adj = max(g, int(round(w / g) * g))
        stages.append((w_adj, ws_all.count(w), g))
    return stages


def _check_pycls_structure(name: str, net: nn.Module) -> None:
    """Check a timm RegNet-Y against pycls's definition: stage widths, depths, group widths, strides, SE width
    (round(0.25 * block input width)), ReLU activations and sigmoid gates."""
    spec = _PYCLS_REGNETY[name]
    expected = pycls_regnet_stages(spec["depth"], spec["w0"], spec["wa"], spec["wm"], spec["group_size"])
    problems: list[str] = []
    if net.stem.conv.out_channels != 32 or net.stem.conv.stride != (2, 2) or net.stem.conv.kernel_size != (3, 3):
        problems.append("stem is not a 3x3 stride-2 conv to 32 channels")
    w_in = 32
    for i, (w, d, g) in enumerate(expected, start=1):
        stage = getattr(net, f"s{i}", None)
        blocks = list(stage.children()) if stage is not None else []
        if len(blocks) != d:
            problems.append(f"s{i}: {len(blocks)} blocks, pycls has {d}")
            continue
        for j, blk in enumerate(blocks, start=1):
            stride = 2 if j == 1 else 1
            conv2 = blk.conv2.conv
            checks = [
                (blk.conv3.conv.out_channels, w, "width"),
                (conv2.in_channels // conv2.groups, g, "group width"),
                (conv2.stride[0], stride, "stride"),
                (blk.se.fc1.out_channels, int(round(0.25 * w_in)), "SE width"),
                (type(blk.se.act).__name__, "ReLU", "SE activation"),
                (type(blk.act3).__name__, "ReLU", "block activation"),
                (type(blk.se.gate).__name__, "Sigmoid", "SE gate"),
            ]
            for got, want, what in checks:
                if got != want:
                    problems.append(f"s{i}.b{j} {what}: {got}, pycls {want}")
            w_in = w
    if problems:
        raise RuntimeError(f"{name}: timm network differs from pycls: " + "; ".join(problems[:10]))


def _regnety(name: str, num_classes: int) -> RegNetEncoder:
    net = _timm().create_model(_PYCLS_REGNETY[name]["timm_name"], pretrained=False, num_classes=num_classes)
    _check_pycls_structure(name, net)
    return RegNetEncoder(name, net, num_classes)


def regnety_600m(num_classes: int = 1000) -> RegNetEncoder:
    """RegNetY-600MF (pycls key names), randomly initialised: 608-ch map and vector."""
    return _regnety("regnety_600m", num_classes)


def regnety_800m(num_classes: int = 1000) -> RegNetEncoder:
    """RegNetY-800MF (pycls key names), randomly initialised: 768-ch map and vector."""
    return _regnety("regnety_800m", num_classes)


def regnety_1_6g(num_classes: int = 1000) -> RegNetEncoder:
    """RegNetY-1.6GF (pycls key names; model_name ``regnety_1.6g``), randomly initialised: 888-ch map and vector."""
    return _regnety("regnety_1.6g", num_classes)


# --- registry -----------------------------------------------------------------------------------

#: model_name (as stored in checkpoints) -> builder.
ENCODER_BUILDERS: dict[str, Callable[..., Encoder]] = {
    "resnet50": resnet50,
    "densenet121": densenet121,
    "densenet169": densenet169,
    "densenet201": densenet201,
    "regnety_600m": regnety_600m,
    "regnety_800m": regnety_800m,
    "regnety_1.6g": regnety_1_6g,
    "mobilenetv3_large_100": mobilenetv3_large_100,
    "mobilenetv3_large_125": mobilenetv3_large_125,
    "efficientnet_b2": efficientnet_b2,
    "efficientnet_b3": efficientnet_b3,
}


def build_encoder(model_name: str, num_classes: int = 1000) -> Encoder:
    """Build a released architecture by its checkpoint ``model_name`` (random weights, nothing downloaded)."""
    try:
        builder = ENCODER_BUILDERS[model_name]
    except KeyError:
        known = ", ".join(ENCODER_BUILDERS)
        raise ValueError(
            f"unknown encoder model_name {model_name!r}; known: {known} "
            "(small CPU encoders: feature_nets.small_cnn.build_small_cnn)"
        ) from None
    return builder(num_classes=num_classes)
