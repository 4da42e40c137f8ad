"""Getting a GFNet ready for a training stage: build or load it, load backbone weights or a stage-2 policy.

What ``gfnet train-features`` does between parsing its options and calling :func:`~.loop.train_stage`
(datasets aside: they come from ``gfnet_env``, which this package does not import).
"""

from __future__ import annotations

import os

from ..checkpoint import load_checked_state_dict, load_checkpoint, read_checkpoint_dict, strip_module_prefix
from ..trust import NotACheckpointError, load_torch_file
from ..gfnet import GFNet, build_gfnet
from ..policy import PatchPolicy
from ..registry import get_backbone

__all__ = ["build_model", "load_model", "load_backbone_weights", "load_policy", "ensure_policy"]


def build_model(
    model_name: str,
    num_classes: int,
    T: int = 5,
    patch_size: int | None = None,
    image_size: int | None = None,
    encoder_kwargs: dict | None = None,
) -> GFNet:
    """A fresh GFNet (random weights) of a registered backbone, to train from stage 1.

    Args:
        model_name: the backbone (``"resnet50"``, ``"small_cnn"``, …).
        num_classes: classes of the training set.
        T: steps (glance + T−1 focus steps).
        patch_size: P, pixels (default: the backbone's registered default, 96 for the released ones).
        image_size: S, pixels, for a configurable backbone (default: its own); a released backbone keeps its
            config's size.
        encoder_kwargs: constructor arguments of a configurable backbone (``widths``, ``feature_num`` for the
            small CNN); ignored for a released one.
    """
    if not get_backbone(model_name).configurable:
        image_size, encoder_kwargs = None, None
    return build_gfnet(model_name, patch_size, T, num_classes, image_size=image_size, encoder_kwargs=encoder_kwargs)


def load_model(path: str | os.PathLike, trusted_pickle: bool = False) -> GFNet:
    """The GFNet of a checkpoint (architecture, P and T from the file), with its policy when it has one."""
    has_policy = "policy" in read_checkpoint_dict(path, trusted_pickle=trusted_pickle)
    return load_checkpoint(path, trusted_pickle=trusted_pickle, with_policy=has_policy).model


def load_backbone_weights(model: GFNet, path: str | os.PathLike, trusted_pickle: bool = False) -> None:
    """Load a plain pretrained backbone's state dict (torchvision / timm key names; pycls for RegNet, optionally
    under ``state_dict`` and with ``module.`` prefixes) into both encoders, as stage 1 starts in the paper.

    The file is read through the trust gate (:func:`feature_nets.trust.load_torch_file`): ``trusted_pickle`` must be
    a bool, and a file that would run code is refused with :class:`~feature_nets.trust.UntrustedPickleError`."""
    sd = load_torch_file(path, trusted_pickle, what="backbone weights file")
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict):
        raise NotACheckpointError(f"{path} holds a {type(sd).__name__}, not a backbone state dict")
    sd = strip_module_prefix(sd)
    for encoder in (model.global_encoder, model.local_encoder):  # keys, value types, shapes checked: one line each
        load_checked_state_dict(encoder, sd, "backbone weights", path, is_encoder=True)


def load_policy(model: GFNet, path: str | os.PathLike, trusted_pickle: bool = False) -> None:
    """Load the patch policy of a GFNet checkpoint (or of a bare policy state dict) into ``model``, building the
    policy module first when the model has none. Read through the trust gate, as every file."""
    blob = load_torch_file(path, trusted_pickle, what="policy file")
    sd = blob.get("policy_state_dict", blob.get("policy", blob)) if isinstance(blob, dict) else None
    if not isinstance(sd, dict) or not any(k.startswith("actor.") for k in sd):
        raise ValueError(f"{path} holds no policy weights (expected a GFNet checkpoint with a 'policy' entry, "
                         "e.g. from `gfnet train-policy`)")
    if model.policy is None:
        cfg = model.spec.config
        c, h, _ = model.feature_map_shape
        model.policy = PatchPolicy(c, h, cfg.policy_hidden_dim, cfg.policy_conv)
    load_checked_state_dict(model.policy, sd, "policy", path)


def ensure_policy(model: GFNet, policy_checkpoint: str | os.PathLike | None, trusted_pickle: bool = False) -> None:
    """Stage 3's precondition: load the policy of ``policy_checkpoint`` when given, else require the model's own."""
    if policy_checkpoint:
        load_policy(model, policy_checkpoint, trusted_pickle)
    elif model.policy is None:
        raise ValueError("stage 3 needs --policy-checkpoint (the stage-2 result, e.g. from gfnet train-policy)")
