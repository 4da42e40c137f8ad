"""The grid feature cache gives exactly the uncached env's results, and refuses stale files."""

from __future__ import annotations

import numpy as np
import pytest

from gfnet_env.cache import GridFeatureCache, StaleCacheError
from gfnet_env.factory import make_core
from helpers import tiny_dataset, tiny_model


def _cores(model, dataset, **kw):
    plain = make_core("imagenet", 4, device="cpu", checkpoint=model, dataset=dataset, action_mode="grid",
                      grid_size=3, **kw)
    cached = make_core("imagenet", 4, device="cpu", checkpoint=model, dataset=dataset, action_mode="grid",
                       grid_size=3, feature_cache=True, **kw)
    return plain, cached


def test_cached_steps_equal_uncached(model, dataset):
    plain, cached = _cores(model, dataset)
    rng = np.random.default_rng(0)
    for episode in range(2):  # the second episode reuses the first one's features
        for c in (plain, cached):
            c.reset_slots(np.arange(4), [0, 1, 2, 0])
        for _ in range(model.T - 1):
            acts = rng.integers(0, 9, 4)
            ra, _, ia = plain.step(acts)
            rb, _, ib = cached.step(acts)
            np.testing.assert_allclose(ra, rb, atol=1e-6)
            np.testing.assert_array_equal(ia["box"], ib["box"])
            assert np.abs(plain.observe() - cached.observe()).max() < 1e-5  # the GRU state
    assert cached.feature_cache.hits >= 4 and len(cached.feature_cache) == 3


def test_feature_cache_needs_grid_actions(model, dataset):
    with pytest.raises(ValueError, match="grid"):
        make_core("imagenet", 2, device="cpu", checkpoint=model, dataset=dataset, feature_cache=True)


def test_disk_cache_roundtrip_and_stale_fingerprint(model, dataset, tmp_path):
    _, cached = _cores(model, dataset)
    cached.reset_slots(np.arange(4), [0, 1, 2, 3])
    path = cached.feature_cache.save(tmp_path / "cells.pt", cached)
    fresh = GridFeatureCache().load(path, cached)
    assert len(fresh) == 4
    other_weights = tiny_model(seed=1)
    _, other = _cores(other_weights, dataset)
    with pytest.raises(StaleCacheError, match="delete it"):
        GridFeatureCache().load(path, other)
    _, other_data = _cores(model, tiny_dataset(seed=7))
    with pytest.raises(StaleCacheError):
        GridFeatureCache().load(path, other_data)
