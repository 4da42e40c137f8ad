"""How a stage updates the model: which parameters train, the optimiser, the schedule, one update step.

SGD (momentum 0.9, Nesterov), weight decay on every trained parameter, separate learning rates for the
encoders and the classifier, cosine decay to 0 stepped every iteration. The policy never trains here; a
frozen global encoder (MobileNet-V3 / EfficientNet recipes) stays in eval mode with no gradient, and the
classifier's parameters that T looks never use get none either. See docs/training.md.

The loop calls, once per batch, :func:`train_step`; a caller can drive a stage one step at a time::

    prepare_trainable(model, cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = cosine_schedule(optimizer, total_steps=cfg.epochs * steps_per_epoch)
    set_train_mode(model, cfg)
    loss, correct = train_step(StageLoss(model, cfg.stage, cfg.dsn_ratio), images, labels, draws, optimizer, scheduler)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..gfnet import GFNet
from .recipes import TrainConfig

__all__ = ["prepare_trainable", "set_train_mode", "param_groups", "build_optimizer", "cosine_schedule", "train_step"]


def prepare_trainable(model: GFNet, cfg: TrainConfig) -> None:
    """requires_grad: policy never (stages 1 and 3), global encoder unless frozen, unused classifier heads never."""
    for p in model.parameters():
        p.requires_grad_(True)
    if model.policy is not None:
        model.policy.requires_grad_(False)
    if cfg.freeze_global:
        model.global_encoder.requires_grad_(False)
    model.classifier.freeze_unused_looks(model.T)


def set_train_mode(model: GFNet, cfg: TrainConfig) -> None:
    """Training mode, except for the modules that do not train (frozen global encoder, policy): eval mode."""
    model.train()
    if cfg.freeze_global:
        model.global_encoder.eval()
    if model.policy is not None:
        model.policy.eval()


def param_groups(model: GFNet, cfg: TrainConfig) -> list[dict]:
    """Optimiser groups ``encoders`` (lr_backbone) and ``classifier`` (lr_classifier) of the trainable parameters;
    empty groups are left out."""
    enc: list[nn.Parameter] = []
    if not cfg.freeze_global:
        enc += [p for p in model.global_encoder.parameters() if p.requires_grad]
    enc += [p for p in model.local_encoder.parameters() if p.requires_grad]
    clf = [p for p in model.classifier.parameters() if p.requires_grad]
    groups = [
        {"params": enc, "lr": cfg.lr_backbone, "name": "encoders"},
        {"params": clf, "lr": cfg.lr_classifier, "name": "classifier"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: GFNet, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over :func:`param_groups` with the config's momentum, Nesterov flag and weight decay (call
    :func:`prepare_trainable` first)."""
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr_backbone, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr × ½(1 + cos(π·min(i, N) / N)) after i scheduler steps, N = ``total_steps`` (stepped every iteration)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total_steps) / total_steps)))


def train_step(
    stage_loss: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    draws: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step: the loss over all T steps, its gradient, one optimiser and one schedule step.

    Args:
        stage_loss: a :class:`~feature_nets.training.stage_loss.StageLoss` (or its DDP wrapper).
        images: (B, 3, S, S) batch on the model's device.
        labels: (B,) class indices.
        draws: (B, T−1, 2) focus locations (stage 1) or policy noise (stage 3), see
            :func:`~feature_nets.training.stage_loss.focus_draws`.
        optimizer, scheduler: from :func:`build_optimizer` and :func:`cosine_schedule`.

    Returns:
        (loss, correct): the scalar loss before the update (detached) and the (T,) correct predictions per step.
    """
    loss, correct = stage_loss(images, labels, draws)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), correct
