"""Batched patch cropping: where a GFNet focus step looks, as one tensor operation.

The original inference loop cropped each sample in a Python loop; here the whole batch is cut with a
single advanced-indexing gather, so the cost is one memory pass whatever the batch size.
"""

from __future__ import annotations

import torch


def crop_corners(actions: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """Top-left corners of the patches for normalised actions.

    Args:
        actions: (B, 2) in [0, 1]; column 0 is the row (height) coordinate, column 1 the column (width).
        image_size: side S of the full-resolution image, pixels.
        patch_size: side P of the patch, pixels.

    Returns:
        (B, 2) int64 corners ``floor(a · (S − P))`` (reference §4.4), each in [0, S − P].
    """
    corners = torch.floor(actions.float() * (image_size - patch_size)).long()
    # a in [0, 1] already gives [0, S-P]; clamping only guards against values a hair outside.
    return corners.clamp_(0, image_size - patch_size)


def crop_patches(images: torch.Tensor, corners: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut one P×P patch per image.

    Args:
        images: (B, C, S, S) full-resolution images.
        corners: (B, 2) int64 top-left (row, col) of each patch, within [0, S − P].
        patch_size: side P, pixels.

    Returns:
        (B, C, P, P) patches, ``patches[b] == images[b, :, r:r+P, c:c+P]``.
    """
    b = images.shape[0]
    offsets = torch.arange(patch_size, device=images.device)
    rows = (corners[:, 0:1].to(images.device) + offsets)  # (B, P)
    cols = (corners[:, 1:2].to(images.device) + offsets)  # (B, P)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indices (batch, rows, cols) broadcast to (B, P, P); the channel slice goes last.
    patches = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, P, P, C)
    return patches.permute(0, 3, 1, 2).contiguous()


def crop_patches_reference(images: torch.Tensor, corners: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Per-sample crop as the original loop did it; kept for tests and the speed benchmark only."""
    out = []
    for i in range(images.shape[0]):
        r, c = int(corners[i, 0]), int(corners[i, 1])
        out.append(images[i : i + 1, :, r : r + patch_size, c : c + patch_size])
    return torch.cat(out, 0)
