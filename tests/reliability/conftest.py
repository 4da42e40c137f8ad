"""Fixtures of the reliability tests: a tiny checkpoint file, tiny image folders, and a checkpoint whose pickle
runs code (it writes a trace file) when it is fully unpickled."""

from __future__ import annotations

import pytest
import torch

from feature_nets.checkpoint import checkpoint_dict, save_checkpoint
from reliability_utils import TracePayload
from tiny import tiny_model


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A valid checkpoint file of the tiny GFNet (S = 48, P = 16, T = 4, 5 classes)."""
    return save_checkpoint(tiny_model(), tmp_path / "tiny.pth.tar")


@pytest.fixture
def evil_ckpt(tmp_path):
    """(path, trace): a valid tiny checkpoint plus an entry that writes ``trace`` when fully unpickled."""
    trace = tmp_path / "TRACE"
    blob = checkpoint_dict(tiny_model())
    blob["notes"] = TracePayload(trace)
    path = tmp_path / "evil.pth.tar"
    torch.save(blob, path)
    return path, trace
