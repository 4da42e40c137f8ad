"""Each agent's operating point and the equal-compute verdict against the reference (docs/statistics.md).

Every number here is computed from the per-image records of ``per_image.npz`` (so ``gfnet compare`` recomputes
them offline): per run, image and step the prediction's correctness and its top-1 confidence, and per run and
image the exit step (looks taken) and whether the agent stopped; per run the agent's multiply-adds per decision;
and the budgeted thresholds fitted on the fit split (``results.json``, each run's ``budgeted.thresholds``).

* :func:`cost_per_step` — what an image has cost after each step: the env's looks up to its exit plus the
  agent's decisions (a stop is a decision too);
* :func:`threshold_points` — one run's budgeted curve recomputed per image: the fitted thresholds, plus the two
  threshold settings that need no fitting (everyone answers with the glance; everyone runs to the last step);
* :func:`read_curve` — per-image expected correctness at a budget, linearly interpolated between two points;
* :func:`verdict` — ``operating_point``, ``equal_compute``, ``auc``, ``exit_oracle``, ``learned_stop``, the
  mean return's interval over images, Holm-adjusted McNemar p-values and the margin verdict.
"""

from __future__ import annotations

import numpy as np

from .statistics import PairedBootstrap, percentile_ci

__all__ = ["AUC_POINTS", "RECORD_FIELDS", "cost_per_step", "holm", "margin_verdict", "read_curve", "spent_madds",
           "threshold_points", "verdict"]

#: per-image record fields of ``per_image.npz`` (``NAME/field``), besides ``image_index`` and ``target``.
RECORD_FIELDS = ("correct", "p_true", "pred", "confidence", "exit_step", "stopped", "madds", "returns",
                 "decision_madds")
#: budgets of the AUC grid (evenly spaced from the glance's cost to the reference's full-episode cost).
AUC_POINTS = 20


def spent_madds(env_cumulative, decision_madds, exit_step, stopped) -> np.ndarray:
    """(R, E) multiply-adds each episode spent: the env's looks up to its exit step plus its decisions
    (exit_step of them, one more when the agent stopped: the stop is a decision too)."""
    env = np.asarray(env_cumulative, dtype=np.float64)
    x = np.asarray(exit_step, dtype=np.int64)
    a = np.asarray(decision_madds, dtype=np.float64).reshape(-1, 1)
    return env[x] + a * (x + np.asarray(stopped, dtype=np.int64))


def cost_per_step(env_cumulative, decision_madds, exit_step, stopped) -> np.ndarray:
    """(R, T', E) what image e has cost run r after step t: the looks up to min(t, exit) and the decisions made
    by then (t while running; exit + stopped after the exit). Without a stop this is the benchmark's
    ``cumsum(madds_per_step)`` for every image."""
    env = np.asarray(env_cumulative, dtype=np.float64)
    x = np.asarray(exit_step, dtype=np.int64)[:, None, :]
    s = np.asarray(stopped, dtype=np.int64)[:, None, :]
    t = np.arange(env.shape[0])[None, :, None]
    a = np.asarray(decision_madds, dtype=np.float64).reshape(-1, 1, 1)
    return env[np.minimum(t, x)] + a * np.where(t <= x, t, x + s)


def threshold_points(confidence, correct, cost, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """One run's budgeted curve, per image: (madds (P,), correct (P, E) floats), sorted by madds (stable).

    The points are the two settings that need no fitting — everyone answers with the glance, everyone runs to
    the last step — and one per fitted threshold vector: image e exits at the first step whose confidence
    reaches that step's threshold (:func:`feature_nets.budgeted.evaluate_thresholds`) and costs what it spent
    by then (:func:`cost_per_step`).

    Args:
        confidence, correct, cost: (T', E) of one run.
        thresholds: (P, T') fitted thresholds (the last of each −1e8: everyone exits somewhere).
    """
    conf = np.asarray(confidence, dtype=np.float32).astype(np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    steps, n = conf.shape
    thr = np.asarray(thresholds, dtype=np.float32).astype(np.float64).reshape(-1, steps)   # float32 as fitted
    passes = conf[None] >= thr[:, :, None]                                                # (P, T', E)
    exit_at = np.where(passes.any(1), passes.argmax(1), steps - 1)                        # (P, E)
    cols = np.arange(n)
    per_image = np.concatenate([correct[[0]], correct[[-1]], correct[exit_at, cols]])     # (P + 2, E)
    costs = np.concatenate([cost[[0]], cost[[-1]], cost[exit_at, cols]]).mean(1)
    order = np.argsort(costs, kind="stable")
    return costs[order], per_image[order]


def read_curve(madds: np.ndarray, per_image: np.ndarray, budget: float, flat_right: bool = False):
    """(E,) expected correctness of each image at ``budget``, or None where the curve does not reach it.

    Between the two neighbouring points (costs m₀ < b < m₁) each image's correctness is (1 − w)·c₀ + w·c₁,
    w = (b − m₀) / (m₁ − m₀): the curve's top-1 is then the linear interpolation of the two points' top-1, and
    nothing random enters. A budget equal to a point's cost reads that point (the first of tied points). Beyond
    the costliest point: None, or that point with ``flat_right`` (the agent answers and spends less).
    """
    tol = 1e-9 * max(1.0, float(np.abs(madds).max()))
    if budget < madds[0] - tol:
        return None
    if budget > madds[-1] + tol:
        return per_image[-1] if flat_right else None
    i = int(np.searchsorted(madds, budget - tol, side="left"))
    if i >= len(madds) or abs(madds[i] - budget) <= tol or i == 0:
        return per_image[min(i, len(madds) - 1)]
    w = (budget - madds[i - 1]) / (madds[i] - madds[i - 1])
    return (1.0 - w) * per_image[i - 1] + w * per_image[i]


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values (family-wise error): the i-th smallest (0-based) times
    (m − i), made non-decreasing, capped at 1; in the input's order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def margin_verdict(delta_ci, margin: float | None) -> str | None:
    """The wording for a paired interval [lo, hi] of Δ (points) against ±``margin``: *equivalent within ±M* when
    it lies inside (−M, M), *not worse than −M* when only its lower end is above −M, else None."""
    if margin is None or delta_ci is None:
        return None
    lo, hi = delta_ci
    m = float(margin)
    if -m < lo and hi < m:
        return f"equivalent within ±{m:g}"
    if lo > -m:
        return f"not worse than −{m:g}"
    return None


class _Agent:
    """One agent's per-image records and the quantities derived from them (runs R, steps T', images E)."""

    def __init__(self, name: str, entry: dict, rec: dict, env_cumulative: np.ndarray) -> None:
        self.name, self.entry = name, entry
        self.correct = np.asarray(rec["correct"], dtype=bool)                       # (R, T', E)
        r, steps, n = self.correct.shape
        self.exit_step = np.asarray(rec["exit_step"], dtype=np.int64)               # (R, E)
        self.stopped = np.asarray(rec["stopped"], dtype=bool)
        self.cost = cost_per_step(env_cumulative, rec["decision_madds"], self.exit_step, self.stopped)
        self.spent = spent_madds(env_cumulative, rec["decision_madds"], self.exit_step, self.stopped)
        self.returns = np.asarray(rec["returns"], dtype=np.float64)
        self.stops = bool(self.stopped.any() or (self.exit_step < steps - 1).any())
        self.curves = [threshold_points(rec["confidence"][i], self.correct[i], self.cost[i],
                                        entry["runs"][i]["budgeted"]["thresholds"]) for i in range(r)]

    def at(self, budgets, flat_right: bool = False) -> list[np.ndarray | None]:
        """Per budget: (R, E) expected correctness of every run, or None when a run's curve does not reach it."""
        out = []
        for b in budgets:
            runs = [read_curve(m, c, float(b), flat_right) for m, c in self.curves]
            out.append(None if any(x is None for x in runs) else np.stack(runs))
        return out


def verdict(entries: dict[str, dict], records: dict[str, dict], env_cumulative, reference: str | None,
            seed: int = 0, n_boot: int = 2000, confidence: float = 0.95, margin: float | None = None) -> None:
    """Add ``operating_point``, ``exit_oracle``, ``mean_return_ci`` (images and runs) to every agent with full
    records, and against ``reference``: ``equal_compute``, ``auc``, ``learned_stop`` (an agent that stops),
    Holm-adjusted McNemar p-values (contenders only) and the ``margin`` verdict, in place.

    Args:
        entries: name → results entry (with ``runs[i].budgeted.thresholds``; ``vs_reference`` from
            :func:`agents.benchmark.comparison.compare_agents` already there).
        records: name → per-image records (:data:`RECORD_FIELDS`); agents without them are skipped.
        env_cumulative: (T',) the env's cumulative multiply-adds per step.
    """
    env = np.asarray(env_cumulative, dtype=np.float64)
    full = {n: r for n, r in records.items() if all(k in r for k in RECORD_FIELDS) and n in entries}
    if not full:
        return
    n_images = next(iter(full.values()))["correct"].shape[2]
    boot = PairedBootstrap(n_images, n_boot=n_boot, seed=seed)

    def ci(samples):
        return percentile_ci(np.asarray(samples), confidence).tolist()

    agents = {n: _Agent(n, entries[n], r, env) for n, r in full.items()}
    for name, ag in agents.items():
        e = entries[name]
        final = ag.correct[:, -1, :].astype(np.float64)
        e["operating_point"] = {
            "madds": float(ag.spent.mean()), "madds_ci": ci(boot.means(ag.spent, name)),
            "top1": float(final.mean() * 100.0), "top1_ci": ci(boot.means(final, name) * 100.0),
            "mean_exit_step": float(ag.exit_step.mean()), "stopped_share": float(ag.stopped.mean()),
        }
        e["mean_return_ci"] = ci(boot.means(ag.returns, name))
        any_ok = ag.correct.any(1)                                                     # (R, E)
        first = np.where(any_ok, ag.correct.argmax(1), 0)
        oracle_cost = np.take_along_axis(ag.cost, first[:, None, :], 1)[:, 0, :]
        if ag.stops:
            # the fitted curve charged every step of every episode; one that ended earlier did not spend them: the
            # curve of what each image spent (the same thresholds; its last point is the agent's own stop)
            e["budgeted"] = {"p": None, "charged": "what each image spent (its own exit)",
                             "madds": np.mean([m for m, _ in ag.curves], 0).tolist(),
                             "top1": (np.mean([c.mean(1) for _, c in ag.curves], 0) * 100.0).tolist()}
        e["exit_oracle"] = {"top1": float(any_ok.mean() * 100.0),
                            "top1_ci": ci(boot.means(any_ok.astype(np.float64), name) * 100.0),
                            "madds": float(oracle_cost.mean())}
    if reference is None or reference not in agents:
        return
    ref = agents[reference]
    budgets = ref.cost[:, 1:, :].mean(axis=(0, 2))                                       # t = 1 … T' − 1 looks
    grid = np.linspace(env[0], float(ref.cost[:, -1, :].mean()), AUC_POINTS)
    ref_at = ref.at(budgets)
    ref_auc = np.mean(np.stack(ref.at(grid, flat_right=True)), axis=0)                    # (R, E)
    ref_auc_samples = boot.means(ref_auc, reference) * 100.0
    for name, ag in agents.items():
        e = entries[name]
        own = ag.at(budgets)
        top1, top1_ci, delta, delta_ci = [], [], [], []
        for mine, theirs in zip(own, ref_at):
            if mine is None or theirs is None:  # n/a: the curve does not reach this budget
                for column in (top1, top1_ci, delta, delta_ci):
                    column.append(None)
                continue
            s, rs = boot.means(mine, name) * 100.0, boot.means(theirs, reference) * 100.0
            top1.append(float(mine.mean() * 100.0))
            top1_ci.append(ci(s))
            delta.append(float((mine.mean() - theirs.mean()) * 100.0))
            delta_ci.append(ci(s - rs))
        e["equal_compute"] = {"reference": reference, "budgets": budgets.tolist(), "looks": list(range(1, len(budgets) + 1)),
                              "top1": top1, "ci": top1_ci, "delta": delta, "delta_ci": delta_ci}
        auc = np.mean(np.stack(ag.at(grid, flat_right=True)), axis=0)
        samples = boot.means(auc, name) * 100.0
        e["auc"] = {"budgets": grid.tolist(), "value": float(auc.mean() * 100.0), "ci": ci(samples),
                    "delta": float((auc.mean() - ref_auc.mean()) * 100.0), "delta_ci": ci(samples - ref_auc_samples)}
        if ag.stops:
            op = e["operating_point"]
            (theirs,) = ref.at([op["madds"]])
            final = ag.correct[:, -1, :].astype(np.float64)
            entry = {"reference": reference, "madds": op["madds"], "top1": op["top1"],
                     "reference_top1": None, "delta": None, "delta_ci": None}
            if theirs is not None:
                entry["reference_top1"] = float(theirs.mean() * 100.0)
                entry["delta"] = float((final.mean() - theirs.mean()) * 100.0)
                entry["delta_ci"] = ci(boot.means(final, name) * 100.0 - boot.means(theirs, reference) * 100.0)
            e["learned_stop"] = entry
    _holm_and_margin(entries, reference, margin)


def _holm_and_margin(entries: dict[str, dict], reference: str, margin: float | None) -> None:
    """McNemar p-values Holm-adjusted over the contenders (upper bounds are not in the family: None), and the
    margin verdict of each agent's last-step Δ interval."""
    contenders = [n for n, e in entries.items() if n != reference and "vs_reference" in e and not e.get("upper_bound")]
    adjusted = holm([entries[n]["vs_reference"]["mcnemar"]["p_value"] for n in contenders]) if contenders else []
    for name, e in entries.items():
        vs = e.get("vs_reference")
        if vs is None:
            continue
        vs["mcnemar"]["p_holm"] = adjusted[contenders.index(name)] if name in contenders else None
        vs["mcnemar"]["holm_family"] = len(contenders)
        vs["margin"] = margin
        vs["margin_verdict"] = margin_verdict(vs["top1_difference_ci"][-1], margin)
