"""The benchmark's statistics on synthetic per-image data: pairing, coverage, exact tests."""

from __future__ import annotations

import numpy as np
import pytest

from agents.benchmark.statistics import (
    PairedBootstrap,
    gap_closed,
    iqm,
    mcnemar_exact,
    percentile_ci,
    probability_of_improvement,
)


def _agreeing_agents(n=3000, runs=3, seed=0):
    """Two agents that are right on mostly the same images (hard images are hard for both)."""
    rng = np.random.default_rng(seed)
    easy = rng.random(n) < 0.7
    flip = lambda: easy ^ (rng.random(n) < 0.04)  # noqa: E731
    return np.stack([flip() for _ in range(runs)]).astype(float), np.stack([flip() for _ in range(runs)]).astype(float)


def test_paired_interval_is_narrower_than_unpaired_when_agents_agree():
    a, b = _agreeing_agents()
    paired = PairedBootstrap(a.shape[1], n_boot=800, seed=1)
    diff_paired = paired.means(a, "a") - paired.means(b, "b")
    # unpaired: each agent gets its own, independent image resamples
    diff_unpaired = PairedBootstrap(a.shape[1], n_boot=800, seed=1).means(a, "a") - \
        PairedBootstrap(a.shape[1], n_boot=800, seed=2).means(b, "b")
    w_paired = np.subtract(*percentile_ci(diff_paired)[::-1])
    w_unpaired = np.subtract(*percentile_ci(diff_unpaired)[::-1])
    assert w_paired < 0.5 * w_unpaired


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_covers_a_known_difference(seed):
    """Agents with true accuracies 0.75 and 0.70 on a large pool; 95 % intervals from 4,000 images cover 0.05."""
    rng = np.random.default_rng(seed)
    n = 4000
    a = (rng.random((4, n)) < 0.75).astype(float)
    b = (rng.random((4, n)) < 0.70).astype(float)
    boot = PairedBootstrap(n, n_boot=1000, seed=seed)
    lo, hi = percentile_ci(boot.means(a, "a") - boot.means(b, "b"))
    assert lo < 0.05 < hi and lo > 0  # covers the truth, and the difference is significant


def test_bootstrap_is_reproducible_and_independent_of_agent_order():
    a, b = _agreeing_agents(n=500)
    one = PairedBootstrap(500, n_boot=200, seed=3)
    two = PairedBootstrap(500, n_boot=200, seed=3)
    first_a = one.means(a, "a")
    one.means(b, "b")
    two.means(b, "b")
    assert np.array_equal(first_a, two.means(a, "a"))
    assert not np.array_equal(first_a, PairedBootstrap(500, n_boot=200, seed=4).means(a, "a"))


def test_one_run_varies_only_over_images_and_steps_are_kept_apart():
    x = np.zeros((1, 2, 100))
    x[0, 1, :50] = 1.0  # step 0 always wrong, step 1 right on half the images
    m = PairedBootstrap(100, n_boot=300).means(x, "x")
    assert m.shape == (300, 2) and np.all(m[:, 0] == 0.0)
    assert 0.3 < m[:, 1].min() < 0.5 < m[:, 1].max() < 0.7
    with pytest.raises(ValueError, match="N = 100"):
        PairedBootstrap(100).means(np.zeros((2, 99)), "x")


def test_mcnemar_exact_matches_a_hand_computed_binomial():
    # 10 images only A gets right, 2 only B: p = 2 · P(Binom(12, .5) <= 2) = 2 · 79 / 4096
    a = np.array([1] * 10 + [0] * 2 + [1] * 5, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 5, bool)
    out = mcnemar_exact(a, b)
    assert out["a_only"] == 10 and out["b_only"] == 2
    assert out["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    big = mcnemar_exact(np.ones(10_000, bool), np.zeros(10_000, bool))
    assert 0.0 <= big["p_value"] < 1e-300 or big["p_value"] == 0.0


def test_iqm_probability_of_improvement_and_gap():
    assert iqm([1, 2, 3, 4]) == 2.5 and iqm([0, 1, 2, 3, 100, -100, 2, 1]) == pytest.approx(1.5)
    assert probability_of_improvement([2, 3], [1, 1]) == 1.0
    assert probability_of_improvement([1], [1]) == 0.5
    assert gap_closed(0.8, 0.7, 0.9) == pytest.approx(0.5)
    assert np.isnan(gap_closed(0.8, 0.9, 0.9))


def test_kept_resample_counts_give_the_same_numbers(monkeypatch):
    """The image-resample counts kept between calls reproduce the drawn sequence exactly (and a different
    protocol draws afresh)."""
    from agents.benchmark import statistics

    x = np.random.default_rng(0).random((2, 3, 300))
    monkeypatch.setattr(statistics, "_KEPT_COUNTS", {})
    first = statistics.PairedBootstrap(300, n_boot=600, seed=3).means(x, "a")   # draws and keeps
    again = statistics.PairedBootstrap(300, n_boot=600, seed=3).means(x, "a")   # reads the kept counts
    other = statistics.PairedBootstrap(300, n_boot=600, seed=4).means(x, "a")   # another seed: drawn afresh
    monkeypatch.setattr(statistics, "KEPT_COUNTS_BYTES", 0)
    monkeypatch.setattr(statistics, "_KEPT_COUNTS", {})
    fresh = statistics.PairedBootstrap(300, n_boot=600, seed=3).means(x, "a")   # nothing kept
    assert np.array_equal(first, again) and np.array_equal(first, fresh) and not np.array_equal(first, other)
