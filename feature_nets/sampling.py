"""Which items a subset of a dataset takes: spread evenly over it, so that a subset of an image folder (sorted by
class) covers every class in proportion instead of the first class or two.

The benchmark picks its evaluation and fit images with :func:`spread_indices`; ``gfnet train-features
--train-samples / --val-samples`` take their subsets with :func:`spread_subset`, the same rule. There is no
randomness in it: the same N and k always give the same items, whatever the seed.
"""

from __future__ import annotations

from torch.utils.data import Dataset, Subset

__all__ = ["spread_indices", "spread_subset"]


def spread_indices(n: int, k: int) -> tuple[list[int], list[int]]:
    """k indices spread evenly over range(n) (i·n // k, i = 0 … k − 1), and the remaining indices, in order."""
    chosen = [(i * n) // k for i in range(k)]
    taken = set(chosen)
    return chosen, [i for i in range(n) if i not in taken]


def spread_subset(dataset: Dataset, k: int | None) -> Dataset:
    """``k`` items of ``dataset`` spread evenly over it (:func:`spread_indices`) as a ``Subset``; the dataset itself
    when ``k`` is None or 0 (all of it) or at least its length.

    Raises:
        ValueError: ``k`` is negative or not a whole number.
    """
    if k is None or k == 0:
        return dataset
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"a subset size must be a whole number >= 0 (0 or None: everything), got {k!r}")
    n = len(dataset)  # type: ignore[arg-type]
    if k >= n:
        return dataset
    return Subset(dataset, spread_indices(n, k)[0])
