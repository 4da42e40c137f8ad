"""The GFNet training stages as library code: stage 1, stage 3, encoder pretraining (see docs/training.md).

Usage (one process, or the same code under ``torchrun --nproc_per_node=N``)::

    model = build_gfnet("resnet50", patch_size=96, T=5)        # encoders: load pretrained backbone weights first
    cfg = TrainConfig.for_model(model, stage=1, batch_size=256)
    result = train_stage1(model, train_dataset, val_dataset, cfg, out_dir="runs/r50_stage1")
    # later, with a policy learned in stage 2:
    cfg3 = TrainConfig.for_model(model, stage=3)
    train_stage3(model, train_dataset, val_dataset, cfg3, out_dir="runs/r50_stage3")

One module per job:

- :mod:`.recipes`: :class:`TrainConfig` and the per-family recipes it starts from;
- :mod:`.stage_loss`: the loss over all T steps, and the focus locations / policy noise each stage draws;
- :mod:`.optim`: trainable parameters, the optimiser, the cosine schedule and :func:`train_step` (in two parts:
  :func:`loss_and_gradients`, :func:`apply_update`);
- :mod:`.drop_connect`: the MobileNet-V3 / EfficientNet blocks' stochastic depth while training;
- :mod:`.loop`: :func:`train_stage1` / :func:`train_stage3`, epochs, validation, checkpoints;
- :mod:`.resume`: the training state in checkpoints, continuing a run from it (other settings refused);
- :mod:`.rollback`: what Ctrl-C rolls back to, the last complete step (BatchNorm buffers, random state, sums);
- :mod:`.evaluation`: :func:`evaluate_anytime`, top-1 after every step;
- :mod:`.distributed`: torchrun process groups, synchronised BatchNorm, data shards;
- :mod:`.rng`: seed mixing and the saved random state;
- :mod:`.pretrain`: encoder pretraining on clean items;
- :mod:`.prepare`: building or loading the model a stage trains;
- :mod:`.progress`: progress bars.
"""

from .distributed import CPUSyncBatchNorm, DistContext, ShardSampler, convert_sync_batchnorm, init_distributed
from .drop_connect import set_drop_connect
from .evaluation import EvalResult, evaluate_anytime, random_actions_table
from .loop import TrainResult, train_stage, train_stage1, train_stage3
from .optim import (apply_update, build_optimizer, build_schedule, cosine_schedule, loss_and_gradients, param_groups,
                    prepare_trainable, set_train_mode, train_step)
from .prepare import build_model, ensure_policy, load_backbone_weights, load_model, load_policy
from .pretrain import copy_encoder_into, pretrain_encoder, pretrain_into
from .recipes import FAMILY_DEFAULTS, FamilyRecipe, TrainConfig
from .resume import ResumePoint, load_training_state, resume_training
from .rollback import EpochSums, StepBoundary
from .stage_loss import StageLoss, focus_draws, policy_actions

__all__ = [
    "TrainConfig",
    "FamilyRecipe",
    "FAMILY_DEFAULTS",
    "TrainResult",
    "StageLoss",
    "focus_draws",
    "policy_actions",
    "EvalResult",
    "evaluate_anytime",
    "random_actions_table",
    "DistContext",
    "init_distributed",
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm",
    "ShardSampler",
    "prepare_trainable",
    "set_train_mode",
    "param_groups",
    "build_optimizer",
    "cosine_schedule",
    "build_schedule",
    "set_drop_connect",
    "train_step",
    "loss_and_gradients",
    "apply_update",
    "train_stage",
    "train_stage1",
    "train_stage3",
    "ResumePoint",
    "load_training_state",
    "resume_training",
    "EpochSums",
    "StepBoundary",
    "pretrain_encoder",
    "pretrain_into",
    "copy_encoder_into",
    "build_model",
    "load_model",
    "load_backbone_weights",
    "load_policy",
    "ensure_policy",
]
