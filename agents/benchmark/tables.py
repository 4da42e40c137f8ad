"""The benchmark's tables: Markdown (printed and ``results.md``) and CSV (``results.csv``).

The Markdown table lists the contenders, then the upper bound apart. Beside top-1 per step it shows the
two-level 95 % interval of the last step, the paired difference to the reference agent with its interval and
McNemar's p-value (raw and Holm-adjusted over the contenders), the probability of improvement (only where both
agents have ≥ 2 runs), the margin verdict (``--margin``), top-1 at the reference's 1-look and 2-look budgets
and the AUC with their paired differences (the equal-compute verdict), the share of the oracle gap closed, the
mean return, the multiply-adds per image (the env's looks plus the agent's own decisions; marked † with a note
below when an agent was charged 0 for its own decisions without declaring a cost) and the seconds per decision.
Below it: the per-step Δ vs the reference, and each agent's operating point (what it spent, how often it was
right), its exit oracle and, for an agent that stops, its learned stop against the reference's threshold curve at
the same multiply-adds (docs/statistics.md, docs/benchmark.md). Last, where the env's checkpoint stores numbers for
its policy, the "as published" table: those numbers beside the measured agent and measured − published per step
(:func:`agents.benchmark.published.as_published`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from feature_nets.files import atomic_write_text

from ..base import PathLike

__all__ = ["csv_text", "markdown_table", "write_csv"]

#: Marks the multiply-adds of an agent charged 0 for its own decisions without declaring it (and its note).
UNACCOUNTED_MARK = "†"


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
    margin = results.get("margin")
    looks = _equal_compute_looks(results)
    if ref:
        cols += [f"Δ vs {ref} (points) [95% CI]", "McNemar p", "Holm p", "P(improvement)"]
        if margin is not None:
            cols += [f"verdict (±{margin:g})"]
        cols += [f"top-1 at {ref}'s {t}-look budget, Δ [95% CI]" for t in looks]
        if looks:
            cols += ["AUC (top-1 over budgets), Δ [95% CI]"]
    if gap:
        cols += ["oracle gap closed [95% CI]"]
    cols += ["mean return (95% CI)", "multiply-adds spent / image (agent's own)", "µs / decision"]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)

    def row(name: str, e: dict) -> str:
        steps = " / ".join(f"{v:.1f}" for v in e["anytime_top1"])
        lo, hi = e["anytime_top1_ci"][-1]
        cells = [name, str(e["n_runs"]), steps, f"[{lo:.1f}, {hi:.1f}]"]
        if ref:
            vs = e.get("vs_reference")
            if vs is None:
                cells += ["reference", "", "", ""] + ([""] if margin is not None else [])
            else:
                dlo, dhi = vs["top1_difference_ci"][-1]
                mark = "*" if vs["significant"] else ""
                holm = vs["mcnemar"].get("p_holm")
                poi = vs.get("probability_of_improvement")
                cells += [f"{vs['top1_difference'][-1]:+.1f} [{dlo:+.1f}, {dhi:+.1f}]{mark}",
                          f"{vs['mcnemar']['p_value']:.2g}", "—" if holm is None else f"{holm:.2g}",
                          "—" if poi is None else f"{poi:.2f}"]
                if margin is not None:
                    cells += [vs.get("margin_verdict") or "—"]
            ec = e.get("equal_compute")
            for i in range(len(looks)):
                cells += [_with_delta(ec["top1"][i], ec["delta"][i], ec["delta_ci"][i], name == ref)
                          if ec else "—"]
            if looks:
                auc = e.get("auc")
                cells += [_with_delta(auc["value"], auc["delta"], auc["delta_ci"], name == ref) if auc else "—"]
        if gap:
            ci = e.get("oracle_gap_closed_ci")
            share = e.get("oracle_gap_closed", float("nan"))
            cells += [f"{share:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")]
        rlo, rhi = e["mean_return_ci"]
        spent, own = _spent_madds(e)
        unaccounted = UNACCOUNTED_MARK if e.get("decision_madds_note") else ""
        cells += [f"{e['mean_return']:.4f} [{rlo:.4f}, {rhi:.4f}]",
                  f"{_fmt_madds(spent)} ({_fmt_madds(own)}){unaccounted}",
                  f"{1e6 * e.get('seconds_per_decision', 0.0):.1f}"]
        return "| " + " | ".join(cells) + " |"

    contenders = [(n, e) for n, e in results["agents"].items() if not e.get("upper_bound")]
    bounds = [(n, e) for n, e in results["agents"].items() if e.get("upper_bound")]
    source = f" read from the {results['image_source']}" if results.get("image_source") else ""
    stored = [n for n, how in (results.get("thresholds") or {}).items() if how == "checkpoint"]
    from_ckpt = f"; {', '.join(stored)}: the checkpoint's stored thresholds" if stored else ""
    lines = [f"## {results['env_id']}: {results['episodes']} images ({results['eval_images']}){source}, "
             f"budgeted thresholds fitted on {results['fit']['images']}{from_ckpt}", ""]
    if contenders:
        lines += [head] + [row(n, e) for n, e in contenders] + [""]
    if bounds:
        lines += ["### Upper bound (reads the label; not a contender)", "", head]
        lines += [row(n, e) for n, e in bounds] + [""]
    notes = ["Intervals: two-level bootstrap over runs and images, images paired across agents "
             "(docs/statistics.md)."]
    if ref:
        notes.append(f"Δ: paired difference to {ref} at the last step; * = its 95% interval excludes 0. Holm p: "
                     "McNemar's p adjusted for the number of contenders. P(improvement): over runs, only where "
                     "both agents have ≥ 2 runs.")
        if looks:
            notes.append(f"Equal compute: top-1 read off each agent's budgeted curve at the multiply-adds {ref} "
                         "spends with t looks (interpolated between fitted points; n/a: the curve does not reach "
                         "that budget); AUC: mean top-1 over 20 budgets from the glance to "
                         f"{ref}'s full episode (docs/statistics.md).")
        if margin is not None:
            notes.append(f"Verdict: 'equivalent within ±{margin:g}' when the last-step Δ's 95% interval lies "
                         f"inside ±{margin:g} points, 'not worse than −{margin:g}' when only its lower end is above "
                         f"−{margin:g}.")
    lines += _per_step_delta_table(results) + _operating_point_table(results)
    if results.get("paper_madds_cumulative"):
        notes.append("Multiply-adds: the env's looks plus the agent's own decisions; the paper's accounting "
                     f"(looks + its policy) is {_fmt_madds(results['paper_madds_cumulative'][-1])} per image.")
    folder_refs = results.get("folder_references")
    if folder_refs and len(set(folder_refs)) > 1:
        notes.append("Merged folders benchmarked against different references ("
                     + ", ".join(f"{f}: {r or 'none'}" for f, r in zip(results.get("merged_from", []), folder_refs))
                     + (f"); every comparison here is recomputed against {ref} from their per_image.npz."
                        if ref else "); no paired comparison is shown (--reference NAME recomputes one)."))
    unaccounted = [n for n, e in results["agents"].items() if e.get("decision_madds_note")]
    if unaccounted:
        notes.append(f"{UNACCOUNTED_MARK} {', '.join(unaccounted)}: charged 0 multiply-adds for "
                     f"{'its' if len(unaccounted) == 1 else 'their'} own decisions — act ran no torch operations "
                     "(the only ones counted) and no decision_madds is declared. Code in numpy (or anything else "
                     "not torch) is not counted: set `decision_madds` (multiply-adds per decision per image) on the "
                     "agent (docs/benchmark.md, \"Declaring an agent's own cost\").")
    published = _as_published_table(results)
    return "\n".join(lines + notes + ([""] + published if published else [])) + "\n"


def _equal_compute_looks(results: dict) -> list[int]:
    """The looks (1, 2) whose reference budgets the main table shows."""
    ref = results.get("reference")
    ec = results["agents"].get(ref, {}).get("equal_compute") if ref else None
    return [t for t in (1, 2) if ec and t <= len(ec["budgets"])]


def _with_delta(value, delta, delta_ci, is_reference: bool) -> str:
    """``71.2 (+0.4 [-0.3, +1.1])``; n/a where the curve does not reach the budget."""
    if value is None:
        return "n/a"
    if is_reference or delta is None:
        return f"{value:.1f}"
    lo, hi = delta_ci
    mark = "*" if lo > 0 or hi < 0 else ""
    return f"{value:.1f} ({delta:+.1f} [{lo:+.1f}, {hi:+.1f}]{mark})"


def _per_step_delta_table(results: dict) -> list[str]:
    """One row per agent: the paired Δ to the reference after each step, with its interval."""
    ref = results.get("reference")
    rows = [(n, e["vs_reference"]) for n, e in results["agents"].items() if e.get("vs_reference")]
    if not ref or not rows:
        return []
    T = results["T"]
    out = [f"### Per-step Δ vs {ref} (top-1 points, paired 95% CI)", "",
           "| agent | " + " | ".join(f"step {t}" for t in range(T)) + " |", "|" + "---|" * (T + 1)]
    for name, vs in rows:
        cells = [f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]" for d, (lo, hi) in zip(vs["top1_difference"],
                                                                           vs["top1_difference_ci"])]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out + [""]


def _operating_point_table(results: dict) -> list[str]:
    """Per agent: its operating point, its exit oracle, and (an agent that stops) its learned stop vs the reference."""
    rows = [(n, e) for n, e in results["agents"].items() if e.get("operating_point")]
    if not rows:
        return []
    ref = results.get("reference")
    stops = any(e.get("learned_stop") for _, e in rows)
    cols = ["agent", "multiply-adds / image [95% CI]", "top-1 of its answers [95% CI]", "mean looks",
            "exit oracle: top-1 at multiply-adds"]
    if stops:
        cols += [f"learned stop: {ref}'s threshold curve at its multiply-adds, Δ [95% CI]"]
    out = ["### Operating points (what each agent spent per image, and how often its answer was right)", "",
           "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, e in rows:
        op, eo = e["operating_point"], e["exit_oracle"]
        cells = [name, f"{_fmt_madds(op['madds'])} [{_fmt_madds(op['madds_ci'][0])}, {_fmt_madds(op['madds_ci'][1])}]",
                 f"{op['top1']:.1f} [{op['top1_ci'][0]:.1f}, {op['top1_ci'][1]:.1f}]", f"{op['mean_exit_step']:.2f}",
                 f"{eo['top1']:.1f} at {_fmt_madds(eo['madds'])}"]
        if stops:
            ls = e.get("learned_stop")
            cells += ["—" if ls is None else _with_delta(ls["reference_top1"], ls["delta"], ls["delta_ci"], False)]
        out.append("| " + " | ".join(cells) + " |")
    return out + ["", "Exit oracle: each image stops at its first correct step (an image never right stops at "
                  "the glance): the bound on any stopping rule with the agent's looks.", ""]


def _spent_madds(e: dict) -> tuple[float, float]:
    """Mean multiply-adds an agent spent per image, and the part its own decisions took: the full episode for an
    agent that never stops, its operating point for one that does (a stop is a decision too)."""
    per_step = e.get("agent_madds_per_step", [0.0])
    op = e.get("operating_point")
    if op is None or op.get("stopped_share", 0.0) == 0.0:
        return float(e["madds"]), float(np.sum(per_step))
    decision = float(per_step[1]) if len(per_step) > 1 else 0.0
    return float(op["madds"]), decision * (op["mean_exit_step"] + op["stopped_share"])


def _curve_summary(madds, top1) -> str:
    """``39 points: 2.7M → 67.8 … 13.7M → 78.0`` (the cheapest and the costliest point)."""
    if not madds:
        return "—"
    order = np.argsort(madds, kind="stable")
    lo, hi = order[0], order[-1]
    return (f"{len(madds)} points: {_fmt_madds(madds[lo])} → {top1[lo]:.1f} … "
            f"{_fmt_madds(madds[hi])} → {top1[hi]:.1f}")


def _as_published_table(results: dict) -> list[str]:
    """The checkpoint's stored numbers for its policy beside the measured agent, and measured − published."""
    pub = results.get("as_published")
    if not pub:
        return []
    name, T = pub["agent"], len(pub["measured_anytime_top1"])
    measured = results["agents"][name]
    E, N = pub["measured_images"], pub["eval_split_images"]
    scope = (f"all {N} images of the evaluation split" if pub["full_split"] else
             f"{E} of the {N} images of the evaluation split — the stored numbers are over a whole split, so only "
             f"--episodes {N} compares like with like")
    if pub.get("same_images") is False:
        scope += "; the stored numbers were measured on other images (results_protocol)"
    out = [f"### As published (stored in the checkpoint; not measured here): {name}", "",
           f"Stored in {pub['source'] or 'the env checkpoint'}" + (f" ({pub['note']})" if pub.get("note") else "")
           + f". The measured row used {scope}.", "",
           f"| row | top-1 per step (%), steps 0..{T - 1} | budgeted curve (multiply-adds → top-1) |", "|---|---|---|"]

    def steps(values) -> str:
        return " / ".join(f"{v:.2f}" for v in values[:T]) if values is not None else "—"

    b = pub.get("budgeted")
    out.append(f"| {name} as published | {steps(pub['anytime_top1'])} | "
               f"{_curve_summary(b['madds'], b['top1']) if b else '—'} |")
    how = ("the checkpoint's thresholds" if pub["thresholds"] == "checkpoint"
           else "thresholds fitted on the fit split")
    mb = measured["budgeted"]
    out.append(f"| {name} measured ({E} images) | {steps(pub['measured_anytime_top1'])} | "
               f"{_curve_summary(mb['madds'], mb['top1'])} ({how}) |")
    delta = " / ".join(f"{d:+.2f}" for d in pub["delta_per_step"]) if pub["delta_per_step"] is not None else "—"
    bd = pub.get("budgeted_delta")
    if bd:
        curve = (f"the same thresholds: top-1 {min(bd['top1']):+.2f} … {max(bd['top1']):+.2f} points, multiply-adds "
                 f"{min(bd['madds']):+.3g} … {max(bd['madds']):+.3g}")
    elif b:
        curve = "— (other thresholds: compare the curves in budgeted.png, or --thresholds checkpoint)"
    else:
        curve = "—"
    out.append(f"| measured − published (points) | {delta} | {curve} |")
    return out + ["", "The stored budgeted multiply-adds are in the checkpoint's own accounting (released files: "
                  "the paper's `flops`, looks plus its policy)."]


def csv_text(results: dict) -> str:
    """One row per (agent, step): top-1 with its interval, cumulative multiply-adds, and the agent's return/seconds."""
    cols = ["agent", "upper_bound", "n_runs", "step", "top1", "top1_lo", "top1_hi", "madds_cumulative",
            "mean_return", "mean_return_lo", "mean_return_hi", "seconds", "delta", "delta_lo", "delta_hi"]
    f = io.StringIO()
    w = csv.writer(f)
    w.writerow(cols)
    for name, e in results["agents"].items():
        cum = np.cumsum(e["madds_per_step"])
        vs = e.get("vs_reference")
        for t, v in enumerate(e["anytime_top1"]):
            lo, hi = e["anytime_top1_ci"][t]
            delta = ([f"{vs['top1_difference'][t]:.6g}", f"{vs['top1_difference_ci'][t][0]:.6g}",
                      f"{vs['top1_difference_ci'][t][1]:.6g}"] if vs else ["", "", ""])
            w.writerow([name, int(bool(e.get("upper_bound"))), e["n_runs"], t, f"{v:.6g}", f"{lo:.6g}", f"{hi:.6g}",
                        f"{cum[t]:.6g}", f"{e['mean_return']:.6g}", f"{e['mean_return_ci'][0]:.6g}",
                        f"{e['mean_return_ci'][1]:.6g}", f"{e['seconds']:.6g}"] + delta)
    return f.getvalue()


def write_csv(results: dict, path: PathLike) -> Path:
    """``results.csv`` (see :func:`csv_text`), atomically."""
    return atomic_write_text(path, csv_text(results))


