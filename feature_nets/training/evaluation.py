"""Anytime evaluation: top-1 and cross-entropy after every step of a GFNet over a dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..gfnet import GFNet, StepOutput
from ..seeding import seed_worker
from .distributed import DistContext
from .progress import progress_bar
from .rng import mix_seed
from .stage_loss import policy_actions

__all__ = ["EvalResult", "Chooser", "random_actions_table", "evaluate_anytime"]


@dataclass
class EvalResult:
    """Per-step results over a dataset: top-1 (%) and mean cross-entropy of the model's logits, per step."""

    top1: list[float]
    loss: list[float]
    n: int

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.loss))


#: ``(previous StepOutput, memory, sample indices (B,)) -> ((B, 2) actions, memory)``.
Chooser = Callable[[StepOutput, Any, torch.Tensor], tuple[torch.Tensor, Any]]


def random_actions_table(n: int, T: int, seed: int) -> torch.Tensor:
    """(n, T−1, 2) uniform patch locations for sample indices 0..n−1 (the same for any batch size)."""
    g = torch.Generator().manual_seed(mix_seed(seed, 0xE7A1))
    return torch.rand((n, max(T - 1, 0), 2), generator=g)


class _Indexed(Dataset):
    """(x, y) dataset -> (x, y, index)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i][:2]
        return x, y, i


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
            (sampled from it, noise from ``seed``), or a :data:`Chooser` function (memory is None before the
            first focus step).
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
        g = torch.Generator().manual_seed(mix_seed(seed, 0x9013))
        table = torch.randn(table.shape, generator=g)
    indices = list(range(ctx.rank, n_total, ctx.world_size))
    ds = Subset(_Indexed(dataset), indices) if ctx.world_size > 1 else _Indexed(dataset)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", worker_init_fn=seed_worker if workers else None)
    correct = torch.zeros(T, dtype=torch.float64)
    loss_sum = torch.zeros(T, dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    bar = progress_bar(loader, total=len(loader), desc="eval", enabled=progress and ctx.is_main)
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
                a, memory = policy_actions(model, out, memory, None)
            elif actions == "policy-sample":
                a, memory = policy_actions(model, out, memory, table[idx, t - 1])
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
