"""Shared fixtures (the builders live in tests/tiny.py so test modules can import them too)."""

from __future__ import annotations

import signal
import threading

import pytest

from tiny import tiny_dataset, tiny_model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def dataset():
    return tiny_dataset()


@pytest.fixture(autouse=True, scope="session")
def python_sigint_handler():
    """Python's KeyboardInterrupt handler for the Ctrl-C tests, whatever the runner inherited: a test run started
    in the background (``cmd &`` in a script, nohup) inherits SIGINT ignored, and Python then installs no handler,
    so ``signal.raise_signal(SIGINT)`` would do nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
