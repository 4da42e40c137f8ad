"""Comparing benchmark outputs across runs: the protocol fingerprint, and merging results that share it.

Two benchmark runs can be put in one table only when they measured the same thing: the same env, networks,
images, reward, horizon and grid. :func:`protocol_of` records that in ``results.json`` (with a ``fingerprint``,
a hash of all of it); :func:`merge_results` (``gfnet compare A B …``) merges the agents of results folders that
share a fingerprint and refuses, naming the differing fields, those that do not. The paired statistics
(difference, interval, McNemar, oracle gap) and the equal-compute verdict of a merge are recomputed over the
merged agents from the folders' ``per_image.npz``, against one reference — the first folder's, or the one asked
for (e.g. every agent against random, or two folders' agents against each other) — never copied from folders
that were compared with different references (or with different copies of an agent of the same name).

:func:`agents.benchmark.shards.merge_shards` (``gfnet merge``) is the other kind of merge: the N folders of one benchmark run as
``--shard K/N`` jobs (:mod:`agents.benchmark.shards`), each holding the same agents on its share of the images,
joined into the folder the one-process run writes — the same ``per_image.npz`` and the same table.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from feature_nets.files import check_npz

from ..base import PathLike

__all__ = ["NO_REFERENCE", "merge_folders", "merge_results", "protocol_of", "read_per_image", "read_results", "short_sha256"]


def short_sha256(data: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of ``data``: how a protocol names its image sets."""
    return hashlib.sha256(data).hexdigest()[:16]


def _weights_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def protocol_of(env_id: str, model, dataset, eval_indices, fit_indices, settings, grid_size: int) -> dict:
    """What a benchmark measured, as a JSON-able dict with its ``fingerprint`` (a hash of the rest)."""
    from gfnet_env.cache import dataset_fingerprint

    proto = {
        "env_id": env_id,
        "weights": _weights_hash(model),
        "dataset": dataset_fingerprint(dataset),
        "eval_images": short_sha256(np.asarray(eval_indices, dtype=np.int64).tobytes()),
        "fit_images": short_sha256(np.asarray(fit_indices, dtype=np.int64).tobytes()),
        "n_eval_images": len(eval_indices),
        "reward": settings.reward,
        "step_cost": float(settings.step_cost),
        "max_steps": settings.max_steps if settings.max_steps is not None else int(model.T) - 1,
        "grid_size": int(grid_size),
    }
    proto["fingerprint"] = short_sha256(json.dumps(proto, sort_keys=True).encode())
    return proto


def read_results(folder: PathLike) -> dict:
    """``results.json`` of a benchmark output folder (a ``ValueError`` saying what is missing otherwise)."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise ValueError(f"{folder} holds no results.json: not a (complete) benchmark output folder")
    try:
        results = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path} is not a readable results.json ({' '.join(str(e).split())[:120]}): rerun its "
                         "benchmark") from None
    if not isinstance(results, dict) or "protocol" not in results:
        raise ValueError(f"{path} has no protocol fingerprint (written by an older version): rerun the benchmark")
    check_results(results, path)
    return results


#: Entries of ``results.json`` that merging and the table read, and of each agent's entry in ``agents``.
RESULTS_FIELDS = ("env_id", "episodes", "eval_images", "fit", "agents", "env_madds_per_step", "env_madds_cumulative",
                  "protocol")
AGENT_FIELDS = ("anytime_top1", "mean_return", "budgeted", "madds_per_step", "madds", "seconds", "n_runs", "runs")


def check_results(results: dict, path) -> None:
    """The shape of a ``results.json`` that compare reads, a ``ValueError`` naming what is wrong otherwise (an edited
    or damaged file used to end in a traceback, or in a bare key such as "gfnet compare: center")."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{path} is not a complete benchmark results.json: {what}; rerun its benchmark (or restore "
                          "the file it wrote)")

    missing = [k for k in RESULTS_FIELDS if k not in results]
    if missing:
        raise bad(f"it has no {', '.join(missing)}")
    protocol, agents = results["protocol"], results["agents"]
    if not isinstance(protocol, dict) or not isinstance(protocol.get("fingerprint"), str):
        raise bad(f"'protocol' must be an object with a 'fingerprint' string, got {protocol!r:.60}")
    episodes = results["episodes"]
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise bad(f"'episodes' must be a positive integer, got {episodes!r:.40}")
    if not isinstance(agents, dict) or not agents:
        raise bad(f"'agents' must be an object of agent name → results, got a {type(agents).__name__}")
    for name, entry in agents.items():
        if not isinstance(entry, dict):
            raise bad(f"agent {name!r} has a {type(entry).__name__} where its results (an object) belong")
        lacking = [k for k in AGENT_FIELDS if k not in entry]
        if lacking:
            raise bad(f"agent {name!r} has no {', '.join(lacking)}")
        if not isinstance(entry["anytime_top1"], list) or not isinstance(entry["n_runs"], int):
            raise bad(f"agent {name!r}: 'anytime_top1' must be a list and 'n_runs' an integer")


def read_per_image(folder: PathLike) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """(image indices (E,), name → its per-image records) from a folder's ``per_image.npz``: ``correct``
    (R, T', E) booleans always, and the other fields (:data:`agents.benchmark.equal_compute.RECORD_FIELDS`)
    where the folder has them."""
    path = Path(folder) / "per_image.npz"
    if not path.is_file():
        raise ValueError(f"{folder} holds no per_image.npz, needed to recompute paired statistics: rerun its benchmark")
    res = read_results(folder)  # sizes before inflating: no array larger than runs × steps × images it declares
    check_npz(path, int(res["episodes"]) * int(res.get("T", 1)) * max([1, *(int(a.get("n_runs", 1)) for a in
              res["agents"].values())]), "elements (runs × steps × images) its results.json declares")
    records: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            name, _, field = key.rpartition("/")
            if name:
                records.setdefault(name, {})[field] = data[key]
        for name, rec in records.items():
            if "correct" not in rec:
                raise ValueError(f"{path} holds no {name}/correct array (the per-image correctness every comparison "
                                 "needs): the file is incomplete or edited; rerun its benchmark")
            rec["correct"] = rec["correct"].astype(bool)
        return data["image_index"], records


#: ``reference`` of :func:`merge_results` that asks for no paired comparison (``gfnet compare --reference none``).
NO_REFERENCE = "none"


def merge_results(folders: list[PathLike], reference: str | None = None, seed: int = 0,
                  margin: float | None = None) -> dict:
    """The agents of several benchmark outputs of the same protocol in one results dict (:func:`merge_folders`
    without the per-image records)."""
    return merge_folders(folders, reference=reference, seed=seed, margin=margin)[0]


def merge_folders(folders: list[PathLike], reference: str | None = None, seed: int = 0,
                  margin: float | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The agents of several benchmark outputs of the same protocol in one results dict, and the merged per-image
    records (the arrays of a ``per_image.npz``: ``image_index``, ``target`` and ``NAME/FIELD``, so that a merge
    written by ``gfnet compare --out`` is itself a folder that can be compared).

    An agent benchmarked in several folders keeps the first; later copies are named ``name@folder``.

    Every paired statistic is recomputed over the merged agents from the folders' per-image records
    (:func:`agents.benchmark.comparison.compare_agents`, :func:`agents.benchmark.equal_compute.verdict`) against
    one reference: each folder's own numbers were computed against its own reference agent — another agent, or
    another copy of one of the same name — so copying them would put differences to different agents under one
    "Δ vs NAME" heading. (A single folder re-read against its own reference gives its own numbers back.)

    Args:
        folders: benchmark output folders (two or more; one is enough with a ``reference``).
        reference: the (merged) agent every other one is compared with; None: the first folder's reference (none
            if it had none); ``"none"`` (:data:`NO_REFERENCE`): no paired comparison.
        seed: of the recomputed bootstrap.
        margin: M (points) of the equivalence wording of the recomputed comparison (None: the first folder's).

    Returns:
        (the merged results, their per-image arrays); ``merged_from`` lists the folders and ``folder_references``
        the reference each folder was benchmarked with (the table notes when they differed).

    Raises:
        ValueError: too few folders, protocols differ (the message names the fields and values), a folder has no
            ``per_image.npz``, or the reference is not among the merged agents.
    """
    if len(folders) < (1 if reference is not None else 2):
        raise ValueError("give at least two benchmark output folders to compare (or one with --reference)")
    all_results = [read_results(f) for f in folders]
    for folder, res in zip(folders, all_results):
        if "shard" in res:
            raise ValueError(f"{folder} is shard {res['shard']['index']}/{res['shard']['count']} of a benchmark (its "
                             "numbers cover only its images): join its shards first with gfnet merge SHARD_FOLDERS "
                             "--out DIR, then compare that folder")
    base = all_results[0]["protocol"]
    for folder, res in zip(folders[1:], all_results[1:]):
        other = res["protocol"]
        if other["fingerprint"] != base["fingerprint"]:
            fields = [k for k in sorted(set(base) | set(other)) if k != "fingerprint" and base.get(k) != other.get(k)]
            diffs = "; ".join(f"{k}: {base.get(k)!r} vs {other.get(k)!r}" for k in fields)
            raise ValueError(f"{folders[0]} and {folder} measured different protocols ({diffs}); only results of "
                             "the same env, weights, images, reward, max_steps and grid can share a table")
    if reference is None:
        reference = all_results[0].get("reference")
    elif reference == NO_REFERENCE:
        reference = None
    merged = {k: v for k, v in all_results[0].items() if k != "agents"}
    merged["agents"] = {}
    merged["merged_from"] = [str(f) for f in folders]
    merged["folder_references"] = [res.get("reference") for res in all_results]
    records: dict[str, dict[str, np.ndarray]] = {}
    images = None
    for folder, res in zip(folders, all_results):
        index, per_folder = read_per_image(folder)
        if images is not None and not np.array_equal(images, index):
            raise ValueError(f"{folder}: its per-image records are of other images than {folders[0]}'s")
        images = index
        for name, entry in res["agents"].items():
            key = name if name not in merged["agents"] else f"{name}@{Path(folder).name}"
            if name not in per_folder:
                raise ValueError(f"{folder}: per_image.npz holds no records of agent {name!r}: rerun its benchmark")
            merged["agents"][key] = entry
            records[key] = per_folder[name]
    if reference is not None and reference not in merged["agents"]:
        raise ValueError(f"--reference {reference!r} is not among the merged agents {sorted(merged['agents'])}; "
                         "an agent of a later folder whose name was taken is NAME@FOLDER")
    from .comparison import compare_agents
    from .equal_compute import verdict

    for entry in merged["agents"].values():
        for key in ("vs_reference", "equal_compute", "auc", "learned_stop", "oracle_gap_closed",
                    "oracle_gap_closed_ci"):
            entry.pop(key, None)
    margin = margin if margin is not None else merged.get("margin")
    compare_agents(merged["agents"], {n: r["correct"] for n, r in records.items()}, reference, seed=seed)
    verdict(merged["agents"], records, merged["env_madds_cumulative"], reference, seed=seed, margin=margin)
    merged["reference"] = reference
    merged["margin"] = margin
    arrays: dict[str, np.ndarray] = {"image_index": np.asarray(images)}
    with np.load(Path(folders[0]) / "per_image.npz", allow_pickle=False) as data:
        if "target" in data.files:
            arrays["target"] = data["target"]
    for key, rec in records.items():
        arrays.update({f"{key}/{field}": value for field, value in rec.items()})
    return merged, arrays

