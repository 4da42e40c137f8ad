"""Bootstrap confidence intervals over runs (training seeds), numpy only, reproducible for a fixed seed."""

from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "mean_and_ci"]


def bootstrap_ci(values, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> np.ndarray:
    """Percentile bootstrap interval of the mean.

    Args:
        values: (R,) one value per run, or (R, K) — K quantities (e.g. steps), each bootstrapped over the
            R runs with the same resamples.
        confidence: coverage (0.95 → the 2.5 % and 97.5 % percentiles of the resampled means).
        n_boot: number of resamples.
        seed: seed of the resampling (same seed, same interval).

    Returns:
        (2,) ``[lo, hi]`` for 1-d input, (K, 2) for 2-d input. With a single run the interval is
        ``[value, value]`` (nothing to resample); NaN-free input gives NaN-free output.
    """
    x = np.asarray(values, dtype=np.float64)
    one_d = x.ndim == 1
    if one_d:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"values must be (R,) or (R, K) with R >= 1 runs, got shape {np.shape(values)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    r = x.shape[0]
    if r == 1:
        out = np.repeat(x[0][:, None], 2, axis=1)
    else:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, r, size=(n_boot, r))
        means = x[idx].mean(axis=1)  # (n_boot, K)
        alpha = (1.0 - confidence) / 2.0
        out = np.stack([np.quantile(means, alpha, axis=0), np.quantile(means, 1.0 - alpha, axis=0)], axis=1)
    return out[0] if one_d else out


def mean_and_ci(values, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0):
    """(mean, [lo, hi]) of (R,) values, or ((K,) means, (K, 2) intervals) of (R, K) values, as Python lists/floats."""
    x = np.asarray(values, dtype=np.float64)
    ci = bootstrap_ci(x, confidence, n_boot, seed)
    if x.ndim == 1:
        return float(x.mean()), [float(ci[0]), float(ci[1])]
    return x.mean(axis=0).tolist(), ci.tolist()
