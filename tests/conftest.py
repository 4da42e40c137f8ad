"""Shared fixtures (the builders live in tests/helpers.py so test modules can import them too)."""

from __future__ import annotations

import signal
import threading

import pytest
import torch

from feature_nets.checkpoint import checkpoint_dict, save_checkpoint
from helpers import TracePayload, tiny_dataset, tiny_model


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


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A valid checkpoint file of the tiny GFNet (S = 48, P = 16, T = 4, 5 classes)."""
    return save_checkpoint(tiny_model(), tmp_path / "tiny.pth.tar")


@pytest.fixture
def evil_ckpt(tmp_path):
    """(path, trace): a valid tiny checkpoint plus an entry that writes ``trace`` when fully unpickled (a pickle
    that runs code)."""
    trace = tmp_path / "TRACE"
    blob = checkpoint_dict(tiny_model())
    blob["notes"] = TracePayload(trace)
    path = tmp_path / "evil.pth.tar"
    torch.save(blob, path)
    return path, trace
