"""The stage-1 / stage-3 training loop: epochs of :func:`~.optim.train_step`, validation, checkpoints, resume.

Outputs under ``out_dir``: ``last.pth.tar`` (every epoch), ``best.pth.tar`` (best last-step val top-1),
optionally ``epoch_XXX.pth.tar``, TensorBoard scalars in ``tensorboard/``, and ``history.json``. ``resume=True``
continues from ``last.pth.tar`` exactly: model, optimizer, scheduler, epoch, position inside the epoch, RNG
state and the part-done epoch's loss and accuracy sums; a resume with other settings is refused unless
``force_settings`` (:func:`~.resume.check_resume_settings`). A KeyboardInterrupt (or SIGTERM) rolls back to the last
complete step (BatchNorm buffers, random state and sums, :mod:`.rollback`; the optimiser update is never cut in
half), saves ``last.pth.tar`` and is then re-raised. Only rank 0 writes files.

During training the glance is computed with ``cfg.glance_interpolation``; validation and every number stored
in checkpoints use the model's inference interpolation.

Determinism: the data order (sampler seed + epoch), the patch locations / policy noise (seed, epoch, step),
the DataLoader worker seeds and the global torch / numpy / random state (reseeded at every epoch start from
seed, epoch and rank) are functions of ``cfg.seed``. Resume is exact at epoch boundaries; after a mid-epoch
interruption it is exact with ``workers=0`` (with workers, augmentation draws of the resumed epoch differ).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import save_checkpoint
from ..files import atomic_write_text
from ..gfnet import GFNet
from ..madds import count_madds
from ..seeding import seed_worker
from ..signals import signals_held
from .distributed import DistContext, ShardSampler, convert_sync_batchnorm, finish_distributed, init_distributed
from .evaluation import evaluate_anytime
from .optim import apply_update, build_optimizer, build_schedule, loss_and_gradients, prepare_trainable, set_train_mode
from .progress import progress_bar
from .recipes import TrainConfig
from .resume import ResumePoint, resume_training, run_settings, training_state
from .rollback import EpochSums, StepBoundary
from .rng import mix_seed, reseed_everything, set_rng_state
from .stage_loss import StageLoss, focus_draws

__all__ = ["TrainResult", "train_stage", "train_stage1", "train_stage3"]


@dataclass
class TrainResult:
    """What a stage run returns: per-epoch history, the best last-step val top-1 and the checkpoint paths."""

    history: list[dict]
    best_top1: float | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    out_dir: Path


def train_stage1(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                 out_dir: str | os.PathLike, resume: bool = False, force_settings: bool = False) -> TrainResult:
    """Stage 1 (warm-up): encoders + classifier with uniformly random focus locations. ``resume`` continues the
    run of ``out_dir``; with settings other than its own only when ``force_settings`` (recorded)."""
    if cfg.stage != 1:
        raise ValueError(f"train_stage1 needs cfg.stage == 1, got {cfg.stage}")
    return _train(model, train_dataset, val_dataset, cfg, out_dir, resume, force_settings)


def train_stage3(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                 out_dir: str | os.PathLike, resume: bool = False, force_settings: bool = False) -> TrainResult:
    """Stage 3 (fine-tune): encoders + classifier with locations sampled from the fixed learned policy."""
    if cfg.stage != 3:
        raise ValueError(f"train_stage3 needs cfg.stage == 3 (e.g. TrainConfig.for_model(model, stage=3)), got {cfg.stage}")
    if model.policy is None:
        raise ValueError("stage 3 needs a model with a policy: load the stage-2 checkpoint's policy first")
    return _train(model, train_dataset, val_dataset, cfg, out_dir, resume, force_settings)


def train_stage(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                out_dir: str | os.PathLike, resume: bool = False, force_settings: bool = False) -> TrainResult:
    """Stage ``cfg.stage``: :func:`train_stage1` or :func:`train_stage3`."""
    train_fn = train_stage1 if cfg.stage == 1 else train_stage3
    return train_fn(model, train_dataset, val_dataset, cfg, out_dir, resume=resume, force_settings=force_settings)


def _train(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
           out_dir: str | os.PathLike, resume: bool, force_settings: bool = False) -> TrainResult:
    ctx = init_distributed(cfg.device)
    try:
        return _StageRun(model, train_dataset, val_dataset, cfg, Path(out_dir), ctx).run(resume, force_settings)
    finally:
        finish_distributed(ctx)


class _Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception so that the run saves before dying."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Interrupted(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _set_dataset_epoch(dataset: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on the dataset or on a dataset it wraps (Subset, …), if it has one."""
    seen = 0
    while dataset is not None and seen < 8:
        fn = getattr(dataset, "set_epoch", None)
        if callable(fn):
            fn(epoch)
            return
        dataset = getattr(dataset, "dataset", None)
        seen += 1


class _StageRun:
    """One call of a training stage: its set-up, then :meth:`run` over the epochs."""

    def __init__(self, model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                 out_dir: Path, ctx: DistContext) -> None:
        if cfg.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by the {ctx.world_size} processes")
        self.model, self.train_dataset, self.val_dataset, self.cfg, self.ctx = model, train_dataset, val_dataset, cfg, ctx
        self.per_rank = cfg.batch_size // ctx.world_size
        n_train = len(train_dataset)
        steps = n_train // cfg.batch_size
        if steps == 0:
            raise ValueError(f"the training set has {n_train} samples, fewer than one global batch of {cfg.batch_size}")
        if cfg.max_steps_per_epoch is not None:
            steps = min(steps, int(cfg.max_steps_per_epoch))
        self.steps = steps
        self.inference_interp = model.spec.config.glance_interpolation
        self.val_actions = cfg.val_actions or ("random" if cfg.stage == 1 else "policy")
        self.out_dir = out_dir
        self.last_path, self.best_path = out_dir / "last.pth.tar", out_dir / "best.pth.tar"

        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.madds = count_madds(model)
        model.to(ctx.device)
        prepare_trainable(model, cfg)
        if ctx.distributed and cfg.sync_batchnorm:
            bn_group = dist.new_group(list(range(ctx.world_size))) if ctx.device.type != "cuda" else None
            _, skipped = convert_sync_batchnorm(model, ctx.device, bn_group)
            if skipped and ctx.is_main:
                warnings.warn(f"{len(skipped)} BatchNorm layers of a type that cannot be synchronised on "
                              f"{ctx.device.type} keep per-rank statistics (e.g. {skipped[0]})")
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_schedule(self.optimizer, cfg, steps)
        self.best_top1: float | None = None
        self.history: list[dict] = []
        self.forced_settings: list = []
        self.writer = None
        # The last complete step (what Ctrl-C rolls back to) and when the running epoch part started.
        self.boundary: StepBoundary | None = None
        self.epoch_t0 = time.time()

    def run(self, resume: bool, force_settings: bool = False) -> TrainResult:
        model, cfg, ctx = self.model, self.cfg, self.ctx
        start = ResumePoint()
        if resume:
            start = resume_training(model, self.optimizer, self.scheduler, self.last_path, cfg.stage,
                                    settings=run_settings(cfg, len(self.train_dataset)), force_settings=force_settings)
            model.to(ctx.device)
            if start.changed and ctx.is_main:
                print(f"--force-settings: from epoch {start.epoch + 1}, step {start.step} on, "
                      + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in start.changed.items()), flush=True)
        self.best_top1, self.history, self.forced_settings = start.best_top1, start.history, start.forced_settings
        resumed_sums = EpochSums.from_dict(start.epoch_sums, model.T, ctx.world_size)
        if start.step:  # an interruption before the first step below saves what the checkpoint held
            self.boundary = StepBoundary.take(model, resumed_sums)
            self.boundary.rng = start.rng

        net = StageLoss.from_config(model, cfg)
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                      find_unused_parameters=(cfg.dsn_ratio == 0 or model.T == 1))
        if ctx.is_main:
            from ..extras import require

            require("tensorboard", "train", "training's TensorBoard logs")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))

        # Where the run stands, for the checkpoint an interruption writes.
        self.position = {"epoch": start.epoch, "step": start.step, "anytime": None}
        sampler = ShardSampler(self.train_dataset, ctx.world_size, ctx.rank, cfg.seed, self.steps, self.per_rank)
        try:
            with _sigterm_as_interrupt():
                for epoch in range(start.epoch, cfg.epochs):
                    first = start.step if epoch == start.epoch else 0
                    if start.rng is not None and epoch == start.epoch:
                        set_rng_state(start.rng)
                    else:
                        reseed_everything(mix_seed(cfg.seed, 0xE90C, epoch, ctx.rank))
                    sums = resumed_sums if (first and epoch == start.epoch) else EpochSums.empty(model.T)
                    record = self._train_epoch(net, sampler, epoch, first, sums)
                    model.glance_interpolation = self.inference_interp
                    anytime = self._validate(record)
                    self._finish_epoch(epoch, record, anytime)
        except KeyboardInterrupt:
            # Roll back to the last complete step (the forward pass may have moved the BatchNorm statistics and
            # drawn random numbers), save it (resumable at the batch where it stopped), then die.
            p = self.position
            if self.boundary is not None:
                self.boundary.restore(model)
            self._save([self.last_path], p["epoch"], p["step"], p["anytime"],
                       boundary=self.boundary if p["step"] else None)
            if self.writer is not None:
                self.writer.close()
            raise
        finally:
            model.glance_interpolation = self.inference_interp
        if self.writer is not None:
            self.writer.close()
        return TrainResult(history=self.history, best_top1=self.best_top1,
                           last_checkpoint=self.last_path if ctx.is_main else None,
                           best_checkpoint=self.best_path if (ctx.is_main and self.best_path.exists()) else None,
                           out_dir=self.out_dir)

    def _train_epoch(self, net: torch.nn.Module, sampler: ShardSampler, epoch: int, first: int,
                     sums: EpochSums) -> dict:
        """Train from batch ``first`` to the end of ``epoch``, adding to ``sums`` (those of batches before ``first``
        after a resume); the epoch's training record (all ranks summed)."""
        model, cfg, ctx = self.model, self.cfg, self.ctx
        with signals_held():
            self.position["epoch"], self.position["step"] = epoch, first
            self.boundary = StepBoundary.take(model, sums)
            self.epoch_t0 = time.time()
        _set_dataset_epoch(self.train_dataset, epoch)
        sampler.set_epoch(epoch)
        sampler.start_step = first
        loader = DataLoader(
            self.train_dataset, batch_size=self.per_rank, sampler=sampler, num_workers=cfg.workers,
            pin_memory=ctx.device.type == "cuda", drop_last=True,
            worker_init_fn=seed_worker if cfg.workers else None,
            generator=torch.Generator().manual_seed(mix_seed(cfg.seed, 0x10AD, epoch, first, ctx.rank)),
        )
        set_train_mode(model, cfg)  # train / eval modes and the training glance interpolation
        bar = progress_bar(total=self.steps, desc=f"stage {cfg.stage} epoch {epoch + 1}/{cfg.epochs}",
                           enabled=cfg.progress and ctx.is_main)
        bar.update(first)
        for step, (images, labels) in enumerate(loader, start=first):
            images = images.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            draws = focus_draws(cfg.stage, cfg.seed, epoch, step, cfg.batch_size, model.T)[ctx.rank :: ctx.world_size]
            loss, correct = loss_and_gradients(net, images, labels, draws.to(ctx.device), self.optimizer)
            lv = float(loss)
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1}, step {step + 1}; "
                                         "lower the learning rates")
            with signals_held():  # the update and what records it happen together: Ctrl-C waits for the end
                apply_update(self.optimizer, self.scheduler)
                sums.add(lv, labels.shape[0], correct)
                self.position["step"] = step + 1
                self.boundary = StepBoundary.take(model, sums)
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.3f}")
            gstep = epoch * self.steps + step
            if self.writer is not None and (gstep % cfg.log_every == 0 or step == self.steps - 1):
                self.writer.add_scalar("train/loss", lv, gstep)
                for g in self.optimizer.param_groups:
                    self.writer.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], gstep)
        bar.close()
        stats = torch.tensor([sums.loss, float(sums.seen), *sums.correct.tolist()], dtype=torch.float64)
        if ctx.distributed:
            stats = stats.to(ctx.device)
            dist.all_reduce(stats)
            stats = stats.cpu()
        denom = max(float(stats[1]), 1.0)
        return {"epoch": epoch + 1, "train_loss": float(stats[0]) / denom,
                "train_top1": [100.0 * float(c) / denom for c in stats[2:]], "train_seconds": sums.seconds + time.time() - self.epoch_t0}

    def _validate(self, record: dict) -> list[float] | None:
        """Val top-1 per step (added to ``record`` with the losses), or None without a validation set."""
        if self.val_dataset is None:
            return None
        cfg = self.cfg
        ev = evaluate_anytime(self.model, self.val_dataset, actions=self.val_actions,
                              batch_size=cfg.eval_batch_size or 2 * self.per_rank, seed=cfg.seed,
                              device=self.ctx.device, workers=cfg.workers, progress=cfg.progress, ctx=self.ctx)
        record.update(val_top1=ev.top1, val_loss=ev.loss)
        return ev.top1

    def _finish_epoch(self, epoch: int, record: dict, anytime: list[float] | None) -> None:
        """Record the epoch, log it, write the checkpoints and ``history.json``, print one line."""
        cfg = self.cfg
        improved = anytime is not None and (self.best_top1 is None or anytime[-1] > self.best_top1)
        with signals_held():  # the epoch is recorded, and the position moved past it, together
            self.history.append(record)
            self.position.update(epoch=epoch + 1, step=0, anytime=anytime)
            if improved:
                self.best_top1 = anytime[-1]
        if self.writer is not None:
            self._log_epoch(epoch, record, anytime)
        paths = [self.last_path]
        if improved or self.val_dataset is None:
            paths.append(self.best_path)
        if cfg.keep_epoch_checkpoints:
            paths.append(self.out_dir / f"epoch_{epoch + 1:03d}.pth.tar")
        self._save(paths, epoch + 1, 0, anytime)
        if self.ctx.is_main:
            atomic_write_text(self.out_dir / "history.json", json.dumps(self.history, indent=1))
            msg = (f"stage {cfg.stage} epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
                   f"({record['train_seconds']:.0f} s)")
            if anytime is not None:
                msg += ", val top-1 per step " + " ".join(f"{v:.2f}" for v in anytime)
            if cfg.progress:
                from tqdm.auto import tqdm

                tqdm.write(msg)
            else:
                print(msg, flush=True)

    def _log_epoch(self, epoch: int, record: dict, anytime: list[float] | None) -> None:
        w = self.writer
        w.add_scalar("train/epoch_loss", record["train_loss"], epoch + 1)
        for t, v in enumerate(record["train_top1"]):
            w.add_scalar(f"train/top1_step{t}", v, epoch + 1)
        if anytime is not None:
            for t, v in enumerate(anytime):
                w.add_scalar(f"val/top1_step{t}", v, epoch + 1)
            w.add_scalar("val/loss", float(np.mean(record["val_loss"])), epoch + 1)
        w.flush()

    def _save(self, paths: Iterable[Path], epoch_done: int, step_in_epoch: int, anytime: list[float] | None,
              boundary: StepBoundary | None = None) -> None:
        """Rank 0: a checkpoint with the training state at each path, numbers in the inference glance mode; mid-epoch
        (``boundary`` given) with the random state and epoch sums of that last complete step."""
        if not self.ctx.is_main:
            return
        sums = None
        if boundary is not None:
            sums = boundary.sums.to_dict(self.ctx.world_size)
            sums["seconds"] += time.time() - self.epoch_t0
        extra = training_state(self.cfg, self.optimizer, self.scheduler, epoch_done, step_in_epoch,
                               self.best_top1, self.history, anytime, rng=boundary.rng if boundary else None,
                               epoch_sums=sums, train_samples=len(self.train_dataset),
                               forced_settings=self.forced_settings)
        self.model.glance_interpolation = self.inference_interp
        for p in paths:
            save_checkpoint(self.model, p, madds=self.madds, **extra)
