"""Running a stage on N processes (torchrun): the process group, synchronised BatchNorm, the data shards.

When ``WORLD_SIZE`` > 1 the process group is created from the environment (gloo on CPU, nccl on GPU). The
global batch is split over the ranks by :class:`ShardSampler`, whose permutation does not depend on N, and
BatchNorm statistics are those of the whole global batch (:func:`convert_sync_batchnorm`), so a run on N
processes equals the one-process run up to floating-point summation order.
"""

from __future__ import annotations

import gc
import os
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
