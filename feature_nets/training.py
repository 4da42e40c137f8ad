"""The GFNet training stages as library code (gfnet-reference §5): stage 1, stage 3, encoder pretraining.

Usage (one process, or the same code under ``torchrun --nproc_per_node=N``)::

    model = build_gfnet("resnet50", patch_size=96, T=5)        # encoders: load pretrained backbone weights first
    cfg = TrainConfig.for_model(model, stage=1, batch_size=256)
    result = train_stage1(model, train_dataset, val_dataset, cfg, out_dir="runs/r50_stage1")
    # later, with a policy learned in stage 2:
    cfg3 = TrainConfig.for_model(model, stage=3)
    train_stage3(model, train_dataset, val_dataset, cfg3, out_dir="runs/r50_stage3")

Both stages minimise, per batch, ``(Σ_t CE(logits_t) + dsn_ratio · Σ_t CE(head_t)) / T`` where ``logits_t`` are
the model's step-t logits (for the glance: whatever :meth:`GFNet.glance` returns — the encoder's own head for
the RegNet / MobileNet / EfficientNet families, whose classifier gives no or unused step-0 logits) and
``head_t`` the own head of the encoder that made step t (global encoder at t = 0, local encoder after). The
loss is therefore well defined for the GRU and the cascade classifier alike; for families whose glance logits
come from the encoder head the two glance terms coincide (weight 1 + dsn_ratio), as in the original.

* Stage 1: focus locations uniform in [0, 1]².
* Stage 3: locations sampled from the (fixed, eval-mode) learned policy: a = clamp(mean + L·ε, 0, 1) with
  L = ``policy.scale_tril`` (the Gaussian of :meth:`PatchPolicy.sample`); the policy's GRU memory starts from
  zero for every batch. ε is drawn per *global* batch from the run's seed (not by ``PatchPolicy.sample``'s own
  draw) so that N processes sample exactly what one process would.

Optimisation: SGD (momentum 0.9, Nesterov), weight decay on every trained parameter, separate learning rates
for the encoders and the classifier, cosine decay to 0 stepped every iteration. The global encoder is frozen
(eval mode, no gradient) for MobileNet-V3 / EfficientNet (reference §5). During training the glance is
computed with ``cfg.glance_interpolation`` (bicubic, reference §5, for the released families; the small CNN
family trains with its own inference mode so that train and test see the same glance); validation and every
number stored in checkpoints use the model's inference interpolation.

Outputs under ``out_dir``: ``last.pth.tar`` (every epoch), ``best.pth.tar`` (best last-step val top-1),
optionally ``epoch_XXX.pth.tar``, TensorBoard scalars in ``tensorboard/``, and ``history.json``. Checkpoints
are in the released format (:func:`feature_nets.checkpoint.save_checkpoint`) with these extra entries:
``epoch`` (completed epochs), ``step_in_epoch`` (batches done in the next epoch; non-zero only after an
interruption), ``stage``, ``optimizer``, ``scheduler``, ``rng``, ``train_config``, ``best_top1``, ``history``
and ``anytime_classification`` (val top-1 % per step). ``resume=True`` continues from ``last.pth.tar``
exactly: model, optimizer, scheduler, epoch, position inside the epoch and RNG state. A KeyboardInterrupt
(or SIGTERM) saves ``last.pth.tar`` first and is then re-raised.

Distributed: when ``WORLD_SIZE`` > 1 (torchrun) the process group is created from the environment (gloo on
CPU, nccl on GPU). ``cfg.batch_size`` is the *global* batch; each of the N ranks takes ``batch_size / N``
samples of it through a :class:`~torch.utils.data.DistributedSampler` whose permutation does not depend on N,
and the random patch locations are drawn per global batch and sliced per rank. BatchNorm layers are
synchronised across ranks (``torch.nn.SyncBatchNorm`` on GPU; on CPU, where torch's SyncBatchNorm refuses to
run, :class:`CPUSyncBatchNorm` here), so batch statistics are those of the whole global batch and a run on N
processes equals the one-process run up to floating-point summation order. Only rank 0 writes files.

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
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .checkpoint import read_checkpoint_dict, save_checkpoint
from .classifiers import CascadeClassifier
from .gfnet import GFNet, StepOutput

__all__ = [
    "TrainConfig",
    "FAMILY_DEFAULTS",
    "TrainResult",
    "StageLoss",
    "EvalResult",
    "DistContext",
    "init_distributed",
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm",
    "train_stage1",
    "train_stage3",
    "evaluate_anytime",
    "pretrain_encoder",
    "copy_encoder_into",
    "load_training_state",
]

# --------------------------------------------------------------------------------------------- config

#: Per-family recipe of reference §5: (backbone lr, classifier lr, weight decay, dsn_ratio, epochs, freeze global).
#: ``small_cnn`` is this project's choice for the embedded default task (see TrainConfig.for_model).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnet": dict(lr_backbone=0.01, lr_classifier=0.1, weight_decay=1e-4, dsn_ratio=1.0, epochs=60, freeze_global=False),
    "densenet": dict(lr_backbone=0.01, lr_classifier=0.1, weight_decay=1e-4, dsn_ratio=1.0, epochs=60, freeze_global=False),
    "regnet": dict(lr_backbone=0.02, lr_classifier=0.1, weight_decay=5e-5, dsn_ratio=1.0, epochs=60, freeze_global=False),
    "efficientnet": dict(lr_backbone=0.005, lr_classifier=0.1, weight_decay=1e-4, dsn_ratio=5.0, epochs=30, freeze_global=True),
    "mobilenet": dict(lr_backbone=0.005, lr_classifier=0.1, weight_decay=1e-4, dsn_ratio=5.0, epochs=90, freeze_global=True),
    # Small CNN on cluttered Fashion-MNIST (encoders pretrained on clean items first; this project's choice):
    # both encoders trained, dsn_ratio 1 as ResNet. Higher learning rates than the paper's fine-tuning ones:
    # the encoders were pretrained for only 2 epochs on clean items, and 2-epoch trials on 20k canvases gave
    # last-step val top-1 40.6 % (0.02 / 0.1, batch 128), 44.8 % (0.05 / 0.1), 48.4 % (0.05 / 0.1, batch 64),
    # 51.0 % (0.1 / 0.2, batch 64), 52.6 % (0.2 / 0.4, batch 64). Weight decay 5e-4, batch 64, 16 epochs of
    # fresh clutter (full runs, test top-1 glance / last random step: 12 epochs 66.3 / 70.2, 16 epochs
    # 66.8 / 70.8; see gfnet_env/weights/MODEL_CARD.md).
    "small_cnn": dict(lr_backbone=0.1, lr_classifier=0.2, weight_decay=5e-4, dsn_ratio=1.0, epochs=16,
                      freeze_global=False, batch_size=64),
}
#: Classifier learning rate of stage 3 (reference §5), every family.
STAGE3_LR_CLASSIFIER = 0.01


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage (build it with :meth:`for_model` for the paper's recipe).

    Attributes:
        stage: 1 (random patches) or 3 (patches from the learned policy).
        epochs: passes over the training set.
        batch_size: *global* batch size (split evenly across distributed ranks).
        lr_backbone: learning rate of the encoders.
        lr_classifier: learning rate of the classifier (GRU / cascade).
        weight_decay: L2 weight decay of SGD, on every trained parameter.
        dsn_ratio: weight of the deep-supervision loss of the encoders' own heads.
        momentum, nesterov: SGD settings (0.9, Nesterov, as the paper).
        freeze_global: keep the global encoder fixed (eval mode, no gradient).
        glance_interpolation: interpolation of the glance while training ("bicubic" as the paper; None: the
            model's inference mode).
        seed: drives data order, patch locations, policy noise, worker seeds.
        workers: DataLoader worker processes per rank.
        eval_batch_size: batch of validation (default: the per-rank training batch × 2).
        max_steps_per_epoch: cap on optimiser steps per epoch (quick runs and tests); None: the whole set.
        sync_batchnorm: synchronise BatchNorm statistics across ranks (only matters with N > 1 processes).
        keep_epoch_checkpoints: also keep ``epoch_XXX.pth.tar`` for every epoch.
        log_every: TensorBoard training scalars every this many steps.
        progress: tqdm progress bars (rank 0 only).
        device: "cpu", "cuda", "cuda:1"…; None: the local GPU when there is one, else CPU.
        val_actions: patch locations for validation: "random" (stage 1 default, seeded, the same every epoch)
            or "policy" (the policy's mean, stage 3 default).
    """

    stage: int = 1
    epochs: int = 1
    batch_size: int = 256
    lr_backbone: float = 0.01
    lr_classifier: float = 0.1
    weight_decay: float = 1e-4
    dsn_ratio: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    freeze_global: bool = False
    glance_interpolation: str | None = "bicubic"
    seed: int = 0
    workers: int = 0
    eval_batch_size: int | None = None
    max_steps_per_epoch: int | None = None
    sync_batchnorm: bool = True
    keep_epoch_checkpoints: bool = False
    log_every: int = 20
    progress: bool = True
    device: str | None = None
    val_actions: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in (1, 3):
            raise ValueError(f"stage must be 1 or 3 (stage 2, the policy, is trained by agents.paper_ppo), got {self.stage}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} / {self.batch_size}")
        if self.glance_interpolation not in (None, "bilinear", "bicubic", "nearest", "area"):
            raise ValueError(f"glance_interpolation must be bilinear, bicubic or None, got {self.glance_interpolation!r}")
        if self.val_actions not in (None, "random", "policy", "centre"):
            raise ValueError(f"val_actions must be 'random', 'policy' or 'centre', got {self.val_actions!r}")

    @classmethod
    def for_model(cls, model: GFNet, stage: int = 1, **overrides: Any) -> "TrainConfig":
        """The paper's recipe for the model's backbone family (reference §5), with ``overrides`` applied.

        Stage 3 uses the classifier lr 0.01 of the paper and the family's other settings. The small CNN family
        keeps its own inference glance interpolation (bilinear) while training.
        """
        family = model.spec.config.family
        if family not in FAMILY_DEFAULTS:
            raise ValueError(f"no training recipe for family {family!r}; known: {sorted(FAMILY_DEFAULTS)}")
        d = dict(FAMILY_DEFAULTS[family])
        if family == "small_cnn":
            d["glance_interpolation"] = None
            if stage == 3:
                d["epochs"] = 3
        if stage == 3:
            d["lr_classifier"] = STAGE3_LR_CLASSIFIER
        d["stage"] = stage
        known = {f.name for f in fields(cls)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise TypeError(f"unknown TrainConfig fields {bad}; known: {sorted(known)}")
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------- distributed


@dataclass
class DistContext:
    """Where this process stands: rank, world size, device, and whether we created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (gloo on CPU, nccl on GPU); else one process.

    An already initialised process group is reused (and left alone by :func:`_finish_distributed`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and world > 1:
            dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    created = False
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    elif world > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://")
        created = True
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, created_group=created)


def _finish_distributed(ctx: DistContext) -> None:
    if ctx.created_group and dist.is_initialized():
        import gc

        gc.collect()  # drop the DDP wrapper (its reducer holds the process group) before the group goes
        dist.barrier()
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is the all-reduced gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        y = x.clone()
        dist.all_reduce(y, group=group)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.contiguous().clone()
        dist.all_reduce(g, group=ctx.group)
        return g, None


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole distributed batch, on any device/backend.

    torch's ``SyncBatchNorm`` only runs on accelerators; this one uses two differentiable all-reduces
    (a differentiable all-reduce) per call — the channel sums, then the centred squares —
    so it works with gloo on CPU. The gradient flows through the reductions (their backward is again an
    all-reduce), as in torch's version.
    Without an initialised process group (or in eval mode) it is a plain BatchNorm2d; keys and buffers are the
    same, so checkpoints do not change.
    """

    process_group = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1):
            return super().forward(x)
        self._check_input_dim(x)
        group = self.process_group or dist.group.WORLD
        c = x.shape[1]
        n_local = x.numel() // c
        count = torch.tensor([float(n_local)], device=x.device, dtype=x.dtype)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dim=(0, 2, 3)), count]), group)
        n = sums[c]
        mean = sums[:c] / n
        xc = x - mean.view(1, c, 1, 1)
        var = _AllReduceSum.apply(xc.pow(2).sum(dim=(0, 2, 3)), group) / n
        y = xc * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                nf = float(n.item())
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (nf / max(nf - 1.0, 1.0)), alpha=m)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device, process_group=None) -> tuple[nn.Module, list[str]]:
    """Make BatchNorm layers synchronise across ranks.

    On CUDA: ``timm.layers.convert_sync_batchnorm`` (handles timm's BatchNormAct2d) or torch's converter.
    Elsewhere: plain ``nn.BatchNorm2d`` layers become :class:`CPUSyncBatchNorm` (in place, same parameters
    and buffers); other BatchNorm variants (e.g. timm's BatchNormAct2d) stay per-rank and are listed in the
    returned names so the caller can warn.
    """
    if device.type == "cuda":
        try:
            from timm.layers import convert_sync_batchnorm as timm_convert

            return timm_convert(module, process_group), []
        except ImportError:  # pragma: no cover
            return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group), []
    skipped: list[str] = []
    for name, child in list(module.named_modules()):
        if type(child) is nn.BatchNorm2d:
            child.__class__ = CPUSyncBatchNorm
            child.process_group = process_group
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CPUSyncBatchNorm):
            skipped.append(name)
    return module, skipped


# --------------------------------------------------------------------------------------------- helpers


def _mix(*ints: int) -> int:
    """A 63-bit seed from several ints (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(i) & 0xFFFFFFFF for i in ints]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _reseed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


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


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class _Indexed(Dataset):
    """(x, y) dataset -> (x, y, index)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i][:2]
        return x, y, i


class _ShardSampler(DistributedSampler):
    """DistributedSampler (shuffled, seed + epoch) limited to whole global batches, able to start mid-epoch.

    Its permutation does not depend on the number of ranks: rank r gets positions r, r + N, r + 2N, … of it,
    so the k-th per-rank batches of all ranks together are exactly the k-th batch of a one-process run.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, steps: int, per_rank_batch: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.steps = steps
        self.per_rank_batch = per_rank_batch
        self.start_step = 0

    def __iter__(self):
        idx = list(super().__iter__())
        return iter(idx[self.start_step * self.per_rank_batch : self.steps * self.per_rank_batch])

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.per_rank_batch


def _bar(iterable=None, total=None, desc="", enabled=True, leave=False):
    if not enabled:
        return iterable if iterable is not None else _NullBar()
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)


class _NullBar:
    def update(self, *a, **k):
        pass

    def set_postfix(self, *a, **k):
        pass

    def close(self):
        pass


# --------------------------------------------------------------------------------------------- the loss


class StageLoss(nn.Module):
    """One stage-1 / stage-3 forward pass of a GFNet over all T steps, returning the loss.

    ``forward(images, labels, draws)`` with ``draws`` (B, T−1, 2): the patch locations themselves (stage 1) or
    the standard-normal noise of the policy's Gaussian (stage 3). Returns ``(loss, correct)``: the scalar loss
    of the module docstring and the (T,) number of correct predictions per step (no gradient).
    """

    def __init__(self, model: GFNet, stage: int, dsn_ratio: float) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.dsn_ratio = float(dsn_ratio)
        if stage == 3 and model.policy is None:
            raise ValueError("stage 3 needs a model with a policy (load one with --policy-checkpoint)")

    def forward(self, images: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor):
        m = self.model
        T = m.T
        out = m.glance(images)
        cls_terms = [F.cross_entropy(out.logits, labels)]
        dsn_terms = [F.cross_entropy(m.global_encoder.head(out.pooled), labels)]
        correct = [(out.logits.detach().argmax(1) == labels).sum()]
        hidden = None
        for t in range(1, T):
            if self.stage == 1:
                actions = draws[:, t - 1]
            else:
                actions, hidden = _policy_actions(m, out, hidden, draws[:, t - 1])
            out = m.focus(images, actions, out)
            cls_terms.append(F.cross_entropy(out.logits, labels))
            if self.dsn_ratio:
                dsn_terms.append(F.cross_entropy(m.local_encoder.head(out.pooled), labels))
            correct.append((out.logits.detach().argmax(1) == labels).sum())
        loss = sum(cls_terms)
        if self.dsn_ratio:
            loss = loss + self.dsn_ratio * sum(dsn_terms)
        return loss / T, torch.stack(correct)


@torch.no_grad()
def _policy_actions(model: GFNet, prev: StepOutput, hidden, noise: torch.Tensor | None):
    """The fixed policy's action for the next step: its mean, plus L·noise when ``noise`` is given, in [0, 1]."""
    policy = model.policy
    fmap = prev.feature_map.detach()
    if hidden is None:
        hidden = policy.initial_state(fmap.shape[0], device=fmap.device)
    mean, _value, hidden = policy.step(fmap, hidden)
    if noise is None:
        return mean, hidden
    noise = noise.to(device=mean.device, dtype=mean.dtype)
    return (mean + noise @ policy.scale_tril(mean).T).clamp(0.0, 1.0), hidden


def _draws(stage: int, seed: int, epoch: int, step: int, global_batch: int, T: int) -> torch.Tensor:
    """(global_batch, T−1, 2) patch locations (stage 1) or policy noise (stage 3) of one global batch."""
    g = torch.Generator().manual_seed(_mix(seed, 0x5EED, stage, epoch, step))
    shape = (global_batch, max(T - 1, 0), 2)
    return torch.rand(shape, generator=g) if stage == 1 else torch.randn(shape, generator=g)


# --------------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Per-step results over a dataset: top-1 (%) and mean cross-entropy of the model's logits, per step."""

    top1: list[float]
    loss: list[float]
    n: int

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.loss))


Chooser = Callable[[StepOutput, Any, torch.Tensor], tuple[torch.Tensor, Any]]


def random_actions_table(n: int, T: int, seed: int) -> torch.Tensor:
    """(n, T−1, 2) uniform patch locations for sample indices 0..n−1 (the same for any batch size)."""
    g = torch.Generator().manual_seed(_mix(seed, 0xE7A1))
    return torch.rand((n, max(T - 1, 0), 2), generator=g)


@torch.no_grad()
def evaluate_anytime(
    model: GFNet,
    dataset: Dataset,
    actions: str | Chooser = "random",
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    workers: int = 0,
    T: int | None = None,
    progress: bool = False,
    ctx: DistContext | None = None,
) -> EvalResult:
    """Top-1 after every step of the model on a dataset of (image, label), in eval mode.

    Args:
        model: the GFNet (its current glance interpolation is used).
        dataset: (image (3, S, S), label) samples.
        actions: ``"random"`` (uniform, a fixed table per sample index from ``seed``), ``"centre"``,
            ``"policy"`` (the stored policy's mean, GRU memory from zero per batch), ``"policy-sample"``
            (sampled from it, noise from ``seed``), or a function ``(previous StepOutput, memory, indices (B,))
            -> (actions (B, 2), memory)`` (memory is None before the first focus step).
        batch_size: evaluation batch (per rank).
        seed: seed of the random locations.
        device: default: the model's.
        workers: DataLoader workers.
        T: steps (default the model's).
        ctx: distributed context; the dataset is sharded over ranks and the counts summed (exact).
    """
    T = model.T if T is None else T
    ctx = ctx or DistContext()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_total = len(dataset)
    table = random_actions_table(n_total, T, seed) if actions in ("random", "policy-sample") else None
    if table is not None and actions == "policy-sample":
        g = torch.Generator().manual_seed(_mix(seed, 0x9013))
        table = torch.randn(table.shape, generator=g)
    indices = list(range(ctx.rank, n_total, ctx.world_size))
    ds = Subset(_Indexed(dataset), indices) if ctx.world_size > 1 else _Indexed(dataset)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_seed_worker if workers else None)
    correct = torch.zeros(T, dtype=torch.float64)
    loss_sum = torch.zeros(T, dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    bar = _bar(loader, total=len(loader), desc="eval", enabled=progress and ctx.is_main)
    for images, labels, idx in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        out = model.glance(images)
        outs = [out]
        memory = None
        for t in range(1, T):
            if callable(actions):
                a, memory = actions(out, memory, idx)
            elif actions == "random":
                a = table[idx, t - 1]
            elif actions == "centre":
                a = torch.full((images.shape[0], 2), 0.5)
            elif actions == "policy":
                a, memory = _policy_actions(model, out, memory, None)
            elif actions == "policy-sample":
                a, memory = _policy_actions(model, out, memory, table[idx, t - 1])
            else:
                raise ValueError(f"unknown actions {actions!r}; use 'random', 'centre', 'policy', 'policy-sample' or a function")
            out = model.focus(images, a.to(device), out)
            outs.append(out)
        for t, o in enumerate(outs):
            correct[t] += (o.logits.argmax(1) == labels).sum().item()
            loss_sum[t] += F.cross_entropy(o.logits.float(), labels, reduction="sum").item()
        count += labels.shape[0]
    if ctx.world_size > 1:
        stats = torch.cat([correct, loss_sum, count.view(1)]).to(device)
        dist.all_reduce(stats)
        stats = stats.cpu()
        correct, loss_sum, count = stats[:T], stats[T : 2 * T], stats[2 * T]
    model.train(was_training)
    n = max(float(count), 1.0)
    return EvalResult(top1=[100.0 * float(c) / n for c in correct], loss=[float(s) / n for s in loss_sum], n=int(count))


# --------------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a stage run returns: per-epoch history, the best last-step val top-1 and the checkpoint paths."""

    history: list[dict]
    best_top1: float | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    out_dir: Path


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


def _param_groups(model: GFNet, cfg: TrainConfig) -> list[dict]:
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


def _prepare_trainable(model: GFNet, cfg: TrainConfig) -> None:
    """requires_grad: policy never (stages 1 and 3), global encoder unless frozen, cascade heads beyond T never."""
    for p in model.parameters():
        p.requires_grad_(True)
    if model.policy is not None:
        model.policy.requires_grad_(False)
    if cfg.freeze_global:
        model.global_encoder.requires_grad_(False)
    if isinstance(model.classifier, CascadeClassifier):
        for k in range(max(model.T, 1) + 1, model.classifier.max_steps + 1):
            getattr(model.classifier, f"fc_{k}").requires_grad_(False)


def _set_train_mode(model: GFNet, cfg: TrainConfig) -> None:
    model.train()
    if cfg.freeze_global:
        model.global_encoder.eval()
    if model.policy is not None:
        model.policy.eval()


def load_training_state(model: GFNet, path: str | os.PathLike) -> dict:
    """Load a checkpoint's weights into an existing model (in place) and return the raw checkpoint dict."""
    ckpt = read_checkpoint_dict(path)
    strip = lambda sd: {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}  # noqa: E731
    model.global_encoder.load_official_state_dict(strip(ckpt["model_prime_state_dict"]))
    model.local_encoder.load_official_state_dict(strip(ckpt["model_state_dict"]))
    model.classifier.load_state_dict(ckpt["fc"])
    if model.policy is not None and "policy" in ckpt:
        model.policy.load_state_dict(ckpt["policy"])
    return ckpt


def train_stage1(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                 out_dir: str | os.PathLike, resume: bool = False) -> TrainResult:
    """Stage 1 (warm-up): encoders + classifier with uniformly random focus locations. See the module docstring."""
    if cfg.stage != 1:
        raise ValueError(f"train_stage1 needs cfg.stage == 1, got {cfg.stage}")
    return _train(model, train_dataset, val_dataset, cfg, out_dir, resume)


def train_stage3(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                 out_dir: str | os.PathLike, resume: bool = False) -> TrainResult:
    """Stage 3 (fine-tune): encoders + classifier with locations sampled from the fixed learned policy."""
    if cfg.stage != 3:
        raise ValueError(f"train_stage3 needs cfg.stage == 3 (e.g. TrainConfig.for_model(model, stage=3)), got {cfg.stage}")
    if model.policy is None:
        raise ValueError("stage 3 needs a model with a policy: load the stage-2 checkpoint's policy first")
    return _train(model, train_dataset, val_dataset, cfg, out_dir, resume)


def _train(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
           out_dir: str | os.PathLike, resume: bool) -> TrainResult:
    out_dir = Path(out_dir)
    ctx = init_distributed(cfg.device)
    try:
        return _train_inner(model, train_dataset, val_dataset, cfg, out_dir, resume, ctx)
    finally:
        _finish_distributed(ctx)


def _train_inner(model: GFNet, train_dataset: Dataset, val_dataset: Dataset | None, cfg: TrainConfig,
                 out_dir: Path, resume: bool, ctx: DistContext) -> TrainResult:
    from .madds import count_madds

    if cfg.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} (global) is not divisible by the {ctx.world_size} processes")
    per_rank = cfg.batch_size // ctx.world_size
    n_train = len(train_dataset)
    steps = n_train // cfg.batch_size
    if steps == 0:
        raise ValueError(f"the training set has {n_train} samples, fewer than one global batch of {cfg.batch_size}")
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, int(cfg.max_steps_per_epoch))
    T = model.T
    inference_interp = model.spec.config.glance_interpolation
    train_interp = cfg.glance_interpolation or inference_interp
    val_actions = cfg.val_actions or ("random" if cfg.stage == 1 else "policy")

    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    madds = count_madds(model)
    model.to(ctx.device)
    _prepare_trainable(model, cfg)
    if ctx.distributed and cfg.sync_batchnorm:
        bn_group = dist.new_group(list(range(ctx.world_size))) if ctx.device.type != "cuda" else None
        _, skipped = convert_sync_batchnorm(model, ctx.device, bn_group)
        if skipped and ctx.is_main:
            import warnings

            warnings.warn(f"{len(skipped)} BatchNorm layers of a type that cannot be synchronised on "
                          f"{ctx.device.type} keep per-rank statistics (e.g. {skipped[0]})")
    optimizer = torch.optim.SGD(_param_groups(model, cfg), lr=cfg.lr_backbone, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total_steps) / total_steps)))

    start_epoch, start_step, best_top1, history, resumed_rng = 0, 0, None, [], None
    last_path, best_path = out_dir / "last.pth.tar", out_dir / "best.pth.tar"
    if resume:
        if not last_path.exists():
            raise FileNotFoundError(f"resume=True but {last_path} does not exist; start without --resume")
        ckpt = load_training_state(model, last_path)
        if "optimizer" not in ckpt or "epoch" not in ckpt:
            raise ValueError(f"{last_path} is a GFNet checkpoint without training state (optimizer, epoch); "
                             "resume needs the last.pth.tar a training stage wrote")
        if int(ckpt.get("stage", cfg.stage)) != cfg.stage:
            raise ValueError(f"{last_path} is from stage {ckpt.get('stage')}, not stage {cfg.stage}")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, start_step = int(ckpt["epoch"]), int(ckpt.get("step_in_epoch", 0))
        best_top1 = ckpt.get("best_top1")
        history = list(ckpt.get("history", []))
        resumed_rng = ckpt.get("rng") if start_step else None
        model.to(ctx.device)

    net = StageLoss(model, cfg.stage, cfg.dsn_ratio)
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                  find_unused_parameters=(cfg.dsn_ratio == 0 or T == 1))

    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))

    state = {"epoch": start_epoch, "step": start_step, "anytime": None}

    def save(path_list: Iterable[Path], epoch_done: int, step_in_epoch: int, anytime) -> None:
        if not ctx.is_main:
            return
        extra = dict(epoch=epoch_done, step_in_epoch=step_in_epoch, stage=cfg.stage,
                     optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=_rng_state(),
                     train_config=cfg.to_dict(), best_top1=best_top1, history=history)
        if anytime is not None:
            extra["anytime_classification"] = list(anytime)
        model.glance_interpolation = inference_interp
        for p in path_list:
            save_checkpoint(model, p, madds=madds, **extra)

    sampler = _ShardSampler(train_dataset, ctx.world_size, ctx.rank, cfg.seed, steps, per_rank)
    result_anytime = None
    try:
        with _sigterm_as_interrupt():
            for epoch in range(start_epoch, cfg.epochs):
                state["epoch"], state["step"] = epoch, start_step if epoch == start_epoch else 0
                first = state["step"]
                if resumed_rng is not None and epoch == start_epoch:
                    _set_rng_state(resumed_rng)
                else:
                    _reseed_everything(_mix(cfg.seed, 0xE90C, epoch, ctx.rank))
                _set_dataset_epoch(train_dataset, epoch)
                sampler.set_epoch(epoch)
                sampler.start_step = first
                loader = DataLoader(
                    train_dataset, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                    pin_memory=ctx.device.type == "cuda", drop_last=True,
                    worker_init_fn=_seed_worker if cfg.workers else None,
                    generator=torch.Generator().manual_seed(_mix(cfg.seed, 0x10AD, epoch, first, ctx.rank)),
                )
                _set_train_mode(model, cfg)
                model.glance_interpolation = train_interp
                loss_sum, seen, correct_sum = 0.0, 0, torch.zeros(T, dtype=torch.float64)
                t0 = time.time()
                bar = _bar(total=steps, desc=f"stage {cfg.stage} epoch {epoch + 1}/{cfg.epochs}",
                           enabled=cfg.progress and ctx.is_main)
                bar.update(first)
                for step, (images, labels) in enumerate(loader, start=first):
                    images = images.to(ctx.device, non_blocking=True)
                    labels = labels.to(ctx.device, non_blocking=True)
                    draws = _draws(cfg.stage, cfg.seed, epoch, step, cfg.batch_size, T)[ctx.rank :: ctx.world_size]
                    loss, correct = net(images, labels, draws.to(ctx.device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    state["step"] = step + 1
                    lv = float(loss.detach())
                    if not math.isfinite(lv):
                        raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1}, step {step + 1}; "
                                                 "lower the learning rates")
                    loss_sum += lv * labels.shape[0]
                    seen += labels.shape[0]
                    correct_sum += correct.detach().double().cpu()
                    bar.update(1)
                    bar.set_postfix(loss=f"{lv:.3f}")
                    gstep = epoch * steps + step
                    if writer is not None and (gstep % cfg.log_every == 0 or step == steps - 1):
                        writer.add_scalar("train/loss", lv, gstep)
                        for g in optimizer.param_groups:
                            writer.add_scalar(f"lr/{g.get('name', 'group')}", g["lr"], gstep)
                bar.close()
                train_stats = torch.tensor([loss_sum, float(seen), *correct_sum.tolist()], dtype=torch.float64)
                if ctx.distributed:
                    train_stats = train_stats.to(ctx.device)
                    dist.all_reduce(train_stats)
                    train_stats = train_stats.cpu()
                denom = max(float(train_stats[1]), 1.0)
                record = {"epoch": epoch + 1, "train_loss": float(train_stats[0]) / denom,
                          "train_top1": [100.0 * float(c) / denom for c in train_stats[2:]],
                          "train_seconds": time.time() - t0}
                model.glance_interpolation = inference_interp
                anytime = None
                if val_dataset is not None:
                    ev = evaluate_anytime(model, val_dataset, actions=val_actions,
                                          batch_size=cfg.eval_batch_size or 2 * per_rank, seed=cfg.seed,
                                          device=ctx.device, workers=cfg.workers, progress=cfg.progress, ctx=ctx)
                    anytime = ev.top1
                    record.update(val_top1=ev.top1, val_loss=ev.loss)
                history.append(record)
                state["epoch"], state["step"], state["anytime"] = epoch + 1, 0, anytime
                result_anytime = anytime
                improved = anytime is not None and (best_top1 is None or anytime[-1] > best_top1)
                if improved:
                    best_top1 = anytime[-1]
                if writer is not None:
                    writer.add_scalar("train/epoch_loss", record["train_loss"], epoch + 1)
                    for t, v in enumerate(record["train_top1"]):
                        writer.add_scalar(f"train/top1_step{t}", v, epoch + 1)
                    if anytime is not None:
                        for t, v in enumerate(anytime):
                            writer.add_scalar(f"val/top1_step{t}", v, epoch + 1)
                        writer.add_scalar("val/loss", float(np.mean(record["val_loss"])), epoch + 1)
                    writer.flush()
                paths = [last_path]
                if improved or (val_dataset is None):
                    paths.append(best_path)
                if cfg.keep_epoch_checkpoints:
                    paths.append(out_dir / f"epoch_{epoch + 1:03d}.pth.tar")
                save(paths, epoch + 1, 0, anytime)
                if ctx.is_main:
                    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
                    msg = (f"stage {cfg.stage} epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f} "
                           f"({record['train_seconds']:.0f} s)")
                    if anytime is not None:
                        msg += ", val top-1 per step " + " ".join(f"{v:.2f}" for v in anytime)
                    if cfg.progress:
                        from tqdm.auto import tqdm

                        tqdm.write(msg)
                    else:
                        print(msg, flush=True)
                start_step = 0
    except KeyboardInterrupt:
        # Save what we have (the in-progress epoch is resumable at the batch where it stopped), then die.
        save([last_path], state["epoch"], state["step"], state["anytime"])
        if writer is not None:
            writer.close()
        raise
    finally:
        model.glance_interpolation = inference_interp
    if writer is not None:
        writer.close()
    return TrainResult(history=history, best_top1=best_top1,
                       last_checkpoint=last_path if ctx.is_main else None,
                       best_checkpoint=best_path if (ctx.is_main and best_path.exists()) else None,
                       out_dir=out_dir)


# --------------------------------------------------------------------------------------------- pretraining


def pretrain_encoder(
    encoder: nn.Module,
    items_dataset: Dataset,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    workers: int = 0,
    max_shift: int = 0,
    val_dataset: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train an encoder (features + its own head) as a plain classifier on clean items — the analogue of
    the ImageNet-pretrained backbones GFNet starts from. SGD (momentum 0.9, Nesterov), cosine decay.

    Args:
        encoder: an :class:`~feature_nets.encoder.Encoder` (trained in place).
        items_dataset: (image (3, P, P), label) samples, e.g. :class:`FashionMNISTItems`.
        max_shift: random translation of up to this many pixels (background-padded), 0 = none.
        val_dataset: optional held-out items; its top-1 is reported per epoch.

    Returns:
        one dict per epoch: loss, train top-1, val top-1 (when given), seconds.
    """
    device = torch.device(device) if device is not None else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    encoder.to(device)
    opt = torch.optim.SGD(encoder.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    loader = DataLoader(items_dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(_mix(seed, 0x9E7)),
                        worker_init_fn=_seed_worker if workers else None)
    total = max(epochs * len(loader), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total) / total)))
    g = torch.Generator().manual_seed(_mix(seed, 0x5A1F))
    out = []
    for epoch in range(epochs):
        encoder.train()
        t0, loss_sum, correct, n = time.time(), 0.0, 0, 0
        for x, y in _bar(loader, total=len(loader), desc=f"pretrain {epoch + 1}/{epochs}", enabled=progress):
            if max_shift > 0:
                x = _random_shift(x, max_shift, g)
            x, y = x.to(device), y.to(device)
            pooled, _ = encoder(x)
            logits = encoder.head(pooled)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * y.shape[0]
            correct += int((logits.argmax(1) == y).sum())
            n += y.shape[0]
        rec = {"epoch": epoch + 1, "loss": loss_sum / max(n, 1), "train_top1": 100.0 * correct / max(n, 1),
               "seconds": time.time() - t0}
        if val_dataset is not None:
            rec["val_top1"] = _encoder_top1(encoder, val_dataset, batch_size * 2, device)
        out.append(rec)
        if log is not None:
            log(f"pretrain epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"))
    encoder.eval()
    return out


def _random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    from .crop import crop_patches

    b, _, h, w = x.shape
    bg = x.amin(dim=(1, 2, 3), keepdim=True)
    padded = F.pad(x - bg, (max_shift,) * 4) + bg
    corners = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=g)
    return crop_patches(padded, corners, h)


@torch.no_grad()
def _encoder_top1(encoder: nn.Module, dataset: Dataset, batch_size: int, device) -> float:
    encoder.eval()
    correct = n = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        pooled, _ = encoder(x.to(device))
        correct += int((encoder.head(pooled).argmax(1).cpu() == y).sum())
        n += y.shape[0]
    return 100.0 * correct / max(n, 1)


def copy_encoder_into(model: GFNet, encoder: nn.Module) -> None:
    """Load one (pretrained) encoder's weights into both the global and the local encoder of a GFNet."""
    sd = {k: v.detach().clone() for k, v in encoder.official_state_dict().items()}
    model.global_encoder.load_official_state_dict(sd)
    model.local_encoder.load_official_state_dict({k: v.clone() for k, v in sd.items()})
