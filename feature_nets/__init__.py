"""GFNet networks: encoders, classifiers, the patch proposal policy, the composed model, checkpoints.

Knows nothing of Gymnasium or RL libraries (see ``gfnet_env`` and ``agents`` for those).
"""

from .backbones import ENCODER_BUILDERS, build_encoder
from .budgeted import budgeted_curve, evaluate_thresholds, exit_distribution, fit_thresholds
from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from .classifiers import CascadeClassifier, GRUClassifier
from .configs import BACKBONE_CONFIGS, BackboneConfig, get_config
from .crop import crop_corners, crop_patches
from .gfnet import GFNet, GFNetSpec, StepOutput, build_gfnet, build_small_gfnet
from .madds import count_madds
from .policy import PatchPolicy
from .small_cnn import small_cnn

__all__ = [
    "BACKBONE_CONFIGS", "BackboneConfig", "CascadeClassifier", "CheckpointError", "ENCODER_BUILDERS", "GFNet",
    "GFNetSpec", "GRUClassifier", "LoadedCheckpoint", "PatchPolicy", "StepOutput", "budgeted_curve",
    "build_encoder", "build_gfnet", "build_small_gfnet", "count_madds", "crop_corners", "crop_patches",
    "evaluate_thresholds", "exit_distribution", "fit_thresholds", "get_config", "load_checkpoint",
    "save_checkpoint", "small_cnn",
]
