"""A checkpoint's own numbers beside the measured ``paper-ppo`` (docs/benchmark.md, "As published").

A GFNet checkpoint may store results measured with its policy (docs/checkpoints.md): ``anytime_classification``
(top-1 per step), ``budgeted_batch_classification`` (its accuracy–compute curve) and ``dynamic_threshold`` (the
confidence thresholds of that curve). :func:`feature_nets.checkpoint.load_checkpoint` hands them on as
``GFNet.stored_results``. Here:

* :func:`as_published` — the ``as_published`` entry of ``results.json``: the stored numbers, the measured ones and
  measured − published per step, for the agent that runs the checkpoint's own policy (:func:`published_agent`);
* :func:`checkpoint_thresholds` — ``--thresholds checkpoint``: the stored thresholds that agent's budgeted curve is
  evaluated with (:func:`feature_nets.budgeted.curve_from_thresholds`) instead of fitted ones; every other agent
  keeps thresholds fitted on its own outputs;
* :func:`store_measured_results` — measure ``paper-ppo`` with the benchmark's protocol on a task's whole
  evaluation split and write the three keys into the checkpoint, every other entry kept bit for bit (how the
  shipped default-task checkpoint got its numbers; ``gfnet train-default-task --store-results``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..registry import base_name

__all__ = ["PUBLISHED_AGENT", "RESULT_KEYS", "THRESHOLDS", "as_published", "checkpoint_thresholds",
           "published_agent", "store_measured_results"]

#: The agent whose policy a GFNet checkpoint stores.
PUBLISHED_AGENT = "paper-ppo"
#: Where the budgeted thresholds come from (``run_benchmark(thresholds=…)``, ``--thresholds``).
THRESHOLDS = ("fit", "checkpoint")
#: The checkpoint entries :func:`store_measured_results` writes (besides the note and the protocol).
RESULT_KEYS = ("anytime_classification", "budgeted_batch_classification", "dynamic_threshold")
#: The entries :func:`store_measured_results` writes in all.
WRITTEN_KEYS = RESULT_KEYS + ("anytime_classification_note", "results_protocol")


def published_agent(agents: list[str], agent_dirs: dict | None) -> str | None:
    """The first benchmarked agent that runs the env checkpoint's own policy — ``paper-ppo`` (or a variant
    ``paper-ppo:LABEL``) without an ``--agent-dir`` — or None."""
    dirs = agent_dirs or {}
    return next((n for n in agents if base_name(n) == PUBLISHED_AGENT and n not in dirs), None)


def _stored(model) -> dict:
    return getattr(model, "stored_results", None) or {}


def _where(stored: dict) -> str:
    return f"the env's checkpoint {stored['source']}" if stored.get("source") else "the env's checkpoint"


def checkpoint_thresholds(thresholds: str, model, agents: list[str], agent_dirs: dict | None,
                          steps: int) -> dict[str, list]:
    """``{agent: (P, steps) threshold rows}`` of ``--thresholds checkpoint`` (``{}`` with ``"fit"``).

    Raises:
        ValueError: an unknown mode; no agent runs the checkpoint's own policy; the checkpoint stores no
            ``dynamic_threshold``; its rows are not one threshold per step of this benchmark.
    """
    if thresholds not in THRESHOLDS:
        raise ValueError(f"thresholds must be one of {list(THRESHOLDS)}, got {thresholds!r}")
    if thresholds == "fit":
        return {}
    name = published_agent(agents, agent_dirs)
    if name is None:
        raise ValueError("--thresholds checkpoint evaluates the budgeted curve of the checkpoint's own policy: "
                         f"benchmark {PUBLISHED_AGENT} without --agent-dir {PUBLISHED_AGENT}=... (the other agents "
                         "keep thresholds fitted on their own outputs)")
    stored = _stored(model)
    rows = stored.get("dynamic_threshold")
    if not rows:
        raise ValueError(f"--thresholds checkpoint: {_where(stored)} stores no dynamic_threshold (the thresholds of "
                         "its budgeted curve); use --thresholds fit (the default), or store measured ones with "
                         "`gfnet train-default-task --store-results CHECKPOINT`")
    lengths = sorted({len(r) for r in rows})
    if lengths != [steps]:
        raise ValueError(f"--thresholds checkpoint: {_where(stored)} stores thresholds for {lengths} steps, but this "
                         f"benchmark's episodes have {steps} (max_steps = {steps - 1}); leave max_steps at its "
                         "default or use --thresholds fit")
    return {name: [list(map(float, r)) for r in rows]}


def as_published(results: dict, model, agents: list[str], agent_dirs: dict | None, eval_split_size: int,
                 thresholds: str = "fit") -> dict | None:
    """The ``as_published`` entry of ``results.json``, or None when no agent runs the checkpoint's own policy or
    the checkpoint stores neither ``anytime_classification`` nor ``budgeted_batch_classification``.

    Keys: ``agent``, ``source`` (the checkpoint), ``note`` (what the file says about its numbers),
    ``anytime_top1`` (stored, % per step), ``budgeted`` (stored ``madds`` and ``top1``, in the checkpoint's own
    accounting), ``dynamic_threshold_rows``, ``measured_anytime_top1``, ``delta_per_step`` (measured − published,
    points, over the steps both have), ``measured_images`` / ``eval_split_images`` / ``full_split`` (the stored
    numbers are over a whole split: only a full-split measurement is like for like), ``same_images`` (the stored
    protocol names the same images; None when the file does not say), ``thresholds`` (``"fit"`` or
    ``"checkpoint"``) and ``budgeted_delta`` (measured − published per stored threshold row, ``madds`` and
    ``top1``; only with ``"checkpoint"``, the same thresholds on both sides).
    """
    name = published_agent(agents, agent_dirs)
    stored = _stored(model)
    anytime, curve = stored.get("anytime_classification"), stored.get("budgeted_batch_classification")
    if name is None or name not in results["agents"] or (anytime is None and curve is None):
        return None
    entry = results["agents"][name]
    measured = [float(v) for v in entry["anytime_top1"]]
    delta = [m - float(p) for m, p in zip(measured, anytime)] if anytime is not None else None
    mine = entry["budgeted"]
    budgeted_delta = None
    if curve is not None and thresholds == "checkpoint" and len(mine["top1"]) == len(curve[1]):
        budgeted_delta = {"madds": [float(a) - float(b) for a, b in zip(mine["madds"], curve[0])],
                          "top1": [float(a) - float(b) for a, b in zip(mine["top1"], curve[1])]}
    protocol, here = stored.get("protocol"), results.get("protocol", {})
    same = None
    if isinstance(protocol, dict) and here:
        same = all(protocol.get(k) == here.get(k) for k in ("dataset", "eval_images"))
    E = int(results["episodes"])
    return {
        "agent": name, "source": stored.get("source"), "note": stored.get("note"),
        "anytime_top1": [float(v) for v in anytime] if anytime is not None else None,
        "budgeted": {"madds": [float(v) for v in curve[0]], "top1": [float(v) for v in curve[1]]}
        if curve is not None else None,
        "dynamic_threshold_rows": len(stored.get("dynamic_threshold") or []),
        "measured_anytime_top1": measured, "delta_per_step": delta,
        "measured_images": E, "eval_split_images": int(eval_split_size), "full_split": E == int(eval_split_size),
        "same_images": same, "thresholds": thresholds, "budgeted_delta": budgeted_delta,
    }


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
    ``out``). The write is atomic.

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
    from feature_nets.checkpoint import read_checkpoint_dict
    from feature_nets.files import atomic_save

    from .run import run_benchmark

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
            f"measured by agents.benchmark.published.store_measured_results on {results['env_id']}: "
            f"{PUBLISHED_AGENT} (this checkpoint's policy, deterministic) on {results['eval_images']} "
            f"({results['episodes']} images, {results['image_source']}); budgeted thresholds fitted on "
            f"{results['fit']['images']}; multiply-adds: the env's looks plus the policy's decisions"),
        "results_protocol": {k: v for k, v in results["protocol"].items()},
    }
    kept = {k: v for k, v in blob.items() if k not in WRITTEN_KEYS}
    blob.update(new)
    staging = out.with_name(out.name + ".new")
    atomic_save(blob, staging)
    try:
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
