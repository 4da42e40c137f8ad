"""The training state a stage keeps in its checkpoints, and continuing a run from it.

Checkpoints written by a stage are in the released format (:func:`feature_nets.checkpoint.save_checkpoint`) with
these extra entries: ``epoch`` (completed epochs), ``step_in_epoch`` (batches done in the next epoch; non-zero
only after an interruption), ``stage``, ``optimizer``, ``scheduler``, ``rng``, ``train_config``, ``train_samples``,
``best_top1``, ``history`` and ``anytime_classification`` (val top-1 % per step); after an interruption mid-epoch
also ``epoch_sums`` (the epoch's running loss and accuracy sums, :class:`~.rollback.EpochSums`); after a resume
with other settings ``forced_settings``. See docs/training.md.

A resume with settings that differ from the saved ``train_config`` (or another training-set size) is refused,
naming them (:func:`check_resume_settings`), unless forced; settings that do not change the numbers
(:data:`UNCOMPARED`) may differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import load_state_dicts, read_checkpoint_dict
from ..run_settings import jsonable, settings_changes, settings_refusal
from ..gfnet import GFNet
from .recipes import TrainConfig
from .rng import rng_state

__all__ = ["ResumePoint", "UNCOMPARED", "check_resume_settings", "load_training_state", "resume_training",
           "run_settings", "training_state"]

#: TrainConfig fields a resumed run may change: where and how it runs and what it shows, not what it computes
#: (with ``workers`` > 0 a mid-epoch resume is not exact anyway, see :mod:`.loop`).
UNCOMPARED = ("progress", "device", "workers", "log_every", "keep_epoch_checkpoints", "eval_batch_size")


@dataclass
class ResumePoint:
    """Where a run starts: completed epochs, batches done in the next one, and what was recorded so far.

    Attributes:
        epoch: completed epochs.
        step: batches of epoch ``epoch`` already done (non-zero after a mid-epoch interruption).
        best_top1: best last-step val top-1 so far (%), None before any validation.
        history: one record per completed epoch.
        rng: the global random state to restore before continuing a part-done epoch (None otherwise).
        epoch_sums: the part-done epoch's running sums (``EpochSums.to_dict``), None otherwise.
        forced_settings: the resumes with other settings so far (``--force-settings``), this one included.
        changed: the settings this resume changed, ``{name: (saved, now)}`` (forced; empty otherwise).
    """

    epoch: int = 0
    step: int = 0
    best_top1: float | None = None
    history: list[dict] = field(default_factory=list)
    rng: dict | None = None
    epoch_sums: dict | None = None
    forced_settings: list = field(default_factory=list)
    changed: dict = field(default_factory=dict)


def load_training_state(model: GFNet, path: str | os.PathLike) -> dict:
    """Load a checkpoint's weights into an existing model (in place) and return the raw checkpoint dict.

    Every key and shape is checked as :func:`~feature_nets.checkpoint.load_checkpoint` checks them (errors are
    :class:`~feature_nets.checkpoint.CheckpointError` subclasses); the policy is loaded when both the model
    and the file have one.
    """
    ckpt = read_checkpoint_dict(path)
    load_state_dicts(model, ckpt, path, with_policy=model.policy is not None and "policy" in ckpt)
    return ckpt


def resume_training(
    model: GFNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    path: Path,
    stage: int,
    settings: dict | None = None,
    force_settings: bool = False,
) -> ResumePoint:
    """Load weights, optimiser and schedule from a stage's ``last.pth.tar``; return where to continue.

    ``settings`` (:func:`run_settings` of the run now) are compared with the saved ones first, before anything is
    loaded (:func:`check_resume_settings`): a difference is a ``ValueError`` naming it unless ``force_settings``,
    which applies the new settings from the resumed step on and records them in ``forced_settings``.
    """
    if not path.exists():
        raise FileNotFoundError(f"resume=True but {path} does not exist; start without --resume")
    ckpt = read_checkpoint_dict(path)
    if "optimizer" not in ckpt or "epoch" not in ckpt:
        raise ValueError(f"{path} is a GFNet checkpoint without training state (optimizer, epoch); "
                         "resume needs the last.pth.tar a training stage wrote")
    if int(ckpt.get("stage", stage)) != stage:
        raise ValueError(f"{path} is from stage {ckpt.get('stage')}, not stage {stage}")
    step = int(ckpt.get("step_in_epoch", 0))
    forced, changes = list(ckpt.get("forced_settings") or []), {}
    if settings is not None:
        changes = check_resume_settings(ckpt, settings, path, force_settings)
        if changes:
            forced.append({"epoch": int(ckpt["epoch"]), "step_in_epoch": step,
                           "changes": {k: [old, new] for k, (old, new) in changes.items()}})
    load_state_dicts(model, ckpt, path, with_policy=model.policy is not None and "policy" in ckpt)
    opt_state, sched_state = _upgrade_two_groups(model, optimizer, ckpt["optimizer"], ckpt["scheduler"])
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(sched_state)
    if changes:
        _apply_hyperparameters(optimizer, scheduler, settings)
    return ResumePoint(epoch=int(ckpt["epoch"]), step=step, best_top1=ckpt.get("best_top1"),
                       history=list(ckpt.get("history", [])), rng=ckpt.get("rng") if step else None,
                       epoch_sums=ckpt.get("epoch_sums") if step else None, forced_settings=forced,
                       changed=changes)


def run_settings(cfg: TrainConfig, train_samples: int) -> dict:
    """What a run's numbers depend on, as compared on resume: the config but :data:`UNCOMPARED`, and the number of
    training samples."""
    return {**{k: v for k, v in cfg.to_dict().items() if k not in UNCOMPARED}, "train_samples": int(train_samples)}


def _apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                           settings: dict) -> None:
    """After a forced resume: the optimiser's hyper-parameters of the run now, not the loaded ones (loading the
    optimiser and schedule state restores the saved learning rates, weight decay and momentum). Each group's base
    rate is its ``lr_classifier`` / ``lr_backbone``, and its rate now that base times the schedule's factor at the
    resumed step (the schedule is built from the run's settings, so a new ``epochs`` reshapes it too)."""
    bases = []
    for group in optimizer.param_groups:
        base = settings["lr_classifier"] if group.get("name") == "classifier" else settings["lr_backbone"]
        group.update(weight_decay=settings["weight_decay"], momentum=settings["momentum"],
                     nesterov=settings["nesterov"], initial_lr=base)
        bases.append(base)
    scheduler.base_lrs = bases
    lambdas = getattr(scheduler, "lr_lambdas", None) or [lambda _: 1.0] * len(bases)
    for group, base, factor in zip(optimizer.param_groups, bases, lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def check_resume_settings(ckpt: dict, settings: dict, path, force: bool) -> dict[str, tuple]:
    """The settings that differ between the checkpoint's run and ``settings`` (:func:`run_settings`); a
    ``ValueError`` naming them unless ``force``. Only the entries both hold are compared (a checkpoint written before
    an entry was recorded, or by a version with other TrainConfig fields)."""
    saved_cfg = ckpt.get("train_config")
    if not isinstance(saved_cfg, dict):
        return {}
    saved = {k: v for k, v in saved_cfg.items() if k not in UNCOMPARED}
    if ckpt.get("train_samples") is not None:
        saved["train_samples"] = ckpt["train_samples"]
    now = jsonable(settings)
    saved, now = {k: v for k, v in saved.items() if k in now}, {k: v for k, v in now.items() if k in saved}
    changes = settings_changes(saved, now)
    if changes and not force:
        raise settings_refusal(changes, f"the run saved in {path}")
    return changes


def _upgrade_two_groups(model: GFNet, optimizer: torch.optim.Optimizer, opt_state: dict,
                        sched_state: dict) -> tuple[dict, dict]:
    """Optimiser and schedule state of a checkpoint written before the encoders had a group each.

    Such a file has two groups, ``encoders`` (the trained global encoder's parameters, then the local
    encoder's) and ``classifier``; the current layout is ``local_encoder``, ``global_encoder``, ``classifier``
    (:func:`~.optim.param_groups`). Anything else is returned unchanged.
    """
    saved, groups = opt_state.get("param_groups", []), optimizer.param_groups
    names = [g.get("name") for g in groups]
    if [g.get("name") for g in saved] != ["encoders", "classifier"]:
        return opt_state, sched_state
    enc, clf = saved
    if names == ["local_encoder", "classifier"]:  # frozen global encoder: the same parameters, renamed
        return {**opt_state, "param_groups": [{**enc, "name": "local_encoder"}, clf]}, sched_state
    if names[:2] != ["local_encoder", "global_encoder"]:
        return opt_state, sched_state
    n_global = len(groups[1]["params"])
    local = {**enc, "params": list(enc["params"][n_global:]), "name": "local_encoder"}
    glob = {**enc, "params": list(enc["params"][:n_global]), "name": "global_encoder"}
    opt_state = {**opt_state, "param_groups": [local, glob, clf]}
    sched_state = dict(sched_state)
    for key in ("base_lrs", "_last_lr"):
        if isinstance(sched_state.get(key), list) and len(sched_state[key]) == 2:
            sched_state[key] = [sched_state[key][0], *sched_state[key]]
    if isinstance(sched_state.get("lr_lambdas"), list) and len(sched_state["lr_lambdas"]) == 2:
        sched_state["lr_lambdas"] = [sched_state["lr_lambdas"][0], *sched_state["lr_lambdas"]]
    return opt_state, sched_state


def training_state(
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    step_in_epoch: int,
    best_top1: float | None,
    history: list[dict],
    anytime: list[float] | None,
    rng: dict | None = None,
    epoch_sums: dict | None = None,
    train_samples: int | None = None,
    forced_settings: list | None = None,
) -> dict:
    """The extra checkpoint entries that let a run continue: ``rng`` (the global random state; default: taken now)
    and ``epoch_sums`` are those of the last complete step when the run stopped mid-epoch."""
    extra = dict(epoch=epoch, step_in_epoch=step_in_epoch, stage=cfg.stage, optimizer=optimizer.state_dict(),
                 scheduler=scheduler.state_dict(), rng=rng if rng is not None else rng_state(),
                 train_config=cfg.to_dict(), best_top1=best_top1, history=history)
    if epoch_sums is not None:
        extra["epoch_sums"] = epoch_sums
    if train_samples is not None:
        extra["train_samples"] = int(train_samples)
    if forced_settings:
        extra["forced_settings"] = forced_settings
    if anytime is not None:
        extra["anytime_classification"] = list(anytime)
    return extra
