"""Looks from a benchmark's per-image records: what the report, its failure gallery and ``gfnet show --wrong
--right`` draw, without running any agent again.

The benchmark keeps, per agent, run and evaluation image, the patch of every look (:func:`look_records`:
``NAME/look_row``, ``NAME/look_col``, ``NAME/look_size`` in ``per_image.npz``, (R, T' − 1, E) int16, pixels of
the image; size 0 after the episode's end) beside p(true class), the predicted class and the exit step after
each step (:data:`agents.benchmark.equal_compute.RECORD_FIELDS`). :func:`looks_from_records` turns them and the
images back into :class:`agents.episode_images.Looks`.

The failure gallery (:func:`failure_gallery`): the evaluation images where one agent's answer is wrong and
another's right (both directions), judged on each agent's first run — the run whose looks are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...base import RecordedRun
from ...episode_images import Looks

__all__ = ["LOOKS_IMAGES", "LOOK_FIELDS", "Gallery", "default_pair", "failure_gallery", "gallery_indices", "has_looks",
           "look_columns", "look_records", "looks_from_records", "split_records"]

#: Images of the report's "looks side by side" section (and the TensorBoard picture), spread over the evaluation images.
LOOKS_IMAGES = 4
#: per-image record fields of the looks (``NAME/field`` in ``per_image.npz``), (R, T' − 1, E) int16.
LOOK_FIELDS = ("look_row", "look_col", "look_size")


def split_records(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``per_image.npz``'s arrays (``NAME/field``) as agent name → its records, in the order they were stored."""
    records: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        name, _, field = key.rpartition("/")
        if name:
            records.setdefault(name, {})[field] = np.asarray(value)
    return records


def look_columns(n: int, k: int = LOOKS_IMAGES) -> list[int]:
    """Positions of the ``k`` evaluation images (of ``n``) whose looks the report shows side by side: spread evenly,
    the first and the last included."""
    return sorted(set(np.linspace(0, n - 1, num=min(k, n)).astype(int).tolist())) if n > 0 else []


def look_records(runs: Sequence[RecordedRun]) -> dict[str, np.ndarray]:
    """The patches an agent's runs looked at on the evaluation images, as :data:`LOOK_FIELDS` arrays (R, T' − 1, E)
    int16 (row, column and side in pixels; 0 where no look was taken)."""
    boxes = np.stack([np.asarray(r.eval.boxes) for r in runs])            # (R, T' - 1, E, 4)
    if boxes.size and (boxes.max() > np.iinfo(np.int16).max or boxes.min() < 0):
        raise ValueError(f"look boxes outside 0..{np.iinfo(np.int16).max} pixels cannot be recorded as int16")
    return {"look_row": boxes[..., 0].astype(np.int16), "look_col": boxes[..., 1].astype(np.int16),
            "look_size": boxes[..., 2].astype(np.int16)}


def has_looks(record: dict[str, np.ndarray]) -> bool:
    """Whether an agent's records hold its looks (older folders and null models' merges may not)."""
    return all(k in record for k in LOOK_FIELDS)


def looks_from_records(record: dict[str, np.ndarray], columns: Sequence[int], image_index: np.ndarray,
                       target: np.ndarray, image_at: Callable[[int], np.ndarray], class_names: Sequence[str],
                       run: int = 0) -> list[Looks]:
    """The :class:`~agents.episode_images.Looks` of one agent's run on evaluation images ``columns`` (positions in
    the records, not dataset indices).

    Args:
        record: the agent's per-image records (``pred``, ``p_true``, ``exit_step``, ``stopped`` and
            :data:`LOOK_FIELDS`, each with the run first).
        image_index: (E,) dataset index of each evaluation image; ``target``: (E,) its label.
        image_at: dataset index → (S, S, 3) uint8 image.
        class_names: by label.
        run: which run (0: the first, the one the gallery judges).
    """
    out = []
    for e in columns:
        k = int(record["exit_step"][run, e])
        boxes = np.stack([record["look_row"][run, :k, e], record["look_col"][run, :k, e],
                          record["look_size"][run, :k, e], record["look_size"][run, :k, e]], 1).astype(np.int64)
        out.append(Looks(image=image_at(int(image_index[e])), boxes=boxes,
                         p_true=np.asarray(record["p_true"][run, : k + 1, e], dtype=np.float64),
                         predicted=[class_names[int(c)] for c in record["pred"][run, : k + 1, e]],
                         true_name=class_names[int(target[e])], index=int(image_index[e]),
                         stopped=bool(record["stopped"][run, e])))
    return out


@dataclass
class Gallery:
    """The failure gallery of a pair of agents: positions (in the per-image records) of the evaluation images
    where ``wrong`` answered wrongly and ``right`` rightly (``wrong_only``), and the reverse (``right_only``),
    at most ``limit`` each, in evaluation order; ``counts`` are the full numbers before the limit."""

    wrong: str
    right: str
    wrong_only: list[int]
    right_only: list[int]
    counts: tuple[int, int]


def _answer_correct(record: dict[str, np.ndarray]) -> np.ndarray:
    """(E,) whether the first run's answer (its prediction at its exit step) is right."""
    correct = np.asarray(record["correct"])[0]                               # (T', E)
    if "exit_step" in record:
        exits = np.asarray(record["exit_step"])[0].astype(np.int64)
        return correct[exits, np.arange(correct.shape[1])]
    return correct[-1]


def failure_gallery(records: dict[str, dict[str, np.ndarray]], wrong: str, right: str, limit: int = 8) -> Gallery:
    """The images where ``wrong`` is wrong and ``right`` right, and the reverse (:class:`Gallery`).

    Raises:
        ValueError: an agent is not among the records (the message lists those that are), or the two are one.
    """
    for name, flag in ((wrong, "--wrong"), (right, "--right")):
        if name not in records:
            raise ValueError(f"{flag} {name!r} is not among the benchmarked agents {sorted(records)}")
    if wrong == right:
        raise ValueError(f"--wrong and --right name the same agent {wrong!r}: choose two agents")
    if limit < 1:
        raise ValueError(f"the gallery needs at least one image per side, got {limit}")
    a, b = _answer_correct(records[wrong]), _answer_correct(records[right])
    first = np.flatnonzero(~a & b)
    second = np.flatnonzero(a & ~b)
    return Gallery(wrong, right, first[:limit].tolist(), second[:limit].tolist(), (len(first), len(second)))


def default_pair(results: dict) -> tuple[str, str] | None:
    """The gallery's default (chosen agent, reference): the contender with the best last-step top-1 other than the
    reference, against the reference; without a reference, the best against the second best. None with fewer
    than two agents."""
    agents = results.get("agents", {})
    contenders = [n for n, e in agents.items() if not e.get("upper_bound")] or list(agents)
    ranked = sorted(contenders, key=lambda n: -float(agents[n]["anytime_top1"][-1]))
    reference = results.get("reference")
    if reference in agents:
        others = [n for n in ranked if n != reference] or [n for n in agents if n != reference]
        return (others[0], reference) if others else None
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None


def gallery_indices(folder, wrong: str, right: str, limit: int) -> tuple[list[int], dict]:
    """The dataset indices of the first ``limit`` images of a results folder where ``wrong`` answered wrongly and
    ``right`` rightly (the first side of :func:`failure_gallery`: ``gfnet show --wrong --right --results``), and the
    folder's results.

    Raises:
        ValueError: not a results folder, no per-image records, or an agent not benchmarked there.
    """
    from ..merge import read_per_image, read_results

    results = read_results(folder)
    image_index, records = read_per_image(folder)
    gallery = failure_gallery(records, wrong, right, limit)
    return [int(image_index[c]) for c in gallery.wrong_only], results
