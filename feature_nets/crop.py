"""Batched patch cropping: where a GFNet focus step looks, as one tensor operation.

The original inference loop cropped each sample in a Python loop; here the whole batch is cut with a
single gather over the flattened images, so the cost is one kernel whatever the batch size.
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
        (B, 2) int64 corners ``floor(a · (S − P))`` as the original code computes them, each in [0, S − P].
    """
    corners = torch.floor(actions.float() * (image_size - patch_size)).long()
    # a in [0, 1] already gives [0, S-P]; clamping only guards against values a hair outside.
    return corners.clamp_(0, image_size - patch_size)


def crop_patches(images: torch.Tensor, corners: torch.Tensor, patch_size: int,
                 source: torch.Tensor | None = None) -> torch.Tensor:
    """Cut one P×P patch per corner.

    Args:
        images: (B, C, S, S) full-resolution images.
        corners: (M, 2) int64 top-left (row, col) of each patch, within [0, S − P].
        patch_size: side P, pixels.
        source: (M,) index of the image each patch comes from; default ``arange(B)`` (M = B, one per image).
            Lets many patches be cut from the same images without copying them.

    Returns:
        (M, C, P, P) patches, ``patches[m] == images[source[m], :, r:r+P, c:c+P]``.
    """
    b, c, s, w = images.shape
    dev = images.device
    corners = corners.to(dev)
    offsets = torch.arange(patch_size, device=dev)
    pixel = ((corners[:, 0:1] + offsets)[:, :, None] * w + (corners[:, 1:2] + offsets)[:, None, :]).flatten(1)
    if source is None:
        # One gather over the flattened images: one kernel on GPU, and on CPU faster than advanced indexing
        # over (B, P, P), which builds three index tensors of the patches' size (benchmarks/RESULTS.md).
        flat = pixel[:, None, :].expand(b, c, -1)
        return images.reshape(b, c, s * w).gather(2, flat).view(b, c, patch_size, patch_size)
    m = corners.shape[0]
    channel = torch.arange(c, device=dev) * (s * w)
    index = source.to(dev)[:, None, None] * (c * s * w) + channel[None, :, None] + pixel[:, None, :]  # (M, C, P²)
    return images.reshape(-1).take(index.view(-1)).view(m, c, patch_size, patch_size)


def crop_patches_reference(images: torch.Tensor, corners: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Per-sample crop as the original loop did it; kept for tests and the speed benchmark only."""
    out = []
    for i in range(images.shape[0]):
        r, c = int(corners[i, 0]), int(corners[i, 1])
        out.append(images[i : i + 1, :, r : r + patch_size, c : c + patch_size])
    return torch.cat(out, 0)
