"""The composed GFNet model: glance, then focus steps, on a batch (see docs/gfnet.md).

Usage::

    model = build_gfnet("resnet50", patch_size=96, T=5)          # or load_checkpoint(path).model
    out = model.glance(images)                                    # step 0 on (B, 3, S, S) images
    for t in range(1, model.T):
        actions = ...                                             # (B, 2) in [0, 1], rows then columns
        out = model.focus(images, actions, out)                   # step t
    # out.logits, out.state, out.feature_map, out.boxes at every step

``model.run(images)`` does the whole loop with the stored policy's mean actions, as the original
inference code does. Nothing here knows about RL: the policy is only called to choose actions.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .classifiers import Classifier, build_classifier
from .configs import BackboneConfig
from .crop import crop_corners, crop_patches
from .encoder import Encoder
from .policy import PatchPolicy
from .registry import get_backbone


@dataclass
class GFNetSpec:
    """Everything needed to rebuild a GFNet's modules (stored in checkpoints we write).

    Attributes:
        config: the backbone's GFNet settings.
        patch_size: side P of glance and patches, pixels.
        T: number of steps (glance + T−1 focus steps) the model was trained for.
        num_classes: classifier outputs.
        image_size: side S of full-resolution inputs, pixels (defaults to the config's).
        encoder_kwargs: constructor arguments of a configurable encoder (the small CNN), else empty.
    """

    config: BackboneConfig
    patch_size: int
    T: int
    num_classes: int = 1000
    image_size: int | None = None
    encoder_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every field (positive integers, P <= S); numpy / 0-d tensor integers become ints.

        Raises:
            TypeError: a size that is not an integer (``"ninety-six"``, 96.5, True).
            ValueError: a size < 1, or ``patch_size > image_size``.
        """
        if self.image_size is None:
            self.image_size = self.config.image_size
        self.patch_size = positive_int(self.patch_size, "patch_size", "side of the glance and of each patch, pixels")
        self.image_size = positive_int(self.image_size, "image_size", "side of the full-resolution input, pixels")
        self.T = positive_int(self.T, "T", "number of steps: the glance plus T-1 focus steps")
        self.num_classes = positive_int(self.num_classes, "num_classes", "classifier outputs")
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} exceeds image_size {self.image_size}: a patch is a "
                             "crop of the full-resolution image, so it must not be larger than it")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["config"] = asdict(self.config)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GFNetSpec":
        d = dict(d)
        d["config"] = BackboneConfig(**d["config"])
        return cls(**d)


def positive_int(value, name: str, meaning: str) -> int:
    """``value`` as an int, if it is a positive integer (int, numpy integer or 0-d integer tensor; not a bool).

    Raises:
        TypeError: not an integer; ValueError: < 1. The message names ``name`` and says what it means.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer ({meaning}), got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer ({meaning}), got {value}")
    return int(value)


@dataclass
class StepOutput:
    """What one GFNet step produces, for a batch of B images.

    Attributes:
        logits: (B, num_classes) prediction after this step.
        state: (B, state_dim) classifier state after this step (GRU hidden vector, or the zero-padded
            concatenation of pooled vectors for the cascade).
        feature_map: (B, C, h, w) encoder map of this step; the policy reads it before the next step.
        pooled: (B, F) encoder vector of this step.
        boxes: (B, 4) int64 (row, col, height, width) of the image region seen, in full-resolution pixels
            (the whole image for the glance).
        step: index t of this step (0 = glance).
    """

    logits: torch.Tensor
    state: torch.Tensor
    feature_map: torch.Tensor
    pooled: torch.Tensor
    boxes: torch.Tensor
    step: int


class GFNet(nn.Module):
    """Global encoder + local encoder + classifier (+ optional patch policy), batched.

    Args:
        spec: architecture description (see :class:`GFNetSpec`).
        global_encoder: encoder of the P×P glance.
        local_encoder: encoder of the P×P full-resolution patches.
        classifier: a :class:`~feature_nets.classifiers.Classifier` (the GRU classifier or the cascade).
        policy: the paper's patch proposal network, or None.
    """

    def __init__(
        self,
        spec: GFNetSpec,
        global_encoder: Encoder,
        local_encoder: Encoder,
        classifier: Classifier,
        policy: PatchPolicy | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.global_encoder = global_encoder
        self.local_encoder = local_encoder
        self.classifier = classifier
        self.policy = policy
        #: Interpolation of the glance; training may switch it (bicubic for the released families, see
        #: docs/training.md).
        self.glance_interpolation = spec.config.glance_interpolation
        #: The results the checkpoint this model was loaded from stores (its published numbers), set by
        #: :func:`feature_nets.checkpoint.load_checkpoint`; None for a model built here or a file without them.
        self.stored_results: dict | None = None

    # --- shape facts ------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self.spec.T

    @property
    def patch_size(self) -> int:
        return self.spec.patch_size

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def state_dim(self) -> int:
        return self.classifier.state_dim

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the map the policy reads."""
        h = self.local_encoder.feature_map_size(self.patch_size)
        return (self.local_encoder.feature_map_channels, h, h)

    # --- the two kinds of look --------------------------------------------------------------------
    def glance_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 3, P, P) downsampled copy, align_corners=True as the original."""
        p = self.patch_size
        return F.interpolate(images, size=(p, p), mode=self.glance_interpolation, align_corners=True)

    def glance(self, images: torch.Tensor, step0_head: str | None = None) -> StepOutput:
        """Step 0 on a batch of full-resolution images (B, 3, S, S); ``step0_head`` as in
        :meth:`glance_from_features`."""
        self._check_images(images)
        pooled, fmap = self.global_encoder(self.glance_input(images))
        return self.glance_from_features(pooled, fmap, step0_head)

    def glance_from_features(self, pooled: torch.Tensor, fmap: torch.Tensor,
                             step0_head: str | None = None) -> StepOutput:
        """Finish the glance whose global-encoder output, (B, F) ``pooled`` and (B, C, h, w) ``fmap``, is known.

        ``step0_head`` picks the step-0 logits: None, the configuration's (inference); ``"classifier"``, the
        classifier's own where it gives some (the GRU; the original training loss uses these for every GRU
        family), else the encoder head; ``"encoder"``, the global encoder's head.
        """
        b = pooled.shape[0]
        state = self.classifier.initial_state(b, device=pooled.device, dtype=pooled.dtype)
        logits, state = self.classifier.step(pooled, state, 0)
        if (step0_head or self.spec.config.step0_head) == "encoder" or logits is None:
            logits = self.global_encoder.head(pooled)
        boxes = torch.tensor([0, 0, self.image_size, self.image_size], device=pooled.device).expand(b, 4)
        return StepOutput(logits, state, fmap, pooled, boxes, 0)

    def focus(self, images: torch.Tensor, actions: torch.Tensor, previous: StepOutput) -> StepOutput:
        """Focus step t = previous.step + 1 at the patches chosen by ``actions`` (B, 2) in [0, 1]."""
        return self.focus_at(images, crop_corners(actions, self.image_size, self.patch_size), previous)

    def focus_at(self, images: torch.Tensor, corners: torch.Tensor, previous: StepOutput) -> StepOutput:
        """Focus step at given (B, 2) int64 top-left corners (row, col) in pixels."""
        patches = crop_patches(images, corners, self.patch_size)
        pooled, fmap = self.local_encoder(patches)
        return self.focus_from_features(pooled, fmap, corners, previous)

    def focus_from_features(
        self, pooled: torch.Tensor, fmap: torch.Tensor, corners: torch.Tensor, previous: StepOutput
    ) -> StepOutput:
        """Finish a focus step whose local-encoder output is already known (e.g. from a feature cache)."""
        t = previous.step + 1
        max_looks = self.classifier.max_looks
        if max_looks is not None and t >= max_looks:
            raise ValueError(f"step {t} is beyond what this classifier supports ({max_looks} looks)")
        logits, state = self.classifier.step(pooled, previous.state, t)
        p = self.patch_size
        boxes = torch.cat([corners, torch.full_like(corners, p)], dim=1)
        return StepOutput(logits, state, fmap, pooled, boxes, t)

    # --- the whole original inference loop --------------------------------------------------------
    @torch.no_grad()
    def run(
        self,
        images: torch.Tensor,
        T: int | None = None,
        choose: Callable[[StepOutput, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
    ) -> tuple[list[StepOutput], list[torch.Tensor]]:
        """Glance then T−1 focus steps.

        Args:
            images: (B, 3, S, S).
            T: number of steps (default: the model's).
            choose: ``(previous_output, memory) -> (actions (B, 2), memory)``; default: the stored policy's
                mean (test-time behaviour of the original code).

        Returns:
            (outputs, actions): one :class:`StepOutput` per step and the (B, 2) actions of each focus step.
        """
        T = self.T if T is None else T
        if choose is None:
            choose = self.policy_mean_chooser()
        outputs = [self.glance(images)]
        actions_taken: list[torch.Tensor] = []
        memory = None
        for _ in range(1, T):
            actions, memory = choose(outputs[-1], memory)
            actions_taken.append(actions)
            outputs.append(self.focus(images, actions, outputs[-1]))
        return outputs, actions_taken

    def policy_mean_chooser(self):
        """A ``choose`` function for :meth:`run` that takes the stored policy's mean action."""
        if self.policy is None:
            raise ValueError("this GFNet has no policy; pass choose= to run() or load a checkpoint with one")

        def choose(prev: StepOutput, hidden):
            return self.policy.mean_action(prev.feature_map, hidden)

        return choose

    def _check_images(self, images: torch.Tensor) -> None:
        s = self.image_size
        if images.dim() != 4 or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(
                f"expected images of shape (B, C, {s}, {s}), got {tuple(images.shape)}; "
                f"resize/crop inputs to {s}×{s} (the dataset transform does this)"
            )


def build_encoder_for(spec: GFNetSpec) -> Encoder:
    """A fresh encoder for a spec (random weights, no download), from the registered builder."""
    return get_backbone(spec.config.model_name).build(spec.num_classes, spec.encoder_kwargs)


def build_gfnet_from_spec(spec: GFNetSpec, with_policy: bool = True) -> GFNet:
    """Construct all modules of a GFNet from a spec (random weights)."""
    cfg = spec.config
    global_encoder = build_encoder_for(spec)
    local_encoder = build_encoder_for(spec)
    classifier = build_classifier(cfg.fc_rnn, cfg.feature_num, spec.num_classes, cfg.fc_hidden_dim)
    policy = None
    if with_policy:
        policy = PatchPolicy(
            feature_map_channels=cfg.feature_map_channels,
            feature_map_size=local_encoder.feature_map_size(spec.patch_size),
            hidden_dim=cfg.policy_hidden_dim,
            conv=cfg.policy_conv,
        )
    return GFNet(spec, global_encoder, local_encoder, classifier, policy)


def build_gfnet(
    model_name: str,
    patch_size: int | None = None,
    T: int = 5,
    num_classes: int = 1000,
    with_policy: bool = True,
    *,
    image_size: int | None = None,
    encoder_kwargs: dict | None = None,
    **config_options,
) -> GFNet:
    """A GFNet of any registered backbone (random weights; load a checkpoint for trained ones).

    Args:
        model_name: the backbone's registered name (``"resnet50"``, ``"small_cnn"``, …).
        patch_size: side P of glance and patches, pixels (default: the backbone's registered default).
        T: number of steps (glance + T−1 focus steps).
        num_classes: classifier outputs.
        with_policy: also build the patch policy.
        image_size: side S of full-resolution inputs, pixels (default: the backbone's).
        encoder_kwargs: constructor arguments of a configurable backbone (the small CNN).
        **config_options: options of a configurable backbone's config factory (``gru_hidden``, …).
    """
    backbone = get_backbone(model_name)
    if backbone.configurable:
        # The settings depend on the built encoder, so one is built first. Its initialisation is drawn from the
        # global RNG ahead of the two encoders the model keeps: seeded builds (and shipped weights) rely on it.
        probe = backbone.build(num_classes, encoder_kwargs)
        options = dict(config_options) if image_size is None else {"image_size": image_size, **config_options}
        config = backbone.config(probe, **options)
        encoder_kwargs = dict(probe.arch_kwargs)
    else:
        config = backbone.config(**config_options)
        encoder_kwargs = dict(encoder_kwargs or {})
    spec = GFNetSpec(config, patch_size=patch_size or backbone.default_patch_size, T=T, num_classes=num_classes,
                     image_size=image_size or config.image_size, encoder_kwargs=encoder_kwargs)
    return build_gfnet_from_spec(spec, with_policy=with_policy)


def build_small_gfnet(
    patch_size: int = 28,
    T: int = 5,
    image_size: int = 112,
    num_classes: int = 10,
    gru_hidden: int = 256,
    policy_hidden: int = 128,
    **encoder_kwargs,
) -> GFNet:
    """A CPU-sized GFNet on the small CNN encoder (the embedded default task uses this).

    ``encoder_kwargs`` are :class:`~feature_nets.backbones.small_cnn.SmallCNNEncoder` arguments (``widths``,
    ``feature_num``, …); ``gru_hidden`` and ``policy_hidden`` are the widths of the classifier's and the
    policy's GRUs.
    """
    return build_gfnet("small_cnn", patch_size, T, num_classes, image_size=image_size, encoder_kwargs=encoder_kwargs,
                       gru_hidden=gru_hidden, policy_hidden=policy_hidden)
