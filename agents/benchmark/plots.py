"""Benchmark plots (matplotlib, Agg canvas; no pyplot state, safe in headless runs and threads).

matplotlib (the ``benchmark`` extra) is imported when the first plot is drawn, so that the tables
(:func:`madds_unit`) work without it.

Each function takes the dict :func:`agents.benchmark.run_benchmark` returns and writes one PNG:

* :func:`plot_anytime` — top-1 (%) after each step (0 = glance), 95 % band over runs; the checkpoint's stored
  numbers for its policy dotted ("as published") where the results have them;
* :func:`plot_budgeted` — budgeted-batch curve: top-1 (%) vs mean multiply-adds per image, and for an agent
  that stops by itself its operating point (a star, with its intervals); the stored curve dotted;
* :func:`plot_mean_return` — mean episode return, 95 % interval as error bars;
* :func:`plot_madds_per_step` — the env's multiply-adds per step and each agent's running total;
* :func:`plot_seconds` — wall-clock seconds of each agent's evaluation pass.

The upper-bound agent (oracle) is drawn dashed / hatched so it is not read as a contender.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feature_nets.extras import require
from feature_nets.files import atomic_write

__all__ = ["plot_anytime", "plot_budgeted", "plot_mean_return", "plot_madds_per_step", "plot_seconds", "make_plots",
           "madds_unit"]


def madds_unit(max_value: float) -> tuple[float, str]:
    """(divisor, label) to show multiply-adds of this size: G, M, K or plain."""
    for div, name in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if max_value >= div:
            return div, name
    return 1.0, ""


def _figure(width: float = 6.4, height: float = 4.2):
    Figure = require("matplotlib.figure", "benchmark", "the benchmark's plots").Figure
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "benchmark", "the benchmark's plots").FigureCanvasAgg
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _title(results: dict, what: str) -> str:
    return f"{what} — {results.get('env_id', '')} ({results.get('episodes', '?')} images)"


def _agents(results: dict):
    """(name, entry, style) in table order, contenders first; a colour of its own per contender (matplotlib's 10
    default colours, then tab20's, so that a long list of agents never repeats one)."""
    items = list(results["agents"].items())
    items.sort(key=lambda kv: bool(kv[1].get("upper_bound")))
    n = sum(not e.get("upper_bound") for _, e in items)
    if n > 10:
        cmap = require("matplotlib", "benchmark", "the benchmark's plots").colormaps["tab20"]
        colours = [cmap(i % 20) for i in range(n)]
    else:
        colours = [f"C{i}" for i in range(n)]
    return [(name, e, {"linestyle": "--", "color": "0.35"} if e.get("upper_bound") else {"color": colours[i]})
            for i, (name, e) in enumerate(items)]


def _legend_outside(fig, ax, entries: int) -> None:
    """The legend beside the axes when it has many entries (inside, it hides the curves)."""
    if entries <= 8:
        ax.legend(fontsize=8)
        return
    fig.set_size_inches(fig.get_figwidth() + 3.2, max(fig.get_figheight(), 0.22 * entries + 1.0))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def plot_anytime(results: dict, path) -> Path:
    fig, ax = _figure()
    for name, e, style in _agents(results):
        y = np.asarray(e["anytime_top1"])
        steps = np.arange(len(y))
        label = name + (" (upper bound)" if e.get("upper_bound") else "")
        line = ax.plot(steps, y, marker="o", label=label, **style)[0]
        ci = np.asarray(e.get("anytime_top1_ci", []))
        if ci.size and e.get("n_runs", 1) > 1:
            ax.fill_between(steps, ci[:, 0], ci[:, 1], alpha=0.2, color=line.get_color())
    pub = results.get("as_published") or {}
    if pub.get("anytime_top1"):
        y = np.asarray(pub["anytime_top1"][: int(results.get("T", len(pub["anytime_top1"])))])
        ax.plot(np.arange(len(y)), y, marker="x", linestyle=":", color="black",
                label=f"{pub['agent']} as published (stored)")
    ax.set_xlabel("step (0 = glance)")
    ax.set_ylabel("top-1 (%)")
    ax.set_xticks(range(int(results.get("T", 1))))
    ax.grid(alpha=0.3)
    _legend_outside(fig, ax, len(ax.get_legend_handles_labels()[0]))
    ax.set_title(_title(results, "Anytime top-1"), fontsize=9)
    return _save(fig, path)


def plot_budgeted(results: dict, path) -> Path:
    fig, ax = _figure()
    top = max((max(e["budgeted"]["madds"]) for _, e, _ in _agents(results) if e["budgeted"]["madds"]), default=1.0)
    div, unit = madds_unit(top)
    for name, e, style in _agents(results):
        b = e["budgeted"]
        order = np.argsort(b["madds"], kind="stable")
        x = np.asarray(b["madds"])[order] / div
        y = np.asarray(b["top1"])[order]
        line, = ax.plot(x, y, marker=".", label=name + (" (upper bound)" if e.get("upper_bound") else ""), **style)
        op = e.get("operating_point")
        if op is not None and op.get("stopped_share", 0.0) > 0:
            # an agent that stops by itself: where its own stop lands (intervals over images and runs)
            xerr = np.abs(np.array(op["madds_ci"], dtype=float)[:, None] / div - op["madds"] / div)
            yerr = np.abs(np.array(op["top1_ci"], dtype=float)[:, None] - op["top1"])
            ax.errorbar([op["madds"] / div], [op["top1"]], xerr=xerr, yerr=yerr, marker="*", markersize=11,
                        color=line.get_color(), linestyle="none", capsize=3,
                        label=f"{name}: its own stop (operating point)")
    pub = (results.get("as_published") or {}).get("budgeted")
    if pub:
        order = np.argsort(pub["madds"], kind="stable")
        ax.plot(np.asarray(pub["madds"])[order] / div, np.asarray(pub["top1"])[order], marker="x", linestyle=":",
                color="black", label=f"{results['as_published']['agent']} as published (stored)")
    ax.set_xlabel(f"mean multiply-adds per image ({unit}MAdds)" if unit else "mean multiply-adds per image")
    ax.set_ylabel("top-1 (%)")
    ax.grid(alpha=0.3)
    _legend_outside(fig, ax, len(ax.get_legend_handles_labels()[0]))
    ax.set_title(_title(results, "Budgeted batch classification"), fontsize=9)
    return _save(fig, path)


def _bars(results: dict, path, key: str, ci_key: str | None, ylabel: str, what: str) -> Path:
    fig, ax = _figure()
    rows = _agents(results)
    names = [n for n, _, _ in rows]
    vals = np.array([e[key] for _, e, _ in rows], dtype=float)
    err = None
    if ci_key is not None:
        ci = np.array([e.get(ci_key, [v, v]) for (_, e, _), v in zip(rows, vals)], dtype=float)
        err = np.stack([vals - ci[:, 0], ci[:, 1] - vals]).clip(min=0)
    colors = ["0.6" if e.get("upper_bound") else f"C{i}" for i, (_, e, _) in enumerate(rows)]
    bars = ax.bar(range(len(rows)), vals, yerr=err, capsize=4, color=colors)
    for bar, (_, e, _) in zip(bars, rows):
        if e.get("upper_bound"):
            bar.set_hatch("//")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(_title(results, what), fontsize=9)
    return _save(fig, path)


def plot_mean_return(results: dict, path) -> Path:
    return _bars(results, path, "mean_return", "mean_return_ci", "mean episode return", "Mean return (95% CI)")


def plot_seconds(results: dict, path) -> Path:
    return _bars(results, path, "seconds", None, "seconds (evaluation pass)", "Wall-clock")


def plot_madds_per_step(results: dict, path) -> Path:
    """The env's multiply-adds per step (every agent pays them) and each agent's cumulative total with its own
    decisions added (the paper's policy for paper-ppo, an SB3 network for SB3 agents, nothing for baselines)."""
    fig, ax = _figure()
    env = np.asarray(results["env_madds_per_step"], dtype=float)
    totals = {name: np.cumsum(e["madds_per_step"]) for name, e in results["agents"].items()}
    top = max([env.sum()] + [t.max() for t in totals.values() if t.size])
    div, unit = madds_unit(top if top > 0 else 1.0)
    steps = np.arange(len(env))
    ax.bar(steps, env / div, color="0.75", label="env, this step (every agent)")
    for i, (name, cum) in enumerate(totals.items()):
        dashed = results["agents"][name].get("upper_bound")
        ax.plot(steps, cum / div, marker="o", ms=3, color=f"C{i % 10}", ls="--" if dashed else "-",
                label=f"{name}, cumulative")
    ax.set_xticks(steps)
    ax.set_xlabel("step (0 = glance)")
    ax.set_ylabel(f"multiply-adds ({unit}MAdds)" if unit else "multiply-adds")
    ax.grid(axis="y", alpha=0.3)
    _legend_outside(fig, ax, len(ax.get_legend_handles_labels()[0]))
    ax.set_title(_title(results, "Multiply-adds: the env's looks plus each agent's own decisions"), fontsize=8)
    return _save(fig, path)


def make_plots(results: dict, out_dir) -> list[Path]:
    """All five plots into ``out_dir``: anytime_top1.png, budgeted.png, mean_return.png, madds_per_step.png,
    seconds.png."""
    out_dir = Path(out_dir)
    return [
        plot_anytime(results, out_dir / "anytime_top1.png"),
        plot_budgeted(results, out_dir / "budgeted.png"),
        plot_mean_return(results, out_dir / "mean_return.png"),
        plot_madds_per_step(results, out_dir / "madds_per_step.png"),
        plot_seconds(results, out_dir / "seconds.png"),
    ]
