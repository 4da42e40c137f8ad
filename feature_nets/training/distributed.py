"""Running on N processes (torchrun): the process group, exchanging results, synchronised BatchNorm, data shards.

The one home of the project's process-group setup: ``gfnet train-features`` (stage 1), ``gfnet train-policy``
(stage 2, :mod:`agents.paper_ppo.train`) and ``gfnet benchmark`` (:mod:`agents.benchmark.shards`) all join it
through :func:`init_distributed` / :func:`finish_distributed`. When ``WORLD_SIZE`` > 1 the process group is
created from the environment torchrun sets (gloo on CPU, nccl on GPU; each rank on ``cuda:LOCAL_RANK`` where there
are GPUs). :func:`gather_objects` and :func:`broadcast_object` exchange picklable results between the ranks;
:func:`average_gradients` averages a module's gradients over them (what DDP does, for code that calls other
methods than ``forward``).

Stage 1: the global batch is split over the ranks by :class:`ShardSampler`, whose permutation does not depend on
N, and BatchNorm statistics are those of the whole global batch (:func:`convert_sync_batchnorm`), so a run on N
processes equals the one-process run up to floating-point summation order.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from ..devices import resolve_device

__all__ = [
    "DistContext",
    "init_distributed",
    "finish_distributed",
    "torchrun_group",
    "gather_objects",
    "broadcast_object",
    "average_gradients",
    "CPUSyncBatchNorm",
    "convert_sync_batchnorm",
    "ShardSampler",
]


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

    ``device`` None means this rank's GPU (``cuda:LOCAL_RANK``) when there is one, else the CPU. An already
    initialised process group is reused (and left alone by :func:`finish_distributed`).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device or "auto")
    if dev.type == "cuda" and dev.index is None and (device is None or world > 1):
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


def finish_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.created_group and dist.is_initialized():
        gc.collect()  # drop the DDP wrapper (its reducer holds the process group) before the group goes
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def torchrun_group(device: str | None = None) -> Iterator[DistContext | None]:
    """The process group for a command that also runs in one process: under torchrun (``WORLD_SIZE`` > 1) the
    :class:`DistContext` of :func:`init_distributed` (left with :func:`finish_distributed` when the block ends
    normally; after an error this process just leaves, so that torchrun stops the other ranks instead of this one
    waiting for them at a barrier), else None — one process, nothing initialised, its device untouched."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield None
        return
    ctx = init_distributed(device)
    yield ctx
    finish_distributed(ctx)


def _group_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` in one process). Any picklable object
    (tensors travel pickled, so send CPU tensors: nccl moves the bytes through this rank's GPU)."""
    if not _group_active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process); e.g. an error one rank met, so that
    every rank stops with the same message instead of waiting for it."""
    if not _group_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients(module: nn.Module) -> None:
    """Average the gradients of ``module``'s parameters over the ranks, in place (nothing in one process): after
    ``backward`` and before the optimiser step, every rank then steps with the gradient of the mean loss over
    all ranks' samples (equal shares), as DDP would, and replicas that started equal stay equal. One flat
    all-reduce; parameters without a gradient count as zeros."""
    if not _group_active():
        return
    params = [p for p in module.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


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

    torch's ``SyncBatchNorm`` only runs on accelerators; this one uses two differentiable all-reduces per
    call — the channel sums, then the centred squares — so it works with gloo on CPU. The gradient flows
    through the reductions (their backward is again an all-reduce), as in torch's version.
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


class ShardSampler(DistributedSampler):
    """DistributedSampler (shuffled, seed + epoch) limited to whole global batches, able to start mid-epoch.

    Its permutation does not depend on the number of ranks: rank r gets positions r, r + N, r + 2N, … of it,
    so the k-th per-rank batches of all ranks together are exactly the k-th batch of a one-process run.

    Args:
        steps: global batches per epoch.
        per_rank_batch: samples of each global batch this rank takes.
    Attributes:
        start_step: global batches of the epoch already done (set before iterating to resume mid-epoch).
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
