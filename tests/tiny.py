"""A tiny GFNet and a tiny image dataset that make env and agent tests run in seconds on CPU."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from feature_nets.gfnet import build_small_gfnet

TINY = dict(patch_size=16, T=4, image_size=48, num_classes=5, widths=(8, 16, 32), feature_num=32,
            gru_hidden=32, policy_hidden=16)


def tiny_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_small_gfnet(**{**TINY, **overrides}).eval()


def tiny_dataset(n: int = 24, seed: int = 1, image_size: int = 48, num_classes: int = 5) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, image_size, image_size, generator=g),
                         torch.randint(0, num_classes, (n,), generator=g))


def fashion_mnist_available() -> bool:
    """Whether the Fashion-MNIST IDX files can be found (CI installs them: `make dataset`)."""
    from gfnet_env.data.cluttered_fashion_mnist import find_fashion_mnist_dir

    try:
        find_fashion_mnist_dir()
        return True
    except FileNotFoundError:
        return False


#: Marks tests that need the real Fashion-MNIST files; the skip says how to get them.
needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR)",
)
