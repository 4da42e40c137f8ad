"""How a stage updates the model: which parameters train, the optimiser, the schedule, one update step.

As the original training code: SGD (momentum 0.9, Nesterov) over three parameter groups — local encoder,
global encoder (left out when frozen), classifier — with weight decay on every parameter in them (batch-norm
weights and biases included), and a cosine decay to 0 set once per epoch (``lr_schedule="epoch"``; every
iteration with ``"iteration"``). The policy never trains here; a frozen global encoder (MobileNet-V3 /
EfficientNet recipes) stays in eval mode with no gradient, and the classifier's parameters that T looks never
use get none either. See docs/training.md.

The loop calls, once per batch, :func:`train_step`; a caller can drive a stage one step at a time::

    prepare_trainable(model, cfg)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_schedule(optimizer, cfg, steps_per_epoch)
    set_train_mode(model, cfg)
    loss, correct = train_step(StageLoss.from_config(model, cfg), images, labels, draws, optimizer, scheduler)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..gfnet import GFNet
from .drop_connect import set_drop_connect
from .recipes import TrainConfig

__all__ = ["prepare_trainable", "set_train_mode", "param_groups", "build_optimizer", "cosine_schedule",
           "build_schedule", "train_step", "loss_and_gradients", "apply_update"]


def prepare_trainable(model: GFNet, cfg: TrainConfig) -> None:
    """requires_grad: policy never (stages 1 and 3), global encoder unless frozen, unused classifier heads never;
    and the encoders' drop-connect rate ``cfg.drop_connect`` (:func:`~.drop_connect.set_drop_connect`)."""
    for p in model.parameters():
        p.requires_grad_(True)
    if model.policy is not None:
        model.policy.requires_grad_(False)
    if cfg.freeze_global:
        model.global_encoder.requires_grad_(False)
    model.classifier.freeze_unused_looks(model.T)
    set_drop_connect(model, cfg.drop_connect)


def set_train_mode(model: GFNet, cfg: TrainConfig) -> None:
    """Training mode, except for the modules that do not train (frozen global encoder, policy): eval mode; and
    the training glance interpolation (``cfg.glance_interpolation``, else the model's inference mode)."""
    model.train()
    model.glance_interpolation = cfg.glance_interpolation or model.spec.config.glance_interpolation
    if cfg.freeze_global:
        model.global_encoder.eval()
    if model.policy is not None:
        model.policy.eval()


def param_groups(model: GFNet, cfg: TrainConfig) -> list[dict]:
    """Optimiser groups of the trainable parameters, in the original's order: ``local_encoder`` and
    ``global_encoder`` (lr_backbone), ``classifier`` (lr_classifier); empty groups (a frozen global encoder)
    are left out."""
    def trainable(module: nn.Module) -> list[nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad]

    glob = [] if cfg.freeze_global else trainable(model.global_encoder)
    groups = [
        {"params": trainable(model.local_encoder), "lr": cfg.lr_backbone, "name": "local_encoder"},
        {"params": glob, "lr": cfg.lr_backbone, "name": "global_encoder"},
        {"params": trainable(model.classifier), "lr": cfg.lr_classifier, "name": "classifier"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: GFNet, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over :func:`param_groups` with the config's momentum, Nesterov flag and weight decay (call
    :func:`prepare_trainable` first)."""
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr_backbone, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                    steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """A cosine decay to 0, stepped (``scheduler.step()``) after every iteration.

    After i steps each group's lr is its initial lr × ½(1 + cos(π·e / E)) with e = ⌊i / steps_per_epoch⌋ and
    E = total_steps / steps_per_epoch (e capped at E): with ``steps_per_epoch`` = 1 the rate changes every
    iteration, with the true steps per epoch once per epoch, as the original sets it at each epoch start.
    """
    k = max(int(steps_per_epoch), 1)
    n = max(total_steps / k, 1e-12)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it // k, n) / n)))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The stage's :func:`cosine_schedule` over ``cfg.epochs`` epochs of ``steps_per_epoch`` iterations, stepped
    per epoch or per iteration as ``cfg.lr_schedule`` says."""
    per = steps_per_epoch if cfg.lr_schedule == "epoch" else 1
    return cosine_schedule(optimizer, cfg.epochs * steps_per_epoch, steps_per_epoch=per)


def train_step(
    stage_loss: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    draws: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step: the loss over all T steps, its gradient, one optimiser and one schedule step
    (:func:`loss_and_gradients`, then :func:`apply_update`).

    Args:
        stage_loss: a :class:`~feature_nets.training.stage_loss.StageLoss` (or its DDP wrapper).
        images: (B, 3, S, S) batch on the model's device.
        labels: (B,) class indices.
        draws: (B, T−1, 2) focus locations (stage 1) or policy noise (stage 3), see
            :func:`~feature_nets.training.stage_loss.focus_draws`.
        optimizer, scheduler: from :func:`build_optimizer` and :func:`build_schedule`.

    Returns:
        (loss, correct): the scalar loss before the update (detached) and the (T,) correct predictions per step.
    """
    loss, correct = loss_and_gradients(stage_loss, images, labels, draws, optimizer)
    apply_update(optimizer, scheduler)
    return loss, correct


def loss_and_gradients(stage_loss: nn.Module, images: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor,
                       optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The first part of :func:`train_step`: forward pass (which updates the BatchNorm buffers) and gradients; the
    weights and the optimiser state are not changed yet. Returns (detached loss, (T,) correct per step)."""
    loss, correct = stage_loss(images, labels, draws)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), correct


def apply_update(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
    """The second part of :func:`train_step`: one optimiser step with the gradients, then one schedule step."""
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
