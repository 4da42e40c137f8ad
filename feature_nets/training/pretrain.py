"""Encoder pretraining on clean items, and copying a pretrained encoder into a GFNet's two encoders.

The analogue, for CPU-sized tasks, of the ImageNet-pretrained backbones GFNet starts stage 1 from.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..crop import crop_patches
from ..devices import resolve_device
from ..gfnet import GFNet, build_encoder_for
from ..seeding import seed_worker
from .optim import cosine_schedule
from .progress import progress_bar
from .rng import mix_seed

__all__ = ["pretrain_encoder", "copy_encoder_into", "pretrain_into"]


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
    """Train an encoder (features + its own head) as a plain classifier on clean items.
    SGD (momentum 0.9, Nesterov), cosine decay.

    Args:
        encoder: an :class:`~feature_nets.encoder.Encoder` (trained in place).
        items_dataset: (image (3, P, P), label) samples, e.g. :class:`FashionMNISTItems`.
        device: None: the GPU when there is one, else the CPU.
        max_shift: random translation of up to this many pixels (background-padded), 0 = none.
        val_dataset: optional held-out items; its top-1 is reported per epoch.

    Returns:
        one dict per epoch: loss, train top-1, val top-1 (when given), seconds.
    """
    device = resolve_device(device if device is not None else "auto")
    encoder.to(device)
    opt = torch.optim.SGD(encoder.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    loader = DataLoader(items_dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(mix_seed(seed, 0x9E7)),
                        worker_init_fn=seed_worker if workers else None)
    sched = cosine_schedule(opt, max(epochs * len(loader), 1))
    g = torch.Generator().manual_seed(mix_seed(seed, 0x5A1F))
    out = []
    for epoch in range(epochs):
        encoder.train()
        t0, loss_sum, correct, n = time.time(), 0.0, 0, 0
        for x, y in progress_bar(loader, total=len(loader), desc=f"pretrain {epoch + 1}/{epochs}", enabled=progress):
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
    """Translate each image by up to ``max_shift`` pixels, padding with its own minimum (the background)."""
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


def pretrain_into(
    model: GFNet,
    items_dataset: Dataset,
    epochs: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Pretrain a fresh encoder of the model's architecture (initialised from ``seed``) on clean items with
    :func:`pretrain_encoder`'s defaults, then copy it into both of the model's encoders; returns its history."""
    torch.manual_seed(seed)
    encoder = build_encoder_for(model.spec)
    history = pretrain_encoder(encoder, items_dataset, epochs=epochs, seed=seed, device=device, progress=progress,
                               log=log)
    copy_encoder_into(model, encoder.cpu())
    return history
