"""The benchmark: every agent on the same images, in the same order, with deterministic actions.

Protocol (:func:`run_benchmark`: :func:`select_images` → :func:`run_agents` → :func:`summarise`;
docs/benchmark.md):

1. The evaluation images are E indices spread evenly over the env's evaluation split (i·N // E, E =
   ``episodes``), run through :func:`gfnet_env.rollout.rollout` in batches of ``batch_size`` on one core per
   env setting (observation / action mode each agent needs; the networks, images, reward and ``max_steps``
   are shared). A last, partial batch is padded with copies of its final image, whose results are dropped.
2. Each agent acts deterministically and sees only its observations and its view. Per step the softmax
   outputs are kept: top-1 after each step (0 = the glance) and the return (sum of rewards) per image.
3. Budgeted batch classification (docs/budgeted.md): the thresholds are fitted with
   :mod:`feature_nets.budgeted` on the agent's own outputs on held-out images — the task's own fit split
   (:attr:`gfnet_env.tasks.Task.fit_split`: ``val`` for the cluttered task) or ``fit_split``, else F held-out
   images of the evaluation split — and evaluated on the
   E evaluation images, giving top-1 vs mean multiply-adds.
4. Runs: a trained agent is evaluated once per trained copy (several ``agent_dirs`` entries, or the seed
   sub-folders of one); otherwise the agent's own ``runs`` hook decides (``random``: one run per seed;
   ``paper-ppo``: the checkpoint's policy; SB3 agents: shipped weights). Means and 95 % bootstrap intervals
   over runs and images are reported (a single run's interval reflects the images).
6. Each agent's operating point (multiply-adds it spent per image, top-1 of its answers) and the equal-compute
   verdict against the reference (:mod:`agents.benchmark.equal_compute`).
5. Agents that read the label (``privileged``, the oracle) are flagged ``upper_bound`` and listed apart.

Every number of the table is computed from the per-image records and the fitted thresholds
(:func:`agents.benchmark.results.run_numbers`), so that the same records give the same table however they were
made. Past one process (:mod:`agents.benchmark.shards`): under torchrun the ranks share the batches of every
rollout and exchange them, giving the one-process records and table (rank 0 writes); ``--shard K/N`` runs one
shard of the evaluation images to its own folder, and ``gfnet merge`` joins the shards into the one-process result.

Outputs in ``out_dir`` (:mod:`agents.results`): ``results.json``, ``results.csv``, ``results.md`` (the
table, also printed), the PNG plots of :mod:`agents.plots`, ``per_image.npz`` (with each agent's looks) and
``report.html`` (:mod:`agents.benchmark.report`); with ``tensorboard``, TensorBoard logs. Same seed, same
numbers (only the ``seconds`` fields vary). ``out_dir`` is checked and locked before any work, and the files
replace the previous results all at once at the end (:class:`agents.results.ResultsFolder`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from feature_nets import budgeted
from feature_nets.madds import count_madds
from feature_nets.sampling import spread_indices  # the evaluation and fit images (re-exported here)
from gfnet_env.core import GFNetCore
from gfnet_env.factory import build_core, env_id_of, load_task, settings_for_agent, shared_env_kwargs
from gfnet_env.settings import EnvSettings
from gfnet_env.tasks import get_task
from gfnet_env.rollout import rollout

from ..base import Agent, PathLike, RecordedRun, Run, RunContext, source_of
from .merge import protocol_of
from .comparison import compare_agents, default_reference
from .costs import MeteredAgent
from .equal_compute import RECORD_FIELDS, spent_madds, verdict
from .published import THRESHOLDS, as_published, checkpoint_thresholds
from .report.looks import LOOK_FIELDS, look_records
from .report.tensorboard import check_tensorboard, write_tensorboard
from ..registry import base_name, factory_of
from .results import OutputFolderError, ResultsFolder, aggregate_runs, markdown_table, run_numbers
from .shards import WHOLE, Shard
from ..trained import jsonable, load_agent, trained_paths

__all__ = ["ImageSelection", "evaluate_run", "resolve_runs", "run_agents", "run_benchmark", "select_images",
           "spread_indices", "summarise"]


def image_source(dataset) -> str:
    """Where the evaluation images are read from: the dataset's own ``source`` (a prepared cache, an image
    folder), else its type."""
    return getattr(dataset, "source", None) or f"dataset {type(dataset).__name__}"


def resolve_runs(ctx: RunContext, agent_dirs: dict, trust_agent: bool = False) -> tuple[list[Run], str]:
    """The runs of agent ``ctx.name`` and a description of where its weights came from: trained copies when
    ``agent_dirs`` names it (loaded with ``trust_agent``, see :func:`agents.trained.load_agent`), else the
    agent's own ``runs`` hook (:meth:`agents.base.Agent.runs`).

    A named variant ``BASE:LABEL`` (:func:`agents.registry.base_name`) takes its trained copies from
    ``agent_dirs[ctx.name]`` (its own), and otherwise the runs of ``BASE`` (the hook sees the base name, so that
    seeds and shipped weights are the base agent's)."""
    name = ctx.name
    if name in agent_dirs:
        paths = trained_paths(name, agent_dirs[name])
        runs = [Run(str(p), lambda p=p: load_agent(name, p, device=ctx.device, trust_agent=trust_agent))
                for p in paths]
        return runs, f"trained: {', '.join(map(str, paths))}"
    factory = factory_of(name)
    hook = getattr(factory, "runs", None)
    if hook is None:  # a plain callable registered as an agent: one run of it
        return [Run("", factory)], source_of(factory)
    base = base_name(name)
    if base == name:
        return hook(ctx)
    try:
        return hook(dataclasses.replace(ctx, name=base, variant=name.partition(":")[2]))
    except ValueError as e:  # the hook's hint names the base; a variant's weights come from its own --agent-dir
        raise ValueError(f"{e}; for the variant {name!r} pass --agent-dir {name}=DIR") from e


class CoreCache:
    """One core per (image set, env settings), shared by the agents that need the same settings; closed together.

    The networks and images are loaded once (:func:`select_images`); each core is built on them by the factory
    with the agent's own env settings (:func:`gfnet_env.factory.build_core`)."""

    def __init__(self, model, datasets: dict[str, Any], settings: EnvSettings, batch_size: int, device: str) -> None:
        self.model, self.datasets, self.settings = model, datasets, settings
        self.batch_size, self.device = batch_size, device
        self._cores: dict[tuple[str, EnvSettings], GFNetCore] = {}

    def get(self, role: str, agent: Agent) -> GFNetCore:
        """The core of image set ``role`` (``"eval"`` / ``"fit"``) with ``agent``'s env settings."""
        settings = settings_for_agent(self.settings, agent)
        key = (role, settings)
        if key not in self._cores:
            self._cores[key] = build_core(self.model, self.datasets[role], self.batch_size, settings,
                                          device=self.device)
        return self._cores[key]

    def close(self) -> None:
        for core in self._cores.values():
            core.close()
        self._cores.clear()


def evaluate_run(run: Run, cores: CoreCache, eval_indices: list[int], fit_indices: list[int],
                 progress: str | None = None, thresholds: list | None = None, shard: Shard = WHOLE) -> dict:
    """One run: the agent's own decision cost, then the agent on the evaluation and the fit images, and the
    thresholds of its budgeted curve fitted on the fit images' outputs (given ``thresholds``, (P, T') rows of
    ``--thresholds checkpoint``, are used instead).

    The cost is measured on a fresh copy of the agent (so metering changes nothing it does): multiply-adds of
    ``act`` counted on the first batch, which also warms up caches and kernels; the timed evaluation pass then
    gives the seconds per decision (docs/benchmark.md, "Measurements"). ``shard``: which evaluation batches this
    process runs (:mod:`agents.benchmark.shards`; the fit images are run whole by a ``--shard``).

    Returns:
        ``meta`` (what does not depend on the images: label, costs, seconds, the thresholds), ``records`` (the
        per-image records of the evaluated images, :data:`~agents.benchmark.equal_compute.RECORD_FIELDS` and
        ``target``) and ``recorded`` (the rollouts, for the null models).
    """
    agent = run.build()
    core = cores.get("eval", agent)
    counted = MeteredAgent(run.build(), count_madds=True)
    rollout(core, counted, eval_indices[:core.num_envs])
    timed = MeteredAgent(agent)
    ev = shard.rollout(core, timed, eval_indices, progress=_bar(progress, len(shard.positions(
        len(eval_indices), core.num_envs))))
    seconds, decisions = timed.seconds, timed.decisions
    if shard.gather:
        from feature_nets.training.distributed import gather_objects

        seconds, decisions = map(sum, zip(*gather_objects((seconds, decisions))))
    steps = ev.probs.shape[0]
    env_madds = core.madds_per_step[:steps]
    agent_madds = np.array([0.0] + [counted.madds_per_decision] * (steps - 1))
    total = env_madds + agent_madds
    # also the looks the null models replay; a --shard runs the (small) fit set whole: every shard fits the same
    fit = (shard if shard.gather else WHOLE).rollout(cores.get("fit", agent), agent, fit_indices)
    if thresholds is None:
        fitted = budgeted.fit_threshold_rows(fit.probs)
    else:
        fitted = {"p": list(range(1, len(thresholds) + 1)), "exit_probs": None,
                  "thresholds": torch.as_tensor(thresholds, dtype=torch.float32).tolist()}
    conf, pred = ev.probs.max(-1)
    exit_step = ev.exit_step if ev.exit_step is not None else np.full(ev.probs.shape[1], steps - 1)
    stopped = ev.stopped if ev.stopped is not None else np.zeros(ev.probs.shape[1], dtype=bool)
    meta = {"label": run.label, "seconds": ev.seconds,
            "seconds_per_decision": seconds / decisions if decisions else 0.0,
            "upper_bound": bool(getattr(agent, "privileged", False)), "T": int(steps),
            "madds_per_step": total.tolist(), "env_madds_per_step": env_madds.tolist(),
            "agent_madds_per_step": agent_madds.tolist(), "decision_madds_unaccounted": counted.unaccounted,
            "fitted": fitted}
    records = {
        "correct": (ev.probs.argmax(-1) == ev.targets[None]).numpy(),                          # (T', E)
        "p_true": ev.probs.gather(2, ev.targets[None, :, None].expand(steps, -1, 1))[..., 0].numpy(),
        # per-image records of the operating point and the equal-compute verdict (agents.benchmark.equal_compute)
        "pred": pred.numpy().astype(np.int32), "confidence": conf.numpy().astype(np.float32),       # (T', E)
        "exit_step": np.asarray(exit_step, dtype=np.int64), "stopped": np.asarray(stopped, dtype=bool),
        "madds": spent_madds(np.cumsum(env_madds), [counted.madds_per_decision], exit_step[None], stopped[None])[0],
        "returns": ev.returns, "decision_madds": float(counted.madds_per_decision), "target": ev.targets.numpy()}
    return {"meta": meta, "records": records, "recorded": RecordedRun(run.label, ev, fit)}


def _bar(label: str | None, total: int):
    """A tqdm progress callback for :func:`gfnet_env.rollout.rollout` (None: silent)."""
    if label is None:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=label, unit="img", leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= _total:
            bar.close()

    return update


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
    trust_agent: bool = False,
    reference: str | None = "auto",
    margin: float | None = None,
    thresholds: str = "fit",
    shard: str | None = None,
    tensorboard: PathLike | None = None,
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
        fit_split: split on which the budgeted thresholds are fitted (default: the task's own ``fit_split``, e.g.
            ``val`` for the cluttered task, unless a custom ``dataset`` is given; else held-out images of the
            evaluation split).
        fit_episodes: F, images used to fit the thresholds (default E).
        batch_size: episodes per batch.
        device: torch device.
        seed: base seed (random agent seeds are seed..seed+K−1; torch is seeded with it).
        verbose: print the markdown table.
        reference: agent the others are compared with, paired on the same images (``"auto"``: ``paper-ppo``
            when benchmarked; None: no comparison).
        margin: M, points: the table says *equivalent within ±M* / *not worse than −M* from the last-step Δ's
            paired interval (docs/statistics.md); None: no verdict.
        trust_agent: ``True`` (the boolean) to load ``agent_dirs`` files with full unpickling, which may run
            code (``--trust-agent``); by default SB3 files are read with a restricted unpickler.
        thresholds: ``"fit"`` (every agent's budgeted thresholds fitted on its own fit-split outputs) or
            ``"checkpoint"`` (``paper-ppo`` with the checkpoint's policy uses the checkpoint's stored
            ``dynamic_threshold``; the other agents keep fitted ones; docs/benchmark.md, "As published").
        shard: ``"K/N"``: run only shard K of N of the evaluation images (whole batches of ``batch_size``, batch k
            to shard k mod N) into ``out_dir``, for ``gfnet merge`` (:func:`agents.benchmark.shards.merge_shards`)
            to join with the others (``--shard``; not under torchrun, whose ranks share the images themselves).

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs its share of the batches on its own device
    (``cuda:LOCAL_RANK``, else the CPU with gloo), the rollouts are exchanged, and every rank returns the results
    of the one-process run; rank 0 alone writes ``out_dir`` and prints.
        tensorboard: a folder for TensorBoard logs of the results (:mod:`agents.benchmark.report.tensorboard`;
            written with ``out_dir`` only, by the process that writes it; None: none).

    Returns:
        dict with ``env_id``, ``episodes``, ``T``, ``madds_per_step``, ``madds_cumulative``, ``fit``, and
        ``agents``: name → ``anytime_top1`` (% per step, glance first), ``anytime_top1_ci`` ([lo, hi] per step),
        ``mean_return``, ``mean_return_ci``, ``budgeted`` (``p``, ``madds``, ``top1`` lists), ``madds_per_step``,
        ``madds`` (per image, full episode), ``seconds``, ``n_runs``, ``runs``, ``upper_bound``, ``source``;
        ``as_published`` where the env's checkpoint stores numbers for its policy
        (:func:`agents.benchmark.published.as_published`).
    """
    env_id = env_id_of(env_id)
    reference = _checked_arguments(agents, reference, episodes, seeds, batch_size, agent_dirs, trust_agent, margin)
    env_kwargs, task_kwargs, settings = shared_env_kwargs(dict(env_kwargs or {}), env_id)  # each agent picks its own
    agent_dirs = dict(agent_dirs or {})
    if env_kwargs.get("early_exit") is not None:
        # the benchmark fits its own confidence thresholds (the budgeted curve) and charges each episode the
        # looks it took; an env-level threshold under them would be a second, hidden stopping rule
        raise ValueError("the benchmark measures stopping rules itself (budgeted thresholds fitted on the fit "
                         "split, or an agent's own stop action): drop early_exit")
    if thresholds not in THRESHOLDS:
        raise ValueError(f"thresholds must be one of {list(THRESHOLDS)}, got {thresholds!r}")
    if tensorboard is not None:
        if out_dir is None:
            raise ValueError("tensorboard logs are written with the results: give out_dir too")
        check_tensorboard()
    job = Shard.parse(shard)
    _check_shard(job, agents, out_dir)
    from feature_nets.training.distributed import torchrun_group

    with torchrun_group(device) as group:  # torchrun's ranks (one process: None)
        if group is not None:
            job, device = Shard.of_process_group(group.rank, group.world_size), str(group.device)
        main = job.index == 0 or job.alone
        return _benchmark(env_id, agents, out_dir, episodes, seeds, agent_dirs, env_kwargs, task_kwargs, settings,
                          fit_split, fit_episodes, batch_size, device, seed, verbose and main, trust_agent,
                          reference, margin, thresholds, job, tensorboard)


def _check_shard(job: Shard, agents: list[str], out_dir) -> None:
    """Refuse a ``--shard`` that cannot give its part of the one-process result."""
    if job.whole:
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--shard runs one part of the images as a separate job; under torchrun the ranks share "
                         "the images already: drop --shard (or launch the shards without torchrun)")
    if out_dir is None:
        raise ValueError("a --shard writes its part into its own --out folder, for gfnet merge: give one")
    nulls = [n for n in agents if copies_looks(n)]
    if nulls:
        raise ValueError(f"{', '.join(nulls)} replay(s) another image's looks, which another shard may hold: "
                         "benchmark null models in one process or under torchrun (torchrun --nproc-per-node N "
                         "$(which gfnet) benchmark ...), not with --shard")


def _benchmark(env_id, agents, out_dir, episodes, seeds, agent_dirs, env_kwargs, task_kwargs, settings, fit_split,
               fit_episodes, batch_size, device, seed, verbose, trust_agent, reference, margin, thresholds,
               job: Shard, tensorboard=None) -> dict:
    """:func:`run_benchmark` once its arguments are checked, as shard ``job`` (the whole run in one process)."""
    from feature_nets.training.distributed import broadcast_object

    main = job.index == 0 or job.alone
    folder, refused = None, None
    if out_dir is not None and main:
        try:
            folder = ResultsFolder(out_dir).claim()  # before any work
        except OutputFolderError as e:
            refused = e
    message = broadcast_object(str(refused) if refused is not None else None) if job.gather else None
    if refused is not None:
        raise refused
    if message is not None:  # rank 0 could not claim --out: every rank stops with its message
        raise OutputFolderError(message)
    try:
        torch.manual_seed(seed)
        images = select_images(env_id, task_kwargs, episodes, fit_split, fit_episodes)
        E = len(images.eval_indices)
        if job.alone and -(-E // batch_size) <= job.index:
            raise ValueError(f"--shard {job.label}: the {E} evaluation images make only {-(-E // batch_size)} "
                             f"batches of {batch_size}, none for shard {job.index}; use fewer shards or a smaller "
                             "--batch-size")
        steps = (settings.max_steps if settings.max_steps is not None else int(images.model.T) - 1) + 1
        stored_thresholds = checkpoint_thresholds(thresholds, images.model, agents, agent_dirs, steps)
        results: dict[str, Any] = {
            "env_id": env_id,
            "env_kwargs": jsonable(env_kwargs),
            "episodes": E,
            "seeds": seeds,
            "seed": seed,
            "batch_size": batch_size,
            "eval_images": f"{E} indices spread evenly over the evaluation split (index i*N//E)",
            "image_source": image_source(images.eval_dataset),
            "fit": {"images": images.fit_source, "episodes": len(images.fit_indices)},
            "agents": {},
        }
        records, metas = run_agents(results["agents"], agents, images, settings, batch_size,
                                    RunContext(name="", env_id=env_id, model=images.model, env_kwargs=env_kwargs,
                                               seeds=seeds, seed=seed, device=device, reference=reference),
                                    agent_dirs, trust_agent, verbose, stored_thresholds=stored_thresholds, shard=job)
        summarise(results, images, records, reference, settings, seed, margin=margin)
        results["eval_split_images"] = len(images.eval_dataset)
        results["thresholds"] = {n: "checkpoint" if n in stored_thresholds else "fit" for n in results["agents"]}
        results["as_published"] = as_published(results, images.model, agents, agent_dirs,
                                                results["eval_split_images"], thresholds)
        if job.gather:
            results["processes"] = job.count
        positions = list(range(E))
        if job.alone:
            positions = job.positions(E, batch_size)
            # what gfnet merge needs to recompute the table over all shards (agents.benchmark.shards.merge_shards)
            results["shard"] = {
                "index": job.index, "count": job.count, "images": len(positions),
                "runs": {name: [jsonable(m) for m in runs] for name, runs in metas.items()},
                "published": {"stored": jsonable(getattr(images.model, "stored_results", None) or {}),
                              "agents": agents, "agent_dirs": sorted(agent_dirs), "thresholds": thresholds}}
        if folder is not None:
            arrays = {"image_index": np.asarray(images.eval_indices)[positions],
                      "target": next(iter(records.values()))["target"]}
            for name, rec in records.items():
                arrays.update({f"{name}/{k}": rec[k] for k in (*RECORD_FIELDS, *LOOK_FIELDS)})
            folder.write(results, arrays, images=images.eval_dataset)
            if tensorboard is not None:
                write_tensorboard(tensorboard, results, arrays, images.eval_dataset)
    finally:
        if folder is not None:
            folder.release()
    if verbose:
        print(markdown_table(results))
    return results


def _checked_arguments(agents: list[str], reference: str | None, episodes: int, seeds: int, batch_size: int,
                       agent_dirs: dict | None, trust_agent: bool, margin: float | None = None) -> str | None:
    """Refuse bad arguments before any work (unknown agents fail here too); returns the reference agent."""
    if not agents:
        raise ValueError("no agents to benchmark")
    if len(set(agents)) != len(agents):
        raise ValueError(f"agent names repeat: {agents}")
    for name in agents:
        factory_of(name)  # unknown names fail before any work
    reference = default_reference(agents) if reference == "auto" else reference
    if reference is not None and reference not in agents:
        raise ValueError(f"--reference {reference!r} is not among the benchmarked agents {agents}")
    if episodes < 1 or seeds < 1 or batch_size < 1:
        raise ValueError("episodes, seeds and batch_size must be >= 1")
    unknown = set(agent_dirs or {}) - set(agents)
    if unknown:
        raise ValueError(f"agent_dirs names agents that are not benchmarked: {sorted(unknown)}")
    for name in filter(copies_looks, agents):
        source = factory_of(name).source_of_looks(name.partition(":")[2], reference)
        if source not in agents or copies_looks(source):
            raise ValueError(f"{name} copies the looks of {source!r}: benchmark {source} too (--agents ...,{source}), "
                             "an agent that is not itself a null model")
    if margin is not None and not (isinstance(margin, (int, float)) and np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number of points, got {margin!r}")
    if not isinstance(trust_agent, bool):
        raise TypeError(f"trust_agent must be True or False, got {trust_agent!r}")
    return reference


@dataclass
class ImageSelection:
    """The networks and the two image sets of a benchmark: E evaluation images and F fit images (dataset
    indices), and a sentence saying where the fit images came from (written into results.json)."""

    model: Any
    eval_dataset: Any
    eval_indices: list[int]
    fit_dataset: Any
    fit_indices: list[int]
    fit_source: str


def select_images(env_id: str, task_kwargs: dict[str, Any], episodes: int, fit_split: str | None,
                  fit_episodes: int | None) -> ImageSelection:
    """Load the task's networks and evaluation split, and choose the images (protocol steps 1 and 3).

    The E = min(``episodes``, N) evaluation indices are spread evenly over the split (i·N // E: an ImageFolder
    is sorted by class, so a prefix would cover few classes). The F = ``fit_episodes`` (default E) fit images
    come from ``fit_split`` — by default the task's own :attr:`~gfnet_env.tasks.Task.fit_split`, unless a
    custom ``dataset`` is given — spread evenly over it; else from the evaluation split's held-out images
    (disjoint from the evaluated ones), or, with nothing held out, the evaluation images themselves (a warning).
    """
    task = get_task(env_id)
    model, eval_ds = load_task(task, **task_kwargs)
    E = min(int(episodes), len(eval_ds))
    F_wanted = int(fit_episodes or E)
    eval_indices, rest = spread_indices(len(eval_ds), E)
    if fit_split is None and "dataset" not in task_kwargs:
        fit_split = task.fit_split
    if fit_split is not None:
        if "split" not in task.kwargs:
            raise ValueError(f"fit_split={fit_split!r}: {task.env_id} has no splits (its images are one set)")
        shared = {"checkpoint": model} if "checkpoint" in task.kwargs else {}  # the networks, not loaded again
        _, fit_ds = load_task(task, **{**task_kwargs, **shared, "split": fit_split})
        fit_indices, _ = spread_indices(len(fit_ds), min(F_wanted, len(fit_ds)))
        fit_source = f"split {fit_split!r}, {len(fit_indices)} images spread evenly over it"
    elif rest:
        fit_ds = eval_ds
        fit_indices = rest[:: max(1, len(rest) // F_wanted)][:F_wanted]
        fit_source = (f"{len(fit_indices)} held-out images of the evaluation split "
                      "(disjoint from the evaluated ones)")
    else:
        warnings.warn("no images left to hold out for fitting the budgeted thresholds: fitted on the evaluation "
                      "images themselves (pass fit_split or fewer episodes)", stacklevel=3)
        fit_ds, fit_indices = eval_ds, eval_indices
        fit_source = "the evaluation images (nothing held out)"
    return ImageSelection(model, eval_ds, eval_indices, fit_ds, fit_indices, fit_source)


def run_agents(out: dict[str, Any], agents: list[str], images: ImageSelection, settings: EnvSettings,
               batch_size: int, ctx: RunContext, agent_dirs: dict, trust_agent: bool,
               verbose: bool, stored_thresholds: dict[str, list] | None = None,
               shard: Shard = WHOLE) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[dict]]]:
    """Every run of every agent on the selected images (protocol steps 2 and 4); ``out[name]`` gets each agent's
    aggregate over its runs (:func:`agents.benchmark.results.aggregate_runs`).

    Args:
        ctx: the run context shared by the agents (its ``name`` is set per agent).
        stored_thresholds: agent name → the thresholds its budgeted curve is evaluated with instead of fitted
            ones (:func:`agents.benchmark.published.checkpoint_thresholds`).
        shard: which evaluation batches this process runs (:mod:`agents.benchmark.shards`).

    Returns:
        (records, metas): agent name → its per-image records, stacked over runs (``per_image.npz``,
        :data:`agents.benchmark.equal_compute.RECORD_FIELDS`): ``correct``, ``p_true``, ``pred`` (int32),
        ``confidence`` (float32) (R, T', E) per run, step and evaluation image; ``exit_step``, ``stopped``,
        ``madds`` (spent), ``returns`` (R, E); ``decision_madds`` (R,); and ``target`` (E,); and agent name →
        the ``meta`` of each run (:func:`evaluate_run`).
    """
    cores = CoreCache(images.model, {"eval": images.eval_dataset, "fit": images.fit_dataset}, settings,
                      batch_size, ctx.device)
    records: dict[str, dict[str, np.ndarray]] = {}
    metas: dict[str, list[dict]] = {}
    looks: dict[str, list[RecordedRun]] = {}
    try:
        # the null models copy looks recorded in this run: they go after every other agent
        for name in sorted(agents, key=copies_looks):
            runs, source = resolve_runs(dataclasses.replace(ctx, name=name, looks=looks), agent_dirs,
                                        trust_agent=trust_agent)
            evaluated = [evaluate_run(run, cores, images.eval_indices, images.fit_indices,
                                      progress=f"{name} {run.label}".strip() if verbose else None,
                                      thresholds=(stored_thresholds or {}).get(name), shard=shard)
                         for run in runs]
            looks[name] = [r["recorded"] for r in evaluated]
            metas[name] = [r["meta"] for r in evaluated]
            records[name] = stack_records([r["records"] for r in evaluated])
            records[name].update(look_records(looks[name]))  # the report draws the looks from these
            out[name] = aggregate_runs([run_numbers(r["meta"], r["records"]) for r in evaluated], source, ctx.seed)
    finally:
        cores.close()
    for name in agents:  # the table keeps the order the agents were asked for
        out[name] = out.pop(name)
    return {name: records[name] for name in agents}, metas


def stack_records(per_run: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One agent's per-image records of its runs stacked into the ``per_image.npz`` layout: every field of
    :data:`~agents.benchmark.equal_compute.RECORD_FIELDS` with a leading run axis (``correct`` bool, ``p_true``
    float32), and the first run's ``target``."""
    stacked = {k: np.stack([np.asarray(r[k]) for r in per_run]) for k in RECORD_FIELDS}
    stacked["correct"] = stacked["correct"].astype(bool)
    stacked["p_true"] = stacked["p_true"].astype(np.float32)
    stacked["target"] = per_run[0]["target"]
    return stacked


def copies_looks(name: str) -> bool:
    """Whether agent ``name`` is a null model that copies another agent's looks (:mod:`.null_models`)."""
    return bool(getattr(factory_of(name), "copies_looks", False))


def summarise(results: dict[str, Any], images: ImageSelection, records: dict[str, dict[str, np.ndarray]],
              reference: str | None, settings: EnvSettings, seed: int, margin: float | None = None) -> None:
    """Add the comparisons with ``reference`` (protocol step 5's flags are per agent already), the operating
    points and the equal-compute verdict (:func:`agents.benchmark.equal_compute.verdict`), the env's and the
    paper's multiply-add accounting, and the protocol fingerprint (:func:`agents.benchmark.merge.protocol_of`)
    to ``results``, in place."""
    compare_agents(results["agents"], {n: r["correct"] for n, r in records.items()}, reference, seed=seed)
    results["reference"] = reference
    results["margin"] = margin
    first = next(iter(results["agents"].values()))
    results["T"] = len(first["anytime_top1"])
    results["env_madds_per_step"] = first["env_madds_per_step"]
    results["env_madds_cumulative"] = np.cumsum(first["env_madds_per_step"]).tolist()
    verdict(results["agents"], records, results["env_madds_cumulative"], reference, seed=seed, margin=margin)
    # the papers' accounting (the checkpoint's flops): the env's looks plus the paper's policy network
    results["paper_madds_cumulative"] = count_madds(images.model)["cumulative"][: results["T"]]
    results["protocol"] = protocol_of(results["env_id"], images.model, images.eval_dataset, images.eval_indices,
                                      images.fit_indices, settings, settings.grid_size)
