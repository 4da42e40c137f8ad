"""Benchmark results: per-run numbers aggregated per agent, and the files they are written to.

:func:`aggregate_runs` turns the runs of one agent into means and 95 % bootstrap intervals over runs;
:func:`markdown_table`, :func:`write_csv` and :func:`write_outputs` write ``results.md``, ``results.csv``,
``results.json`` and the plots, each file atomically (docs/benchmark.md, "Outputs").
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from feature_nets.files import atomic_write_text

from .base import PathLike
from .stats import mean_and_ci

__all__ = ["aggregate_runs", "markdown_table", "write_csv", "write_outputs"]


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
        "seconds": float(np.mean([r["seconds"] for r in per_run])),
        "n_runs": len(per_run),
        "runs": [{"label": r["label"], "anytime_top1": r["anytime_top1"], "mean_return": r["mean_return"],
                  "seconds": r["seconds"], "budgeted": {"madds": r["budgeted"]["madds"], "top1": r["budgeted"]["top1"],
                                                        "thresholds": r["budgeted"]["thresholds"]}}
                 for r in per_run],
        "upper_bound": per_run[0]["upper_bound"],
        "source": source,
    }


def _fmt_madds(x: float) -> str:
    from .plots import madds_unit

    div, unit = madds_unit(x)
    return f"{x / div:.3g}{unit}"


def markdown_table(results: dict) -> str:
    """The results as Markdown: contenders, then the upper bound apart."""
    T = results["T"]
    head = (f"| agent | runs | top-1 per step (%), steps 0..{T - 1} | last-step top-1 95% CI | mean return (95% CI) "
            "| multiply-adds / image | seconds |\n|---|---|---|---|---|---|---|")

    def row(name: str, e: dict) -> str:
        steps = " / ".join(f"{v:.1f}" for v in e["anytime_top1"])
        lo, hi = e["anytime_top1_ci"][-1]
        rlo, rhi = e["mean_return_ci"]
        return (f"| {name} | {e['n_runs']} | {steps} | [{lo:.1f}, {hi:.1f}] | {e['mean_return']:.4f} "
                f"[{rlo:.4f}, {rhi:.4f}] | {_fmt_madds(e['madds'])} | {e['seconds']:.2f} |")

    contenders = [(n, e) for n, e in results["agents"].items() if not e.get("upper_bound")]
    bounds = [(n, e) for n, e in results["agents"].items() if e.get("upper_bound")]
    lines = [f"## {results['env_id']}: {results['episodes']} images ({results['eval_images']}), "
             f"budgeted thresholds fitted on {results['fit']['images']}", ""]
    if contenders:
        lines += [head] + [row(n, e) for n, e in contenders] + [""]
    if bounds:
        lines += ["### Upper bound (reads the label; not a contender)", "", head]
        lines += [row(n, e) for n, e in bounds] + [""]
    return "\n".join(lines)


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


def write_outputs(results: dict, out_dir: PathLike) -> list[Path]:
    """results.json, results.md, results.csv and the PNG plots, each written atomically."""
    from .plots import make_plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2)),
             atomic_write_text(out_dir / "results.md", markdown_table(results)),
             write_csv(results, out_dir / "results.csv")]
    paths += make_plots(results, out_dir)
    return paths
