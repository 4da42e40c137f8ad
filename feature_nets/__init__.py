"""GFNet networks: encoders, classifiers, the patch proposal policy, the composed model, checkpoints.

Knows nothing of Gymnasium or RL libraries (see ``gfnet_env`` and ``agents`` for those). Importing the package
registers the built-in backbones (:mod:`feature_nets.backbones`; add one with
:func:`feature_nets.registry.register_backbone`).
"""

from .backbones import ENCODER_BUILDERS, build_encoder, small_cnn
from .budgeted import budgeted_curve, evaluate_thresholds, exit_distribution, fit_thresholds
from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from .classifiers import CascadeClassifier, Classifier, GRUClassifier
from .configs import BackboneConfig
from .registry import BACKBONE_CONFIGS, get_config
from .crop import crop_corners, crop_patches
from .gfnet import GFNet, GFNetSpec, StepOutput, build_gfnet, build_small_gfnet
from .madds import count_madds
from .policy import PatchPolicy
from .registry import Backbone, backbone_names, get_backbone, register_backbone

__all__ = [
    "BACKBONE_CONFIGS", "Backbone", "BackboneConfig", "CascadeClassifier", "CheckpointError", "Classifier",
    "ENCODER_BUILDERS", "GFNet", "GFNetSpec", "GRUClassifier", "LoadedCheckpoint", "PatchPolicy", "StepOutput",
    "backbone_names", "budgeted_curve", "build_encoder", "build_gfnet", "build_small_gfnet", "count_madds",
    "crop_corners", "crop_patches", "evaluate_thresholds", "exit_distribution", "fit_thresholds", "get_backbone",
    "get_config", "load_checkpoint", "register_backbone", "save_checkpoint", "small_cnn",
]
