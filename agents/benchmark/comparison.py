"""Statistics that compare the benchmark's agents on the same images (docs/statistics.md).

:func:`compare_agents` takes every agent's per-image records — for each run, whether each image was classified
correctly after each step — and adds to each agent's results entry:

* ``anytime_top1_ci``: 95 % interval per step from the two-level bootstrap (runs within the agent, images
  paired across agents; :class:`agents.stats.PairedBootstrap`);
* ``iqm_top1``: the interquartile mean over runs of the last-step top-1, with at least 4 runs;
* ``vs_reference`` (every agent but the reference): the paired difference of top-1 per step (points) with its
  interval, whether the last step's interval excludes zero, the probability of improvement over runs (None
  unless both agents have at least 2 runs), and
  McNemar's exact test on the last step's per-image correctness (majority over runs);
* ``oracle_gap_closed`` (when ``random`` and ``oracle`` were benchmarked): (agent − random) / (oracle − random)
  at the last step, with its interval.
"""

from __future__ import annotations

import numpy as np

from .statistics import PairedBootstrap, gap_closed, iqm, mcnemar_exact, percentile_ci, probability_of_improvement

__all__ = ["compare_agents", "default_reference"]


def default_reference(names: list[str]) -> str | None:
    """The paper's own agent when benchmarked, else none."""
    return "paper-ppo" if "paper-ppo" in names else None


def compare_agents(entries: dict[str, dict], correct: dict[str, np.ndarray], reference: str | None,
                   seed: int = 0, n_boot: int = 2000, confidence: float = 0.95) -> None:
    """Add the comparison statistics to the agents' results entries, in place (see the module docstring).

    Args:
        entries: name → the agent's results entry (``runs`` with per-run ``anytime_top1``).
        correct: name → (R, T', E) booleans: run r classified image e correctly after step t.
        reference: the agent the others are compared with (None: no paired comparison).
        seed, n_boot, confidence: of the bootstrap.
    """
    if reference is not None and reference not in correct:
        raise ValueError(f"reference agent {reference!r} was not benchmarked; choose one of {sorted(correct)}")
    n_images = next(iter(correct.values())).shape[2]
    boot = PairedBootstrap(n_images, n_boot=n_boot, seed=seed)
    samples = {name: boot.means(c.astype(np.float64), name) * 100.0 for name, c in correct.items()}  # (B, T')
    for name, entry in entries.items():
        entry["anytime_top1_ci"] = percentile_ci(samples[name], confidence).tolist()
        last = [r["anytime_top1"][-1] for r in entry["runs"]]
        entry["iqm_top1"] = iqm(last) if len(last) >= 4 else None
    if reference is not None:
        ref_last_runs = [r["anytime_top1"][-1] for r in entries[reference]["runs"]]
        for name, entry in entries.items():
            if name == reference:
                continue
            diff = samples[name] - samples[reference]                       # (B, T')
            point = (correct[name].mean(axis=(0, 2)) - correct[reference].mean(axis=(0, 2))) * 100.0
            ci = percentile_ci(diff, confidence)
            test = mcnemar_exact(_majority(correct[name][:, -1]), _majority(correct[reference][:, -1]))
            entry["vs_reference"] = {
                "reference": reference,
                "top1_difference": point.tolist(),
                "top1_difference_ci": ci.tolist(),
                "significant": bool(ci[-1, 0] > 0 or ci[-1, 1] < 0),
                # over runs: meaningless with one run of either (it is then 0, ½ or 1): None
                "probability_of_improvement": probability_of_improvement(
                    [r["anytime_top1"][-1] for r in entry["runs"]], ref_last_runs)
                if len(entry["runs"]) >= 2 and len(ref_last_runs) >= 2 else None,
                "mcnemar": test,
            }
    if "random" in samples and "oracle" in samples:
        r, o = samples["random"][:, -1], samples["oracle"][:, -1]
        r_point = entries["random"]["anytime_top1"][-1]
        o_point = entries["oracle"]["anytime_top1"][-1]
        for name, entry in entries.items():
            share = gap_closed(samples[name][:, -1], r, o)
            finite = share[np.isfinite(share)]
            entry["oracle_gap_closed"] = float(gap_closed(entry["anytime_top1"][-1], r_point, o_point))
            entry["oracle_gap_closed_ci"] = percentile_ci(finite, confidence).tolist() if finite.size else None


def _majority(correct_runs: np.ndarray) -> np.ndarray:
    """(R, E) → (E,): correct when more than half of the runs are (the run itself when R = 1)."""
    return correct_runs.mean(axis=0) > 0.5
