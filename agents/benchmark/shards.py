"""Which of a benchmark's images this process runs: all of them, its torchrun rank's share, or one ``--shard K/N``.

The images are split by whole batches: batch k of the one-process run (positions k·B … k·B + B − 1 of the image
list, B = ``--batch-size``, the last batch padded as :func:`gfnet_env.rollout.rollout` pads it) goes to shard
k mod N. Every image is then stepped in exactly the batch, with exactly the companions and the padding, it has in
one process, so its outputs are the same numbers (no batch-size-dependent floating-point path is ever taken),
and agents that draw random numbers key them by image (``begin_episodes``, e.g. :class:`agents.baselines.RandomAgent`).

* Under torchrun (:meth:`Shard.of_process_group`) every rank rolls out its batches and gets every rank's rollouts
  back (:func:`feature_nets.training.distributed.gather_objects`), reassembled in the one-process order; what
  follows (thresholds, null models, statistics) is then computed identically on every rank, and rank 0 writes.
* ``--shard K/N`` (:meth:`Shard.parse`, e.g. Slurm job arrays) runs only shard K's evaluation batches and keeps
  them to itself; the fit images are run whole by every shard (so every shard fits the same thresholds), and
  ``gfnet merge`` (:func:`merge_shards`) joins the N folders into the one-process result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gfnet_env.rollout import Rollout, rollout

from ..base import PathLike

__all__ = ["Shard", "WHOLE", "join_rollouts", "merge_shards"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``gather``: the shards are torchrun ranks that exchange rollouts.

    ``Shard()`` (:data:`WHOLE`) is the one-process run."""

    index: int = 0
    count: int = 1
    gather: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.index < self.count):
            raise ValueError(f"shard {self.index}/{self.count}: K must be in 0 … N − 1 for --shard K/N")

    @classmethod
    def parse(cls, text: str | None) -> "Shard":
        """``"K/N"`` (``--shard``) → shard K of N run on its own; None → :data:`WHOLE`."""
        if text is None:
            return WHOLE
        k, sep, n = str(text).partition("/")
        try:
            index, count = int(k), int(n)
        except ValueError:
            index = count = -1
        if not sep or count < 1 or not (0 <= index < count):
            raise ValueError(f"--shard {text!r}: give K/N with 0 <= K < N (e.g. --shard 0/4 … --shard 3/4, one per "
                             "job of a job array)")
        return cls(index, count)

    @classmethod
    def of_process_group(cls, rank: int, world_size: int) -> "Shard":
        """This torchrun rank's share; every rank gets all rollouts back."""
        return cls(rank, world_size, gather=world_size > 1)

    @property
    def whole(self) -> bool:
        """One process that runs every image."""
        return self.count == 1

    @property
    def alone(self) -> bool:
        """A ``--shard K/N`` of several that sees only its own evaluation images."""
        return self.count > 1 and not self.gather

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def positions(self, n: int, batch_size: int) -> list[int]:
        """Positions (0 … n − 1 of the image list) this shard runs: the batches k with k mod N = K."""
        return [p for p in range(n) if (p // batch_size) % self.count == self.index]

    def rollout(self, core, policy: Any, indices: Sequence[int],
                progress: Callable[[int, int], None] | None = None) -> Rollout | None:
        """:func:`gfnet_env.rollout.rollout` of this shard's share of ``indices``: all of them in one process, every
        rank's reassembled in order under torchrun (the same on every rank), only its own on a ``--shard``
        (None when it has none)."""
        if self.whole:
            return rollout(core, policy, indices, progress=progress)
        pos = self.positions(len(indices), core.num_envs)
        part = rollout(core, policy, [indices[p] for p in pos], progress=progress) if pos else None
        if not self.gather:
            return part
        from feature_nets.training.distributed import gather_objects

        return join_rollouts(gather_objects((pos, part)))


#: The one-process run: every image, nothing exchanged.
WHOLE = Shard()


def join_rollouts(parts: list[tuple[list[int], Rollout | None]]) -> Rollout:
    """One :class:`~gfnet_env.rollout.Rollout` from shards' ``(positions, rollout)`` pairs, episodes in the order
    of the positions (the one-process order); ``seconds`` is the sum of the shards' (device-seconds spent)."""
    pieces = [(pos, r) for pos, r in parts if r is not None and len(pos)]
    order = np.argsort(np.concatenate([np.asarray(pos, dtype=np.int64) for pos, _ in pieces]), kind="stable")
    t_order = torch.as_tensor(order)

    def cat(field: str, axis: int):
        values = [getattr(r, field) for _, r in pieces]
        if values[0] is None:
            return None
        if torch.is_tensor(values[0]):
            return torch.cat(values, axis).index_select(axis, t_order)
        return np.take(np.concatenate(values, axis), order, axis=axis)

    return Rollout(cat("probs", 1), cat("targets", 0), cat("rewards", 1), cat("boxes", 1), cat("image_index", 0),
                   float(sum(r.seconds for _, r in pieces)), exit_step=cat("exit_step", 0),
                   stopped=cat("stopped", 0), madds=cat("madds", 0))


def merge_shards(folders: list[PathLike]) -> tuple[dict, dict[str, np.ndarray]]:
    """The results and the per-image records of the one-process benchmark, from the folders of its ``--shard K/N``
    runs (every K of 0 … N − 1 once, any order).

    The per-image records are put back in the one-process order; every number of the table is then recomputed
    from them with the same code as a benchmark (:func:`agents.benchmark.results.run_numbers`,
    :func:`~agents.benchmark.results.aggregate_runs`, the comparisons and the equal-compute verdict) and the
    thresholds every shard fitted on the same fit images. ``seconds`` is the sum over the shards, seconds per
    decision their mean.

    Raises:
        ValueError: a folder is not a shard, shards are missing or repeat, or they are not of one benchmark (the
            protocol, agents, seeds or batch size differ).
    """
    from .comparison import compare_agents
    from .equal_compute import verdict
    from .merge import short_sha256, read_per_image, read_results
    from .published import as_published
    from .results import aggregate_runs, run_numbers

    if not folders:
        raise ValueError("give the output folders of a benchmark's --shard runs to merge")
    all_results = [read_results(f) for f in folders]
    for folder, res in zip(folders, all_results):
        if "shard" not in res:
            raise ValueError(f"{folder} is not a --shard folder (a whole benchmark): gfnet merge joins the shards "
                             "of one benchmark; put whole benchmarks side by side with gfnet compare")
    first = all_results[0]
    count = int(first["shard"]["count"])
    same = ("env_id", "episodes", "seeds", "seed", "batch_size", "reference", "margin")
    for folder, res in zip(folders[1:], all_results[1:]):
        diffs = [k for k in same if res.get(k) != first.get(k)]
        if res["protocol"]["fingerprint"] != first["protocol"]["fingerprint"]:
            diffs.append("protocol")
        if list(res["agents"]) != list(first["agents"]):
            diffs.append("agents")
        if int(res["shard"]["count"]) != count:
            diffs.append("shard count")
        if diffs:
            raise ValueError(f"{folders[0]} and {folder} are not shards of one benchmark (they differ in "
                             f"{', '.join(diffs)}); run every shard with the same command but --shard")
    have = sorted(int(r["shard"]["index"]) for r in all_results)
    if have != list(range(count)):
        missing = sorted(set(range(count)) - set(have))
        twice = sorted({k for k in have if have.count(k) > 1})
        raise ValueError(f"the shards of {count} are not each there once (missing: {missing or 'none'}, repeated: "
                         f"{twice or 'none'}): give every --shard K/{count} folder once")
    E, batch = int(first["episodes"]), int(first["batch_size"])
    parts = [(Shard(int(r["shard"]["index"]), count).positions(E, batch), read_per_image(f))
             for f, r in zip(folders, all_results)]
    order = np.argsort(np.concatenate([np.asarray(pos, dtype=np.int64) for pos, _ in parts]), kind="stable")
    image_index = np.concatenate([index for _, (index, _) in parts])[order]
    if len(image_index) != E or short_sha256(image_index.astype(np.int64).tobytes()) != first["protocol"]["eval_images"]:
        raise ValueError(f"the shards' images are not the {E} evaluation images their protocol names: rerun the "
                         "shards with one command")
    targets = [np.load(Path(f) / "per_image.npz", allow_pickle=False)["target"] for f in folders]
    target = np.concatenate(targets)[order]
    records: dict[str, dict[str, np.ndarray]] = {}
    for name in first["agents"]:
        rec = {}
        for field, value in parts[0][1][1][name].items():
            if field == "decision_madds":  # (R,): counted on the same first batch by every shard
                rec[field] = value
                continue
            rec[field] = np.take(np.concatenate([p[1][1][name][field] for p in parts], axis=-1), order, axis=-1)
        records[name] = rec
    merged = {k: v for k, v in first.items() if k not in ("agents", "shard")}
    merged["agents"] = {}
    merged["merged_shards"] = [str(f) for f in folders]
    for name, entry in first["agents"].items():
        metas = [r["shard"]["runs"][name] for r in all_results]
        per_run = []
        for k, meta in enumerate(metas[0]):
            meta = {**meta, "seconds": float(sum(m[k]["seconds"] for m in metas)),
                    "seconds_per_decision": float(np.mean([m[k]["seconds_per_decision"] for m in metas]))}
            rec = {f: v[k] for f, v in records[name].items()}
            per_run.append(run_numbers(meta, {**rec, "target": target}))
        merged["agents"][name] = aggregate_runs(per_run, entry["source"], int(first["seed"]))
    seed = int(first["seed"])
    compare_agents(merged["agents"], {n: r["correct"] for n, r in records.items()}, merged.get("reference"),
                   seed=seed)
    verdict(merged["agents"], records, merged["env_madds_cumulative"], merged.get("reference"), seed=seed,
            margin=merged.get("margin"))
    published = first["shard"]["published"]
    merged["as_published"] = as_published(merged, SimpleNamespace(stored_results=published["stored"]),
                                          published["agents"], dict.fromkeys(published["agent_dirs"]),
                                          merged["eval_split_images"], published["thresholds"])
    arrays: dict[str, np.ndarray] = {"image_index": image_index, "target": target}
    for name, rec in records.items():
        arrays.update({f"{name}/{field}": value for field, value in rec.items()})
    return merged, arrays
