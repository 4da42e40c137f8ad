"""Benchmark results: per-run numbers aggregated per agent, and the folder they are written to.

:func:`aggregate_runs` turns the runs of one agent into means and 95 % bootstrap intervals over runs
(:mod:`agents.report` formats them as tables); :class:`ResultsFolder` owns ``--out``:

* :meth:`ResultsFolder.claim`, before any work: ``--out`` must be a folder (created if missing) that this
  process can write, and not in use — the lock file ``.lock`` that every command writing an ``--out`` takes
  (:mod:`feature_nets.folders`: ``flock``-held, naming the owner's command, host and pid; a lock left by a
  run that died is taken over) refuses a second run on the same folder. Every problem is an
  :class:`OutputFolderError` with a one-line message.
* :meth:`ResultsFolder.write` (also :func:`write_outputs`): every file — ``results.md``, ``results.csv``,
  the PNG plots, ``per_image.npz`` (per-image records), ``report.html`` (:mod:`agents.benchmark.report`), then
  ``results.json`` — is first written into ``.staging-<pid>/`` inside the folder; only
  when all are complete are they renamed into place, ``results.json`` last (it is removed first, so it marks
  a complete folder), with SIGINT/SIGTERM held back during those renames. Ctrl-C, a crash or a full disk
  while writing leaves the previous results untouched; the staging folder is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from feature_nets.files import atomic_write, atomic_write_text
from feature_nets.folders import LOCK_FILE, OutputFolder, OutputFolderError
from feature_nets.signals import signals_held as _signals_held

from ..base import PathLike
from .tables import markdown_table, write_csv
from .statistics import mean_and_ci

__all__ = ["LOCK_FILE", "OutputFolderError", "ResultsFolder", "aggregate_runs", "budgeted_from_records",
           "run_numbers", "write_outputs"]

#: Files a benchmark writes into its folder; ``results.json`` is written last and marks it complete.
RESULT_FILES = ("results.md", "results.csv", "per_image.npz", "anytime_top1.png", "budgeted.png", "mean_return.png",
                "madds_per_step.png", "seconds.png", "report.html", "results.json")
#: ``decision_madds_note`` of an agent charged 0 multiply-adds for its own decisions without declaring it
#: (:attr:`agents.benchmark.costs.MeteredAgent.unaccounted`).
DECISION_MADDS_NOTE = ("charged 0 multiply-adds per decision: its act ran no torch operations (the only ones "
                       "counted) and it declares no decision_madds; if it computes in numpy or other non-torch "
                       "code, declare that cost (multiply-adds per decision per image) as decision_madds on the "
                       "agent (docs/benchmark.md, 'Declaring an agent's own cost')")


def run_numbers(meta: dict, records: dict[str, np.ndarray]) -> dict:
    """One run's numbers (a ``per_run`` entry of :func:`aggregate_runs`) from what does not depend on the images
    (``meta`` of :func:`agents.benchmark.run.evaluate_run`: label, costs, seconds, fitted thresholds) and the run's
    per-image records (``correct`` (T', E), ``confidence`` / ``pred`` (T', E), ``returns`` (E,), ``target`` (E,)).

    The one place where the table's numbers are computed from records: a one-process benchmark, torchrun's ranks
    and ``gfnet merge`` of ``--shard`` folders give the same numbers for the same records."""
    correct = torch.as_tensor(np.asarray(records["correct"], dtype=bool))
    return {**meta,
            "anytime_top1": (correct.double().mean(1) * 100.0).tolist(),
            "mean_return": float(np.asarray(records["returns"], dtype=np.float64).mean()),
            "budgeted": budgeted_from_records(records, meta["fitted"], np.cumsum(meta["madds_per_step"]).tolist())}


def budgeted_from_records(records: dict[str, np.ndarray], fitted: dict, cumulative_madds: list[float]) -> dict:
    """The budgeted curve (``p``, ``madds``, ``top1``, ``thresholds``, ``exit_probs``) of the ``fitted`` thresholds
    ((P, T') rows, :func:`feature_nets.budgeted.fit_threshold_rows`) evaluated on the per-image ``confidence`` and
    ``pred`` records, with the cumulative multiply-adds per step (:func:`feature_nets.budgeted.evaluate_confidences`:
    the numbers of :func:`feature_nets.budgeted.budgeted_curve` bit for bit)."""
    from feature_nets.budgeted import evaluate_confidences

    conf = torch.as_tensor(np.asarray(records["confidence"], dtype=np.float32))
    pred = torch.as_tensor(np.asarray(records["pred"], dtype=np.int64))
    target = torch.as_tensor(np.asarray(records["target"], dtype=np.int64))
    curve: dict = {"p": list(fitted["p"]), "madds": [], "top1": [], "thresholds": fitted["thresholds"],
                   "exit_probs": fitted["exit_probs"]}
    for row in fitted["thresholds"]:
        top1, madds, _ = evaluate_confidences(conf, pred, target, torch.tensor(row, dtype=torch.float32),
                                              cumulative_madds)
        curve["madds"].append(madds)
        curve["top1"].append(top1)
    return curve


def aggregate_runs(per_run: list[dict], source: str, seed: int) -> dict:
    """One agent's entry of ``results["agents"]`` from its runs (each a dict of :func:`agents.benchmark.evaluate_run`)."""
    top = np.array([r["anytime_top1"] for r in per_run])            # (R, T')
    ret = np.array([r["mean_return"] for r in per_run])             # (R,)
    top_mean, top_ci = mean_and_ci(top, seed=seed)
    ret_mean, ret_ci = mean_and_ci(ret, seed=seed)
    curves = [r["budgeted"] for r in per_run]
    madds_per_step = per_run[0]["madds_per_step"]
    return {
        "anytime_top1": top_mean,
        "anytime_top1_ci": top_ci,
        "mean_return": ret_mean,
        "mean_return_ci": ret_ci,
        "budgeted": {"p": curves[0]["p"],
                     "madds": np.mean([c["madds"] for c in curves], 0).tolist(),
                     "top1": np.mean([c["top1"] for c in curves], 0).tolist()},
        "madds_per_step": madds_per_step,
        "madds": float(np.sum(madds_per_step)),
        "env_madds_per_step": per_run[0]["env_madds_per_step"],
        "agent_madds_per_step": per_run[0]["agent_madds_per_step"],
        "seconds": float(np.mean([r["seconds"] for r in per_run])),
        "seconds_per_decision": float(np.mean([r["seconds_per_decision"] for r in per_run])),
        "n_runs": len(per_run),
        "runs": [{"label": r["label"], "anytime_top1": r["anytime_top1"], "mean_return": r["mean_return"],
                  "seconds": r["seconds"], "budgeted": {"madds": r["budgeted"]["madds"], "top1": r["budgeted"]["top1"],
                                                        "thresholds": r["budgeted"]["thresholds"]}}
                 for r in per_run],
        "upper_bound": per_run[0]["upper_bound"],
        "source": source,
        "decision_madds_note": DECISION_MADDS_NOTE if any(r.get("decision_madds_unaccounted") for r in per_run)
        else None,
    }
    # anytime_top1_ci and mean_return_ci are replaced by the two-level, image-paired intervals
    # (agents.benchmark.comparison.compare_agents, agents.benchmark.equal_compute.verdict)


def write_outputs(results: dict, out_dir: PathLike) -> list[Path]:
    """results.md, results.csv, the PNG plots and results.json into ``out_dir``, all or nothing
    (:meth:`ResultsFolder.write`; the caller holds the folder's lock, or no other run uses it)."""
    return ResultsFolder(out_dir).write(results)


class ResultsFolder(OutputFolder):
    """A benchmark's output folder: claimed before any work, filled all at once at the end (module docstring).

    Use as ``with ResultsFolder(out).claim() as folder: ...; folder.write(results)``. The lock is the one every
    command that writes an ``--out`` takes (:class:`feature_nets.folders.OutputFolder`); ``command`` is recorded
    in it and named to a run that is refused (``gfnet compare --out`` claims its folder as ``compare``).
    """

    def __init__(self, path: PathLike, command: str = "benchmark") -> None:
        super().__init__(path, command)

    # --- before any work -----------------------------------------------------------------------------
    def claim(self) -> "ResultsFolder":
        """Check ``--out`` and take its lock; raises :class:`OutputFolderError` (one line) when it cannot be used."""
        super().claim()
        for stale in self.path.glob(".staging-*"):  # left by runs killed while writing
            shutil.rmtree(stale, ignore_errors=True)
        return self

    # --- at the end ----------------------------------------------------------------------------------
    def write(self, results: dict, arrays: dict[str, np.ndarray] | None = None, images=None) -> list[Path]:
        """Every output file into a staging folder, then all of them into place (``results.json`` last).

        ``arrays`` (the per-image records) go to ``per_image.npz`` (compressed numpy arrays by name); the report
        (``report.html``, :mod:`agents.benchmark.report`) draws the looks on ``images`` (the evaluation dataset;
        None: loaded from the results' env arguments where they still give the benchmarked images)."""
        from .plots import make_plots
        from .report import write_report

        out = self.path
        out.mkdir(parents=True, exist_ok=True)
        stage = out / f".staging-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        try:
            stage.mkdir()
            staged = [atomic_write_text(stage / "results.md", markdown_table(results)),
                      write_csv(results, stage / "results.csv")]
            staged += make_plots(results, stage)
            if arrays:
                staged.append(atomic_write(stage / "per_image.npz", lambda f: np.savez_compressed(f, **arrays)))
            staged.append(write_report(stage, results, arrays, images=images))
            staged.append(atomic_write_text(stage / "results.json", json.dumps(results, indent=2)))
            names = [p.name for p in staged]
            with _signals_held():
                (out / "results.json").unlink(missing_ok=True)  # from here until the last rename: incomplete
                for name in RESULT_FILES:
                    if name not in names:
                        (out / name).unlink(missing_ok=True)  # a stale file of an older version
                for name in names:  # results.json is the last one
                    os.replace(stage / name, out / name)
                _fsync_dir(out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            self.keep()  # it holds results now
        return [out / name for name in names]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
