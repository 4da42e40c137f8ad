"""Measured numbers written into a GFNet checkpoint, as released checkpoints store theirs (docs/checkpoints.md).

:func:`store_measured_results` measures ``paper-ppo`` (the checkpoint's own policy) with the benchmark's protocol
(:func:`agents.benchmark.run.run_benchmark`) on a task's whole evaluation split, and writes
``anytime_classification``, ``budgeted_batch_classification`` and ``dynamic_threshold`` into the checkpoint, every
other entry kept bit for bit. The benchmark then shows them as the "as published" row
(:mod:`agents.benchmark.published`). How the shipped default-task checkpoint got its numbers
(``gfnet train-default-task --store-results``; the default-task pipeline calls it after stages 2 and 3).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from feature_nets.checkpoint import read_checkpoint_dict
from feature_nets.files import atomic_save

from .published import PUBLISHED_AGENT, WRITTEN_KEYS
from .run import run_benchmark

__all__ = ["store_measured_results"]


def store_measured_results(checkpoint: str | os.PathLike, env_id: str = "GFNet-ClutteredFashionMNIST-v0",
                           out: str | os.PathLike | None = None, env_kwargs: dict[str, Any] | None = None,
                           episodes: int | None = None, batch_size: int = 250, device: str = "cpu",
                           verbose: bool = False) -> dict:
    """Measure ``paper-ppo`` (``checkpoint``'s own policy) with the benchmark's protocol and write its numbers into
    the checkpoint: ``anytime_classification`` (top-1 % per step), ``budgeted_batch_classification`` ([mean
    multiply-adds, top-1] over p = 1 … 39, the benchmark's accounting: the env's looks plus the policy's
    decisions), ``dynamic_threshold`` ((39, T) float32, fitted on the task's fit split as the benchmark fits
    them), ``anytime_classification_note`` (what was measured, on which images) and ``results_protocol`` (the
    benchmark's protocol, so a later benchmark can tell whether it measured the same images).

    Every other entry is kept as read (tensors bit for bit: the file is re-read and compared before it replaces
    ``out``). The write is atomic: a staging file of its own in ``out``'s folder, verified, then renamed over it.

    Args:
        checkpoint: the GFNet checkpoint (with a trained ``policy``).
        env_id: the task it belongs to (default: the embedded default task).
        out: where to write (default: ``checkpoint`` itself).
        env_kwargs: further env arguments (``data_root``, …; not ``checkpoint``).
        episodes: evaluation images (default: the whole evaluation split, as published numbers are).
        batch_size, device, verbose: as :func:`agents.benchmark.run_benchmark`.

    Returns:
        the benchmark's results dict.
    """
    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else checkpoint
    kwargs = {**(env_kwargs or {}), "checkpoint": str(checkpoint)}
    blob = dict(read_checkpoint_dict(checkpoint))
    results = run_benchmark(env_id, [PUBLISHED_AGENT], None, episodes=episodes or sys.maxsize, env_kwargs=kwargs,
                            batch_size=batch_size, device=device, verbose=verbose, reference=None)
    e = results["agents"][PUBLISHED_AGENT]
    (run,) = e["runs"]
    new = {
        "anytime_classification": [float(v) for v in e["anytime_top1"]],
        "budgeted_batch_classification": [[float(v) for v in e["budgeted"]["madds"]],
                                          [float(v) for v in e["budgeted"]["top1"]]],
        "dynamic_threshold": torch.tensor(run["budgeted"]["thresholds"], dtype=torch.float32),
        "anytime_classification_note": (
            f"measured by agents.benchmark.store_results.store_measured_results on {results['env_id']}: "
            f"{PUBLISHED_AGENT} (this checkpoint's policy, deterministic actions) on {results['episodes']} of the "
            f"{results['eval_split_images']} images of the evaluation split ({results['image_source']}); budgeted "
            f"thresholds fitted on {results['fit']['images']}; multiply-adds: the env's looks plus the policy's "
            "decisions"),
        "results_protocol": {k: v for k, v in results["protocol"].items()},
    }
    kept = {k: v for k, v in blob.items() if k not in WRITTEN_KEYS}
    blob.update(new)
    fd, name = tempfile.mkstemp(prefix=f"{out.name}.", suffix=".new", dir=out.parent)  # a name of its own
    os.close(fd)
    staging = Path(name)
    try:
        atomic_save(blob, staging)
        written = read_checkpoint_dict(staging)
        changed = [k for k in kept if not _identical(kept[k], written.get(k))] + \
            [k for k in written if k not in kept and k not in WRITTEN_KEYS]
        if changed:
            raise RuntimeError(f"writing the results into {out} would change other entries {changed}; nothing "
                               "written")
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    return results


def _identical(a, b) -> bool:
    """Equal entries, tensors bit for bit (dtype, shape and every element), containers recursively."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
