"""The backbone registry: one decorated builder per architecture, carrying its GFNet settings.

Each backbone is registered once, where its builder is defined, in the style of timm's ``@register_model``::

    import torchvision

    from feature_nets.backbones.resnet import ResNetEncoder
    from feature_nets.configs import BackboneConfig
    from feature_nets.registry import register_backbone

    @register_backbone(BackboneConfig(model_name="resnet101", feature_num=2048, feature_map_channels=2048,
                                      policy_conv=False, policy_hidden_dim=1024, fc_rnn=True, fc_hidden_dim=1024,
                                      image_size=224, crop_pct=0.875, dataset_interpolation="bilinear",
                                      glance_interpolation="bicubic", step0_head="classifier", head_name="fc",
                                      family="resnet"))
    def resnet101(num_classes: int = 1000) -> ResNetEncoder:
        return ResNetEncoder("resnet101", torchvision.models.resnet101(weights=None, num_classes=num_classes),
                             num_classes)

after which ``build_gfnet("resnet101", patch_size=96, T=5)``, checkpoints, ``TrainConfig.for_model`` (the
training recipe is looked up by ``family``) and the environment all know it. A builder takes ``num_classes``
(plus, for a configurable backbone, the keyword arguments stored in checkpoints as ``encoder_kwargs``) and
returns an :class:`~feature_nets.encoder.Encoder` with random weights.

A backbone whose settings depend on its constructor arguments (the small CNN) registers a *config factory*
instead of a fixed config: ``factory(encoder, **options) -> BackboneConfig``, called with a freshly built
encoder and GFNet-level options (``image_size``, widths of the GRU and the policy); its name is then given
explicitly (default: the builder's name).

The built-in backbones register themselves when :mod:`feature_nets` is imported (``feature_nets/__init__.py``
imports :mod:`feature_nets.backbones`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from .configs import BackboneConfig

if TYPE_CHECKING:
    from .encoder import Encoder

__all__ = [
    "Backbone",
    "register_backbone",
    "get_backbone",
    "backbone_names",
    "get_config",
    "build_encoder",
    "BACKBONE_CONFIGS",
    "ENCODER_BUILDERS",
]

ConfigFactory = Callable[..., "BackboneConfig"]
BuilderT = TypeVar("BuilderT", bound=Callable[..., "Encoder"])

#: Patch side P a backbone is built with when none is given (the paper's most used P for ImageNet).
DEFAULT_PATCH_SIZE = 96


@dataclass(frozen=True)
class Backbone:
    """One registered backbone.

    Attributes:
        name: the ``model_name`` stored in checkpoints.
        builder: ``builder(num_classes=..., **encoder_kwargs) -> Encoder`` with random weights.
        fixed_config: the backbone's GFNet settings, or None for a configurable backbone.
        config_factory: ``factory(encoder, **options) -> BackboneConfig`` of a configurable backbone, else None.
        default_patch_size: P used when a caller gives none, pixels.
    """

    name: str
    builder: Callable[..., Encoder]
    fixed_config: BackboneConfig | None
    config_factory: ConfigFactory | None
    default_patch_size: int = DEFAULT_PATCH_SIZE

    @property
    def configurable(self) -> bool:
        """True when the settings depend on constructor arguments (stored as ``encoder_kwargs``)."""
        return self.fixed_config is None

    def build(self, num_classes: int, encoder_kwargs: Mapping[str, Any] | None = None) -> Encoder:
        """A fresh encoder; a ``num_classes`` inside ``encoder_kwargs`` (as checkpoints store it) wins."""
        return self.builder(**{"num_classes": num_classes, **(encoder_kwargs or {})})

    def config(self, encoder: Encoder | None = None, **options: Any) -> BackboneConfig:
        """The GFNet settings: the fixed config, or the factory's for a built ``encoder`` and ``options``."""
        if self.fixed_config is not None:
            if options:
                raise TypeError(f"{self.name} has fixed settings; unexpected options {sorted(options)}")
            return self.fixed_config
        if encoder is None:
            raise ValueError(f"{self.name}'s settings depend on its constructor arguments: pass the built encoder")
        return self.config_factory(encoder, **options)


_REGISTRY: dict[str, Backbone] = {}
#: model_name -> settings, for every backbone with fixed settings (the 11 released architectures and any
#: registered later). Filled by :func:`register_backbone`.
BACKBONE_CONFIGS: dict[str, BackboneConfig] = {}
#: model_name -> builder, for the same backbones as :data:`BACKBONE_CONFIGS`.
ENCODER_BUILDERS: dict[str, Callable[..., Encoder]] = {}


def register_backbone(
    config: BackboneConfig | ConfigFactory,
    name: str | None = None,
    default_patch_size: int = DEFAULT_PATCH_SIZE,
) -> Callable[[BuilderT], BuilderT]:
    """Decorator registering an encoder builder with its GFNet settings; returns the builder unchanged.

    Args:
        config: a :class:`~feature_nets.configs.BackboneConfig` (its ``model_name`` names the backbone), or a
            config factory ``(encoder, **options) -> BackboneConfig`` for a configurable backbone.
        name: the checkpoint ``model_name``; default: ``config.model_name``, or the builder's name for a factory.
        default_patch_size: P used when a caller gives none, pixels.
    """

    def register(builder: BuilderT) -> BuilderT:
        factory = config if callable(config) else None
        fixed = None if factory is not None else config
        key = name or (fixed.model_name if fixed is not None else builder.__name__)
        if fixed is not None and fixed.model_name != key:
            raise ValueError(f"backbone registered as {key!r} but its config says model_name {fixed.model_name!r}")
        if key in _REGISTRY:
            raise ValueError(f"a backbone named {key!r} is already registered ({_REGISTRY[key].builder.__module__})")
        _REGISTRY[key] = Backbone(key, builder, fixed, factory, default_patch_size)
        if fixed is not None:
            BACKBONE_CONFIGS[key] = fixed
            ENCODER_BUILDERS[key] = builder
        return builder

    return register


def backbone_names() -> list[str]:
    """Names of every registered backbone, in registration order."""
    return list(_REGISTRY)


def get_backbone(model_name: str) -> Backbone:
    """The registered backbone of a checkpoint ``model_name``, or a ValueError listing the known ones."""
    try:
        return _REGISTRY[model_name]
    except KeyError:
        raise ValueError(
            f"unknown backbone model_name {model_name!r}; known: {', '.join(_REGISTRY)}"
        ) from None


def get_config(model_name: str) -> BackboneConfig:
    """The settings of a backbone with fixed settings (a released architecture), or a clear ValueError."""
    try:
        return BACKBONE_CONFIGS[model_name]
    except KeyError:
        known = ", ".join(sorted(BACKBONE_CONFIGS))
        configurable = [n for n, b in _REGISTRY.items() if b.configurable]
        raise ValueError(
            f"unknown GFNet model_name {model_name!r}; known architectures: {known}. "
            f"The settings of {', '.join(configurable)} depend on its constructor arguments: "
            "build it with feature_nets.gfnet.build_gfnet (or build_small_gfnet)."
        ) from None


def build_encoder(model_name: str, num_classes: int = 1000, **encoder_kwargs: Any) -> Encoder:
    """Build a registered backbone by its checkpoint ``model_name`` (random weights, nothing downloaded)."""
    return get_backbone(model_name).build(num_classes, encoder_kwargs)
