"""The benchmark's tables: Markdown (printed and ``results.md``) and CSV (``results.csv``).

The Markdown table lists the contenders, then the upper bound apart. Beside top-1 per step it shows the
two-level 95 % interval of the last step, the paired difference to the reference agent with its interval and
McNemar's p-value, the share of the oracle gap closed, the mean return, the multiply-adds per image (the env's
looks plus the agent's own decisions) and the seconds per decision (docs/statistics.md, docs/benchmark.md).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from feature_nets.files import atomic_write_text

from ..base import PathLike

__all__ = ["csv_text", "markdown_table", "write_csv"]


def _fmt_madds(x: float) -> str:
    from .plots import madds_unit

    div, unit = madds_unit(x)
    return f"{x / div:.3g}{unit}"


def markdown_table(results: dict) -> str:
    """The results as Markdown: contenders, then the upper bound apart (see the module docstring)."""
    T = results["T"]
    ref = results.get("reference")
    gap = any("oracle_gap_closed" in e for e in results["agents"].values())
    cols = ["agent", "runs", f"top-1 per step (%), steps 0..{T - 1}", "last-step top-1 95% CI"]
    if ref:
        cols += [f"Δ vs {ref} (points) [95% CI]", "McNemar p"]
    if gap:
        cols += ["oracle gap closed [95% CI]"]
    cols += ["mean return (95% CI)", "multiply-adds / image (agent's own)", "µs / decision"]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)

    def row(name: str, e: dict) -> str:
        steps = " / ".join(f"{v:.1f}" for v in e["anytime_top1"])
        lo, hi = e["anytime_top1_ci"][-1]
        cells = [name, str(e["n_runs"]), steps, f"[{lo:.1f}, {hi:.1f}]"]
        if ref:
            vs = e.get("vs_reference")
            if vs is None:
                cells += ["reference", ""]
            else:
                dlo, dhi = vs["top1_difference_ci"][-1]
                mark = "*" if vs["significant"] else ""
                cells += [f"{vs['top1_difference'][-1]:+.1f} [{dlo:+.1f}, {dhi:+.1f}]{mark}",
                          f"{vs['mcnemar']['p_value']:.2g}"]
        if gap:
            ci = e.get("oracle_gap_closed_ci")
            share = e.get("oracle_gap_closed", float("nan"))
            cells += [f"{share:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")]
        rlo, rhi = e["mean_return_ci"]
        own = float(np.sum(e.get("agent_madds_per_step", [0.0])))
        cells += [f"{e['mean_return']:.4f} [{rlo:.4f}, {rhi:.4f}]", f"{_fmt_madds(e['madds'])} ({_fmt_madds(own)})",
                  f"{1e6 * e.get('seconds_per_decision', 0.0):.1f}"]
        return "| " + " | ".join(cells) + " |"

    contenders = [(n, e) for n, e in results["agents"].items() if not e.get("upper_bound")]
    bounds = [(n, e) for n, e in results["agents"].items() if e.get("upper_bound")]
    source = f" read from the {results['image_source']}" if results.get("image_source") else ""
    lines = [f"## {results['env_id']}: {results['episodes']} images ({results['eval_images']}){source}, "
             f"budgeted thresholds fitted on {results['fit']['images']}", ""]
    if contenders:
        lines += [head] + [row(n, e) for n, e in contenders] + [""]
    if bounds:
        lines += ["### Upper bound (reads the label; not a contender)", "", head]
        lines += [row(n, e) for n, e in bounds] + [""]
    notes = ["Intervals: two-level bootstrap over runs and images, images paired across agents "
             "(docs/statistics.md)."]
    if ref:
        notes.append(f"Δ: paired difference to {ref} at the last step; * = its 95% interval excludes 0.")
    if results.get("paper_madds_cumulative"):
        notes.append("Multiply-adds: the env's looks plus the agent's own decisions; the paper's accounting "
                     f"(looks + its policy) is {_fmt_madds(results['paper_madds_cumulative'][-1])} per image.")
    return "\n".join(lines + notes) + "\n"


def csv_text(results: dict) -> str:
    """One row per (agent, step): top-1 with its interval, cumulative multiply-adds, and the agent's return/seconds."""
    cols = ["agent", "upper_bound", "n_runs", "step", "top1", "top1_lo", "top1_hi", "madds_cumulative",
            "mean_return", "mean_return_lo", "mean_return_hi", "seconds"]
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(cols)
    for name, e in results["agents"].items():
        cum = np.cumsum(e["madds_per_step"])
        for t, v in enumerate(e["anytime_top1"]):
            lo, hi = e["anytime_top1_ci"][t]
            w.writerow([name, int(bool(e.get("upper_bound"))), e["n_runs"], t, f"{v:.6g}", f"{lo:.6g}", f"{hi:.6g}",
                        f"{cum[t]:.6g}", f"{e['mean_return']:.6g}", f"{e['mean_return_ci'][0]:.6g}",
                        f"{e['mean_return_ci'][1]:.6g}", f"{e['seconds']:.6g}"])
    return f.getvalue()


def write_csv(results: dict, path: PathLike) -> Path:
    """``results.csv`` (see :func:`csv_text`), atomically."""
    return atomic_write_text(path, csv_text(results))


