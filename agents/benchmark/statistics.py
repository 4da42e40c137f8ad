"""The benchmark's statistics: bootstrap intervals, paired comparisons of agents, exact tests (numpy only).

Two kinds of randomness make a benchmark number uncertain: which images were evaluated, and which training
seed produced an agent. :class:`PairedBootstrap` resamples both — the images *paired* across agents (every
agent gets the same image resample, so the image-to-image variation that agents share cancels in their
difference) and, within each agent, its runs (training copies or seeds). :func:`bootstrap_ci` /
:func:`mean_and_ci` are the simple interval over runs alone. What each reported number means, and when a
difference is significant: docs/statistics.md. Same seed, same numbers.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

__all__ = ["PairedBootstrap", "bootstrap_ci", "gap_closed", "iqm", "mcnemar_exact", "mean_and_ci", "percentile_ci",
           "probability_of_improvement"]


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


# --- two levels: runs and images, images paired across agents ------------------------------------------------

def percentile_ci(samples: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """[lo, hi] percentile interval of bootstrap samples along axis 0: (B, ...) → (..., 2)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, alpha, axis=0), np.quantile(samples, 1.0 - alpha, axis=0)
    return np.stack([lo, hi], axis=-1)


#: Most bytes of image-resample counts kept between calls (:meth:`PairedBootstrap._image_weights`).
KEPT_COUNTS_BYTES = 64 * 2**20
_KEPT_COUNTS: dict = {}


class PairedBootstrap:
    """Bootstrap of agents' mean scores over N shared images and each agent's own runs.

    Every resample b draws N images with replacement — one draw shared by all agents — and, for each agent,
    R runs with replacement out of its R runs. An agent's statistic for b is the mean over the drawn runs of
    each run's mean over the drawn images. With one run the run level is fixed and only images vary.

    Args:
        n_images: N, images every agent was evaluated on (in the same order).
        n_boot: B, number of resamples.
        seed: seed of the image draws; each agent's run draws are seeded by (seed, its key), so the numbers
            do not depend on the order agents are added in.
        chunk: resamples processed at once (bounds memory: chunk · N floats).
    """

    def __init__(self, n_images: int, n_boot: int = 2000, seed: int = 0, chunk: int = 250) -> None:
        if n_images < 1 or n_boot < 1:
            raise ValueError(f"need n_images >= 1 and n_boot >= 1, got {n_images} and {n_boot}")
        self.n_images, self.n_boot, self.seed, self.chunk = int(n_images), int(n_boot), int(seed), int(chunk)

    def _image_weights(self):
        """(chunk, N) image-resample weights (counts / N), chunk by chunk, the same sequence on every call.

        Drawing the counts dominates the cost of a benchmark's statistics (one draw per agent and quantity), so
        the counts of the last (seed, N, B, chunk) are kept as small integers when they fit in
        :data:`KEPT_COUNTS_BYTES`; the sequence, and so every number, is the same either way."""
        key = (self.seed, self.n_images, self.n_boot, self.chunk)
        n = self.n_images
        if _KEPT_COUNTS.get("key") == key:
            for counts in _KEPT_COUNTS["chunks"]:
                yield counts / n
            return
        dtype = np.uint16 if n < 2**16 else np.uint32
        keep = self.n_boot * n * np.dtype(dtype).itemsize <= KEPT_COUNTS_BYTES
        kept = []
        rng = np.random.default_rng([self.seed, 0x1A6E5])
        done = 0
        while done < self.n_boot:
            b = min(self.chunk, self.n_boot - done)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b)
            if keep:
                kept.append(counts.astype(dtype))
            yield (counts / n).astype(np.float64)
            done += b
        if keep:
            _KEPT_COUNTS.clear()
            _KEPT_COUNTS.update(key=key, chunks=kept)

    def means(self, scores, key: str) -> np.ndarray:
        """Bootstrap means of one agent.

        Args:
            scores: (R, N) or (R, K, N) per-run, per-image scores (e.g. correctness 0/1 or p(y)), K quantities
                such as steps, images last.
            key: the agent's name (seeds its run draws).

        Returns:
            (B,) or (B, K) resampled means.
        """
        x = np.asarray(scores, dtype=np.float64)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[:, None, :]
        if x.ndim != 3 or x.shape[2] != self.n_images or x.shape[0] < 1:
            raise ValueError(f"scores must be (R, N) or (R, K, N) with N = {self.n_images} images, got {x.shape}")
        r, k, n = x.shape
        flat = x.reshape(r * k, n)
        per_run = np.concatenate([flat @ w.T for w in self._image_weights()], axis=1).reshape(r, k, self.n_boot)
        rng = np.random.default_rng([self.seed, zlib.crc32(key.encode())])
        runs = rng.integers(0, r, size=(self.n_boot, r)) if r > 1 else np.zeros((self.n_boot, 1), dtype=np.int64)
        boot = per_run[runs, :, np.arange(self.n_boot)[:, None]].mean(axis=1)  # (B, K)
        return boot[:, 0] if squeeze else boot


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50 % of the values (a quarter trimmed from each end)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("iqm of no values")
    cut = int(0.25 * x.size)
    return float(x[cut: x.size - cut].mean())


def probability_of_improvement(x, y) -> float:
    """P(X > Y) for a run of X against a run of Y, ties counting one half (rliable's definition on one task).

    Args:
        x, y: (R_x,) and (R_y,) per-run scores of two agents.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError("probability_of_improvement needs at least one run of each agent")
    greater = (x[:, None] > y[None, :]).mean()
    ties = (x[:, None] == y[None, :]).mean()
    return float(greater + 0.5 * ties)


def mcnemar_exact(a, b) -> dict:
    """Exact (binomial) McNemar test of two classifiers on the same images.

    Args:
        a, b: (N,) booleans, whether each image was classified correctly by A and by B.

    Returns:
        ``{"a_only": n10, "b_only": n01, "p_value": two-sided p}``: under "A and B are equally accurate" the
        n10 + n01 discordant images split like fair coin flips; p = min(1, 2 · P(Binomial(n, ½) <= min)).
    """
    a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same images for both, got {a.shape} and {b.shape}")
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    n = n10 + n01
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    k = min(n10, n01)
    # log P(X = i) for X ~ Binomial(n, 1/2), summed in log space (n can be 10^4)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return {"a_only": n10, "b_only": n01, "p_value": float(min(1.0, 2.0 * tail))}


def gap_closed(agent, random, oracle):
    """Share of the oracle's gap over random that an agent closes: (agent − random) / (oracle − random).

    Works element-wise on arrays (e.g. bootstrap samples); NaN where the oracle does not beat random.
    """
    agent, random, oracle = (np.asarray(v, dtype=np.float64) for v in (agent, random, oracle))
    gap = oracle - random
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (agent - random) / np.where(gap > 0, gap, 1.0), np.nan)
