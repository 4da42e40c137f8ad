"""A checkpoint's own numbers beside the measured ``paper-ppo`` (docs/benchmark.md, "As published").

A GFNet checkpoint may store results measured with its policy (docs/checkpoints.md): ``anytime_classification``
(top-1 per step), ``budgeted_batch_classification`` (its accuracy–compute curve) and ``dynamic_threshold`` (the
confidence thresholds of that curve). :func:`feature_nets.checkpoint.load_checkpoint` hands them on as
``GFNet.stored_results``. Here:

* :func:`as_published` — the ``as_published`` entry of ``results.json``: the stored numbers, the measured ones and
  measured − published per step, for the agent that runs the checkpoint's own policy (:func:`published_agent`);
* :func:`checkpoint_thresholds` — ``--thresholds checkpoint``: the stored thresholds that agent's budgeted curve is
  evaluated with (:func:`feature_nets.budgeted.curve_from_thresholds`) instead of fitted ones; every other agent
  keeps thresholds fitted on its own outputs.

:func:`agents.benchmark.store_results.store_measured_results` writes such numbers, measured here, into a checkpoint.
"""

from __future__ import annotations

import torch

from ..registry import base_name

__all__ = ["PUBLISHED_AGENT", "RESULT_KEYS", "THRESHOLDS", "WRITTEN_KEYS", "as_published", "checkpoint_thresholds",
           "published_agent"]

#: The agent whose policy a GFNet checkpoint stores.
PUBLISHED_AGENT = "paper-ppo"
#: Where the budgeted thresholds come from (``run_benchmark(thresholds=…)``, ``--thresholds``).
THRESHOLDS = ("fit", "checkpoint")
#: The results a checkpoint stores for its policy (docs/checkpoints.md).
RESULT_KEYS = ("anytime_classification", "budgeted_batch_classification", "dynamic_threshold")
#: The entries :func:`agents.benchmark.store_results.store_measured_results` writes: the results, the note saying
#: how they were measured, and the benchmark's protocol.
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
    ``"checkpoint"``), ``same_thresholds`` (the measured curve used the stored thresholds: ``"checkpoint"``, or
    fitted ones that came out identical) and ``budgeted_delta`` (measured − published per stored point, ``madds``
    and ``top1``; only with the same thresholds, else None).
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
    rows = stored.get("dynamic_threshold")
    same_thresholds = thresholds == "checkpoint" or (
        rows is not None and entry["n_runs"] == 1 and _same_rows(entry["runs"][0]["budgeted"]["thresholds"], rows))
    budgeted_delta = None
    if curve is not None and same_thresholds and len(mine["top1"]) == len(curve[1]):
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
        "same_images": same, "thresholds": thresholds, "same_thresholds": same_thresholds,
        "budgeted_delta": budgeted_delta,
    }


def _same_rows(a, b) -> bool:
    """Whether two (P, T) threshold tables are the same float32 values."""
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    return a.shape == b.shape and torch.equal(a, b)
