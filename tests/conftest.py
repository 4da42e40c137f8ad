"""Shared fixtures (the builders live in tests/tiny.py so test modules can import them too)."""

from __future__ import annotations

import pytest

from tiny import tiny_dataset, tiny_model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def dataset():
    return tiny_dataset()
