"""The benchmark: every agent on the same images, paired statistics, tables, plots.

* :mod:`~agents.benchmark.run` — the protocol (:func:`run_benchmark`): images, runs, one rollout per run;
* :mod:`~agents.benchmark.costs` — an agent's own decision cost (multiply-adds, seconds);
* :mod:`~agents.benchmark.statistics` — bootstrap intervals, the paired bootstrap, McNemar, IQM;
* :mod:`~agents.benchmark.comparison` — agents compared on the same images against a reference;
* :mod:`~agents.benchmark.equal_compute` — operating points and the equal-compute verdict (budgets, AUC, exit
  oracle, learned stop, Holm, the margin wording);
* :mod:`~agents.benchmark.results` — aggregating runs and the output folder;
* :mod:`~agents.benchmark.merge` — the protocol fingerprint and merging results folders (``gfnet compare``);
* :mod:`~agents.benchmark.published` — the checkpoint's stored numbers beside the measured paper-ppo ("as
  published") and ``--thresholds checkpoint``; :mod:`~agents.benchmark.store_results` writes measured ones into a
  checkpoint;
* :mod:`~agents.benchmark.tables` — Markdown and CSV tables;
* :mod:`~agents.benchmark.plots` — the PNG plots.
"""

from __future__ import annotations

from .run import resolve_runs, run_benchmark

__all__ = ["resolve_runs", "run_benchmark"]
