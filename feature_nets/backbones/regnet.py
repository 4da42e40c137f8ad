"""RegNet-Y backbones: timm networks exposed under the pycls key names of the released checkpoints.

Feature map = the last stage's output, pooled = its global average (pycls's parameter-free ``head``); head
``fc``. :class:`RegNetEncoder` renames keys one to one by explicit rules and checks every shape, and every build
is checked against pycls's width/depth/group recipe.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import BackboneConfig
from ..registry import register_backbone
from .base import ReleasedEncoder, import_timm

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


class RegNetEncoder(ReleasedEncoder):
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
    net = import_timm().create_model(_PYCLS_REGNETY[name]["timm_name"], pretrained=False, num_classes=num_classes)
    _check_pycls_structure(name, net)
    return RegNetEncoder(name, net, num_classes)


def _config(name: str, width: int) -> BackboneConfig:
    """Every released RegNet-Y: conv policy input, GRU classifier, bilinear everywhere, step-0 logits from the
    encoder's head; map and vector ``width`` wide."""
    return BackboneConfig(
        model_name=name, feature_num=width, feature_map_channels=width, policy_conv=True, policy_hidden_dim=256,
        fc_rnn=True, fc_hidden_dim=1024, image_size=224, crop_pct=0.875, dataset_interpolation="bilinear",
        glance_interpolation="bilinear", step0_head="encoder", head_name="fc", family="regnet",
    )


@register_backbone(_config("regnety_600m", 608))
def regnety_600m(num_classes: int = 1000) -> RegNetEncoder:
    """RegNetY-600MF (pycls key names), randomly initialised: 608-ch map and vector."""
    return _regnety("regnety_600m", num_classes)


@register_backbone(_config("regnety_800m", 768))
def regnety_800m(num_classes: int = 1000) -> RegNetEncoder:
    """RegNetY-800MF (pycls key names), randomly initialised: 768-ch map and vector."""
    return _regnety("regnety_800m", num_classes)


@register_backbone(_config("regnety_1.6g", 888))
def regnety_1_6g(num_classes: int = 1000) -> RegNetEncoder:
    """RegNetY-1.6GF (pycls key names; model_name ``regnety_1.6g``), randomly initialised: 888-ch map and vector."""
    return _regnety("regnety_1.6g", num_classes)
