"""The benchmark: every agent on the same images, in the same order, with deterministic actions.

Protocol (:func:`run_benchmark`):

1. The evaluation images are E indices spread evenly over the env's evaluation split (i·N // E, E = ``episodes``), run in
   batches of ``batch_size`` through one :class:`~gfnet_env.core.GFNetCore` per agent (built with the
   observation / action modes that agent needs; the networks, images, reward and ``max_steps`` are shared).
   A last, partial batch is padded with copies of its final image, whose results are dropped.
2. Each agent acts deterministically (``act(obs, deterministic=True)``); ``random`` is run with ``seeds``
   seeds instead. Per step the softmax outputs are kept: top-1 after each step (0 = the glance) and the
   return (sum of rewards) per image.
3. Budgeted batch classification (reference §6): the official thresholds are fitted with
   :mod:`feature_nets.budgeted` on the agent's own outputs on held-out images — the ``val`` split of the
   cluttered task (or ``fit_split``), else the images E..E+F−1 of the evaluation split — and evaluated on the
   E evaluation images, giving top-1 vs mean multiply-adds.
4. Runs: a trained agent is evaluated once per trained copy (several ``agent_dirs`` entries, or the seed
   sub-folders of one); ``random`` once per seed; the other baselines once. Means and 95 % bootstrap
   intervals over runs are reported (a single run gives a zero-width interval).
5. The oracle reads the label: it is flagged ``upper_bound`` and listed apart.

Outputs in ``out_dir``: ``results.json``, ``results.csv`` (one row per agent and step), ``results.md`` (the
table, also printed) and the PNG plots of :mod:`agents.plots`. Same seed, same numbers (only the ``seconds``
fields vary).
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from feature_nets import budgeted
from gfnet_env.core import CoreSettings, GFNetCore

from .base import AGENT_JSON, Agent, PathLike, factory_of, jsonable, load_agent, make
from .stats import mean_and_ci

#: Weights shipped for an env, by (env id, agent name) → file under gfnet_env/weights/.
SHIPPED_AGENTS = {("GFNet-ClutteredFashionMNIST-v0", "sb3-ppo"): "sb3_ppo_cluttered_fmnist.zip"}

#: env kwargs that choose images and networks rather than env settings.
_TASK_KWARGS = ("checkpoint", "data_root", "dataset", "split", "trusted_pickle", "num_samples", "seed")
#: env kwargs each agent chooses for itself.
_AGENT_KWARGS = ("obs_mode", "action_mode")


@dataclass
class Run:
    """One evaluation of one agent (a seed, or one trained copy)."""

    label: str
    build: Callable[[], Agent]


@dataclass
class Episodes:
    """What an agent did on a set of images.

    Attributes:
        probs: (T', N, C) float32 softmax outputs after each step (T' = max_steps + 1, step 0 = glance).
        targets: (N,) int64 labels.
        returns: (N,) float64 sum of rewards.
        seconds: wall-clock of the pass.
    """

    probs: torch.Tensor
    targets: torch.Tensor
    returns: np.ndarray
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _env_id(env_id: str) -> str:
    from gfnet_env import ENV_TASKS

    env_id = env_id.split(":")[-1]
    if env_id not in ENV_TASKS:
        raise ValueError(f"unknown GFNet env id {env_id!r}; registered: {sorted(ENV_TASKS)}")
    return env_id


# --- evaluating one agent ----------------------------------------------------------------------------------

def _spread_indices(n: int, k: int) -> tuple[list[int], list[int]]:
    """k indices spread evenly over range(n) (i·n // k), and the remaining indices."""
    chosen = [(i * n) // k for i in range(k)]
    taken = set(chosen)
    return chosen, [i for i in range(n) if i not in taken]


def evaluate_agent(agent: Agent, core: GFNetCore, indices: list[int], deterministic: bool = True) -> Episodes:
    """Run ``agent`` on dataset ``indices`` of ``core`` in batches of ``core.num_envs``, every episode to the end.

    Returns:
        :class:`Episodes` for the ``len(indices)`` images, in the order given.
    """
    if core.settings.early_exit is not None:
        raise ValueError("the benchmark runs every episode to max_steps; leave early_exit unset "
                         "(the budgeted curve measures early exits)")
    b = core.num_envs
    slots = np.arange(b)
    probs, targets, returns = [], [], []
    agent.bind(core)
    t0 = time.perf_counter()
    for start in range(0, len(indices), b):
        idx = list(indices[start:start + b])
        keep = len(idx)
        idx = idx + [idx[-1]] * (b - keep)  # pad the last batch
        agent.reset(b)
        core.reset_slots(slots, idx)
        steps = [torch.softmax(core.logits.float(), -1)[:keep].to('cpu', copy=True)]
        ret = np.zeros(b)
        obs = core.observe()
        for _t in range(core.max_steps):
            actions = agent.act(obs, deterministic=deterministic)
            rewards, _terminated, _info = core.step(actions)
            ret += rewards
            steps.append(torch.softmax(core.logits.float(), -1)[:keep].to('cpu', copy=True))
            obs = core.observe()
        probs.append(torch.stack(steps))
        targets.append(core.targets[:keep].detach().to('cpu', copy=True))  # a copy: the core reuses its buffers
        returns.append(ret[:keep])
    seconds = time.perf_counter() - t0
    return Episodes(torch.cat(probs, 1), torch.cat(targets), np.concatenate(returns), seconds)


def anytime_top1(ep: Episodes) -> list[float]:
    """Top-1 (%) after each step."""
    return ((ep.probs.argmax(-1) == ep.targets[None]).double().mean(1) * 100.0).tolist()


# --- which runs an agent name stands for -------------------------------------------------------------------

def _trained_paths(name: str, paths) -> list[Path]:
    """Every trained copy under the given folders/files: a folder with agent.json, a weights file, or a folder
    whose sub-folders hold such copies (one per training seed)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"--agent-dir {name}={p}: no such file or folder")
        if p.is_file() or (p / AGENT_JSON).exists():
            out.append(p)
            continue
        subs = sorted(s for s in p.iterdir() if s.is_dir() and (s / AGENT_JSON).exists())
        if not subs:
            raise FileNotFoundError(f"--agent-dir {name}={p}: neither {AGENT_JSON} nor seed sub-folders holding one; "
                                    f"point at the folder `gfnet train-agent --agent {name} --out DIR` wrote")
        out.extend(subs)
    return out


def _train_hint(name: str, env_id: str) -> str:
    return (f"no trained {name} agent for {env_id}: train one with "
            f"`gfnet train-agent --agent {name} --env {env_id} --out DIR` and pass --agent-dir {name}=DIR "
            f"(agent_dirs={{{name!r}: DIR}})")


def resolve_runs(name: str, env_id: str, model, env_kwargs: dict, agent_dirs: dict, seeds: int, seed: int,
                 device: str) -> tuple[list[Run], str]:
    """The runs of agent ``name`` and a description of where its weights came from."""
    from gfnet_env.tasks import WEIGHTS_DIR

    factory = factory_of(name)
    if name in agent_dirs:
        paths = _trained_paths(name, agent_dirs[name])
        runs = [Run(str(p), lambda p=p: load_agent(name, p, device=device)) for p in paths]
        return runs, f"trained: {', '.join(map(str, paths))}"
    if name == "random":
        return [Run(f"seed={seed + k}", lambda k=k: make("random", seed=seed + k)) for k in range(seeds)], \
            f"{seeds} seeds"
    if name == "oracle":
        g = int(env_kwargs.get("grid_size", 7))
        return [Run("grid", lambda: make("oracle", grid_size=g))], f"greedy on a {g}×{g} grid (uses the label)"
    if name == "paper-ppo":
        if getattr(model, "policy", None) is None:
            raise ValueError(_train_hint(name, env_id) + "; the env's checkpoint stores no policy")
        from .paper_ppo import PaperPPOAgent

        return [Run("checkpoint policy", lambda: PaperPPOAgent.from_checkpoint(model, device=device))], \
            "the policy stored in the env's checkpoint"
    shipped = SHIPPED_AGENTS.get((env_id, name))
    if shipped and "checkpoint" not in env_kwargs and (WEIGHTS_DIR / shipped).exists():
        path = WEIGHTS_DIR / shipped
        return [Run(str(path), lambda: factory.load(path, device=device))], f"shipped: {path.name}"
    if getattr(factory, "trainable", False):
        raise ValueError(_train_hint(name, env_id))
    return [Run("", lambda: make(name))], "baseline"


# --- the benchmark -----------------------------------------------------------------------------------------

def run_benchmark(
    env_id: str,
    agents: list[str],
    out_dir: PathLike | None,
    episodes: int = 500,
    seeds: int = 3,
    agent_dirs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    fit_split: str | None = None,
    fit_episodes: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """Compare agents on ``env_id`` (see the module docstring for the protocol).

    Args:
        env_id: a GFNet env id.
        agents: registry names (``random``, ``center``, ``raster``, ``saliency``, ``oracle``, ``paper-ppo``,
            ``sb3-ppo``, …).
        out_dir: where results and plots go (None: write nothing, just return the dict).
        episodes: E, evaluation images (i·N // E of the evaluation split's N; capped at N).
        seeds: K, seeds of the ``random`` agent.
        agent_dirs: name → trained agent folder(s)/file(s) (a folder of seed sub-folders counts as several runs).
            A trainable agent without an entry uses the weights shipped for the env (``paper-ppo``: the
            checkpoint's policy) or fails with a message saying how to train one.
        env_kwargs: env arguments shared by all agents (``checkpoint``, ``data_root``, ``dataset``, ``split``,
            ``max_steps``, ``reward``, ``step_cost``, ``grid_size`` for the oracle, …).
        fit_split: split on which the budgeted thresholds are fitted (default: ``val`` for the cluttered task
            without a custom dataset, else the held-out images E..E+F−1 of the evaluation split).
        fit_episodes: F, images used to fit the thresholds (default E).
        batch_size: episodes per batch.
        device: torch device.
        seed: base seed (random agent seeds are seed..seed+K−1; torch is seeded with it).
        verbose: print the markdown table.

    Returns:
        dict with ``env_id``, ``episodes``, ``T``, ``madds_per_step``, ``madds_cumulative``, ``fit``, and
        ``agents``: name → ``anytime_top1`` (% per step, glance first), ``anytime_top1_ci`` ([lo, hi] per step),
        ``mean_return``, ``mean_return_ci``, ``budgeted`` (``p``, ``madds``, ``top1`` lists), ``madds_per_step``,
        ``madds`` (per image, full episode), ``seconds``, ``n_runs``, ``runs``, ``upper_bound``, ``source``.
    """
    from gfnet_env import ENV_TASKS
    from gfnet_env.tasks import TASKS

    env_id = _env_id(env_id)
    task = ENV_TASKS[env_id]
    if not agents:
        raise ValueError("no agents to benchmark")
    if len(set(agents)) != len(agents):
        raise ValueError(f"agent names repeat: {agents}")
    for name in agents:
        factory_of(name)  # unknown names fail before any work
    if episodes < 1 or seeds < 1 or batch_size < 1:
        raise ValueError("episodes, seeds and batch_size must be >= 1")
    env_kwargs = dict(env_kwargs or {})
    agent_dirs = dict(agent_dirs or {})
    unknown = set(agent_dirs) - set(agents)
    if unknown:
        raise ValueError(f"agent_dirs names agents that are not benchmarked: {sorted(unknown)}")
    if env_kwargs.get("early_exit") is not None:
        raise ValueError("the benchmark runs every episode to max_steps; drop early_exit "
                         "(the budgeted curve is the early-exit measurement)")
    for key in _AGENT_KWARGS:
        env_kwargs.pop(key, None)  # each agent picks its own
    task_kwargs = {k: env_kwargs[k] for k in _TASK_KWARGS if k in env_kwargs}
    settings_kwargs = {k: v for k, v in env_kwargs.items() if k not in _TASK_KWARGS and k != "grid_size"}
    bad = set(settings_kwargs) - set(CoreSettings.__dataclass_fields__)
    if bad:
        raise TypeError(f"unknown env arguments {sorted(bad)}")
    torch.manual_seed(seed)

    # images: E evaluation indices spread evenly over the split (an ImageFolder is sorted by class, so a
    # prefix would cover few classes); fit images held out
    model, eval_ds = TASKS[task](**task_kwargs)
    E = min(int(episodes), len(eval_ds))
    F_wanted = int(fit_episodes or E)
    eval_indices, rest = _spread_indices(len(eval_ds), E)
    if fit_split is None and task == "cluttered_fashion_mnist" and "dataset" not in task_kwargs:
        fit_split = "val"
    if fit_split is not None:
        _, fit_ds = TASKS[task](**{**task_kwargs, "checkpoint": model, "split": fit_split})
        fit_indices, _ = _spread_indices(len(fit_ds), min(F_wanted, len(fit_ds)))
        fit_source = f"split {fit_split!r}, {len(fit_indices)} images spread evenly over it"
    elif rest:
        fit_ds = eval_ds
        fit_indices = rest[:: max(1, len(rest) // F_wanted)][:F_wanted]
        fit_source = f"{len(fit_indices)} held-out images of the evaluation split (disjoint from the evaluated ones)"
    else:
        warnings.warn("no images left to hold out for fitting the budgeted thresholds: fitted on the evaluation "
                      "images themselves (pass fit_split or fewer episodes)", stacklevel=2)
        fit_ds, fit_indices = eval_ds, eval_indices
        fit_source = "the evaluation images (nothing held out)"

    # one core per (images, env settings), shared by the agents that need the same settings
    cores: dict[tuple, GFNetCore] = {}

    def core_for(role: str, agent: Agent) -> GFNetCore:
        s = agent.env_settings()
        grid = s.get("grid_size", env_kwargs.get("grid_size", 7))
        action_range = s.get("action_range", "unit")
        key = (role, s["obs_mode"], s["action_mode"], grid, action_range)
        if key not in cores:
            settings = CoreSettings(obs_mode=s["obs_mode"], action_mode=s["action_mode"], grid_size=int(grid),
                                    action_range=action_range, **settings_kwargs)
            ds = eval_ds if role == "eval" else fit_ds
            cores[key] = GFNetCore(model, ds, batch_size, settings, device=device)
        return cores[key]

    results: dict[str, Any] = {
        "env_id": env_id,
        "env_kwargs": jsonable(env_kwargs),
        "episodes": E,
        "seeds": seeds,
        "seed": seed,
        "batch_size": batch_size,
        "eval_images": f"{E} indices spread evenly over the evaluation split (index i*N//E)",
        "fit": {"images": fit_source, "episodes": len(fit_indices)},
        "agents": {},
    }
    for name in agents:
        runs, source = resolve_runs(name, env_id, model, env_kwargs, agent_dirs, seeds, seed, device)
        per_run = []
        for run in runs:
            agent = run.build()
            core = core_for("eval", agent)
            ev = evaluate_agent(agent, core, eval_indices)
            fit = evaluate_agent(agent, core_for("fit", agent), fit_indices)
            flops = core.madds_cumulative[: ev.probs.shape[0]].tolist()
            curve = budgeted.budgeted_curve(fit.probs, fit.targets, ev.probs, ev.targets, flops)
            per_run.append({"label": run.label, "anytime_top1": anytime_top1(ev),
                            "mean_return": float(ev.returns.mean()), "budgeted": curve, "seconds": ev.seconds,
                            "upper_bound": bool(agent.upper_bound), "T": int(ev.probs.shape[0]),
                            "madds_per_step": core.madds_per_step[: ev.probs.shape[0]].tolist()})
        results["agents"][name] = _aggregate(per_run, source, seed)
    first = next(iter(results["agents"].values()))
    results["T"] = len(first["anytime_top1"])
    results["madds_per_step"] = first["madds_per_step"]
    results["madds_cumulative"] = np.cumsum(first["madds_per_step"]).tolist()

    if out_dir is not None:
        write_outputs(results, out_dir)
    if verbose:
        print(markdown_table(results))
    return results


def _aggregate(per_run: list[dict], source: str, seed: int) -> dict:
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


# --- outputs -----------------------------------------------------------------------------------------------

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


def write_csv(results: dict, path: PathLike) -> Path:
    """One row per (agent, step): top-1 with its interval, cumulative multiply-adds, and the agent's return/seconds."""
    path = Path(path)
    cols = ["agent", "upper_bound", "n_runs", "step", "top1", "top1_lo", "top1_hi", "madds_cumulative",
            "mean_return", "mean_return_lo", "mean_return_hi", "seconds"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for name, e in results["agents"].items():
            cum = np.cumsum(e["madds_per_step"])
            for t, v in enumerate(e["anytime_top1"]):
                lo, hi = e["anytime_top1_ci"][t]
                w.writerow([name, int(bool(e.get("upper_bound"))), e["n_runs"], t, f"{v:.6g}", f"{lo:.6g}", f"{hi:.6g}",
                            f"{cum[t]:.6g}", f"{e['mean_return']:.6g}", f"{e['mean_return_ci'][0]:.6g}",
                            f"{e['mean_return_ci'][1]:.6g}", f"{e['seconds']:.6g}"])
    return path


def write_outputs(results: dict, out_dir: PathLike) -> list[Path]:
    """results.json, results.csv, results.md and the PNG plots."""
    from .plots import make_plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "results.md"]
    paths[0].write_text(json.dumps(results, indent=2))
    paths[1].write_text(markdown_table(results))
    paths.append(write_csv(results, out_dir / "results.csv"))
    paths += make_plots(results, out_dir)
    return paths
