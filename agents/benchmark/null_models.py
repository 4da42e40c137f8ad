"""Null models: controls that reuse another agent's looks, to tell *where this image needs a look* from *a good
average place to look* (docs/benchmark.md, "Null models").

Both copy a **source agent** benchmarked in the same run — the benchmark's reference by default (``--reference``,
``paper-ppo`` when benchmarked), or the agent named by a variant label: ``shuffle:sb3-ppo`` copies ``sb3-ppo``.
Each is evaluated once per run of its source (a source with three trained seeds gives three null runs).

| name | plays on image i | controls for |
|---|---|---|
| ``shuffle`` | the source's looks (locations, in order, and its exit step) on another image j = π(i) of the same image set — π a fixed derangement from the benchmark's seed | image-dependence: same locations and compute, wrong image |
| ``prior`` | per step, the centre of the source's most frequent G×G grid cell on the **fit** images (the mean corner of the looks in that cell); with a stopping source, a stop after the median number of looks on the fit images | a learned average place: one sequence for every image |

An agent that beats ``shuffle`` and ``prior`` at equal compute looks at places chosen *for the image*; one that only
beats ``random`` may have learned a location prior. Both decide by table lookup, so their own cost is 0
multiply-adds (what the benchmark measures); they see observations only to count the batch.

The looks are replayed exactly: a recorded patch corner c (pixels) is played as the unit action
(c + ½) / (S − P), which the env's crop, ``floor(a · (S − P))``, turns back into c.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from gfnet_env.settings import DEFAULT_GRID_SIZE

from ..base import Agent, RecordedRun, Run, RunContext, num_envs_of

if TYPE_CHECKING:
    from gfnet_env.rollout import Rollout

__all__ = ["NullModel", "PriorAgent", "ShuffleAgent", "corner_actions", "derangement"]


def corner_actions(corners: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """Unit actions that crop exactly at ``corners`` (..., 2) int pixels: (c + ½) / (S − P), float32."""
    span = image_size - patch_size
    if span <= 0:
        return np.zeros(corners.shape, dtype=np.float32)
    return np.clip((np.asarray(corners, dtype=np.float64) + 0.5) / span, 0.0, 1.0).astype(np.float32)


def derangement(n: int, seed: int) -> np.ndarray:
    """(n,) int64 π with π[i] ≠ i for every i: a seeded random cycle through all n positions (n ≥ 2)."""
    if n < 2:
        raise ValueError(f"shuffle needs at least 2 images to give each one another image's looks, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    donor = np.empty(n, dtype=np.int64)
    donor[order] = order[np.roll(np.arange(n), -1)]
    return donor


def _plans(looks: "Rollout", donor: np.ndarray, image_size: int, patch_size: int, stop: bool) -> np.ndarray:
    """(E, max_steps, 2 or 3) actions that replay on episode e the looks of episode ``donor[e]`` of ``looks``:
    its corners in order, then (``stop``) the stop action at its exit step and after."""
    corners = looks.boxes[:, donor, :2].transpose(1, 0, 2)  # (E, max_steps, 2)
    moves = corner_actions(corners, image_size, patch_size)
    if not stop:
        return moves
    exits = np.asarray(looks.exit_step)[donor]
    halt = (np.arange(moves.shape[1])[None, :] >= exits[:, None]).astype(np.float32)
    return np.concatenate([moves, halt[..., None]], axis=-1)


class NullModel(Agent):
    """Base of the controls that copy a source agent's looks (see the module docstring).

    Attributes:
        copies_looks: read by the benchmark, which runs the source agent first and hands its recorded looks to
            :meth:`runs` through :attr:`agents.base.RunContext.looks`.
    """

    obs_mode = "gru"
    action_mode = "continuous"
    copies_looks: ClassVar[bool] = True

    @classmethod
    def source_of_looks(cls, variant: str, reference: str | None) -> str:
        """The agent whose looks are copied: the variant's label, else the benchmark's reference."""
        source = variant or reference
        if not source:
            raise ValueError(f"{cls.name} copies another agent's looks: name it ({cls.name}:AGENT, e.g. "
                             f"{cls.name}:paper-ppo) or pass --reference AGENT")
        return source

    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """One run per run of the source agent, built from its looks recorded earlier in the same benchmark."""
        source = cls.source_of_looks(ctx.variant, ctx.reference)
        recorded = ctx.looks.get(source)
        if not recorded:
            raise ValueError(f"{cls.name} copies the looks of {source!r}, which this benchmark has not run: add "
                             f"{source} to --agents (null models exist only inside a benchmark)")
        if ctx.model is None:
            raise ValueError(f"{cls.name} needs the env's networks (image and patch size) in its run context")
        size, patch = int(ctx.model.image_size), int(ctx.model.patch_size)
        runs = [Run(f"of {source} {rec.label}".strip(), lambda rec=rec: cls.from_looks(rec, size, patch, ctx))
                for rec in recorded]
        return runs, f"null model of {source}"

    @classmethod
    def from_looks(cls, recorded: RecordedRun, image_size: int, patch_size: int, ctx: RunContext) -> "NullModel":
        raise NotImplementedError


class ShuffleAgent(NullModel):
    """Replays, on each image, the source agent's looks and exit step on another image of the same image set.

    Args:
        plans: dataset image index → (max_steps, 2 or 3) float32 unit actions, one row per decision (a third
            component ≥ 0.5 stops).
        stop_action: whether the plans stop (the source stopped on some image).
    """

    name = "shuffle"

    def __init__(self, plans: dict[int, np.ndarray], stop_action: bool = False) -> None:
        self.plans = plans
        self.stop_action = bool(stop_action)
        self._batch: np.ndarray | None = None
        self._t = 0

    @classmethod
    def from_looks(cls, recorded: RecordedRun, image_size: int, patch_size: int, ctx: RunContext) -> "ShuffleAgent":
        """Plans for the evaluation images (a derangement among them) and for fit images whose dataset index no
        evaluation image has (a derangement among those), from the benchmark's seed.

        Plans are keyed by dataset index. When the fit images come from another split (the task's ``fit_split``)
        their indices overlap the evaluation images', and a fit image plays the plan of the evaluation index it
        shares — the source's looks on an image of the other split: another image's looks all the same."""
        stop = bool(np.any(recorded.eval.stopped) or np.any(recorded.fit.stopped))
        plans: dict[int, np.ndarray] = {}
        for k, looks in enumerate((recorded.eval, recorded.fit)):
            index = np.asarray(looks.image_index, dtype=np.int64)
            new = np.flatnonzero([int(i) not in plans for i in index])
            if new.size == 0:  # every index already has a plan (the same images, or another split's same indices)
                continue
            donor = new[derangement(new.size, ctx.seed + k)]
            rows = _plans(looks, donor, image_size, patch_size, stop)
            plans.update({int(index[e]): rows[j] for j, e in enumerate(new)})
        return cls(plans, stop_action=stop)

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self._batch, self._t = None, 0

    def begin_episodes(self, image_index: np.ndarray) -> None:
        """The batch's images (dataset indices, from :func:`gfnet_env.rollout.rollout`): their plans."""
        missing = [int(i) for i in image_index if int(i) not in self.plans]
        if missing:
            raise ValueError(f"shuffle has no recorded looks for images {missing[:5]}: it replays looks only on "
                             "the images of the benchmark that recorded them")
        self._batch = np.stack([self.plans[int(i)] for i in image_index])

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        if self._batch is None:
            raise RuntimeError("shuffle plays recorded looks per image: roll it out with gfnet_env.rollout.rollout, "
                               "which tells it the images (begin_episodes)")
        if num_envs_of(obs) != len(self._batch):
            raise ValueError(f"shuffle: {num_envs_of(obs)} observations for a batch of {len(self._batch)} images")
        t = min(self._t, self._batch.shape[1] - 1)
        self._t += 1
        return self._batch[:, t].copy()


class PriorAgent(NullModel):
    """One image-independent sequence of looks: per step, the source agent's most frequent place on the fit images.

    Args:
        plan: (max_steps, 2 or 3) float32 unit actions, one row per decision, the same for every image.
        stop_action: whether the plan stops (after the source's median number of looks).
    """

    name = "prior"

    def __init__(self, plan: np.ndarray, stop_action: bool = False) -> None:
        self.plan = np.asarray(plan, dtype=np.float32)
        self.stop_action = bool(stop_action)
        self._t = 0

    @classmethod
    def from_looks(cls, recorded: RecordedRun, image_size: int, patch_size: int, ctx: RunContext,
                   grid_size: int | None = None) -> "PriorAgent":
        """The plan from the source's looks on the fit images (grid G: ``grid_size`` env kwarg or the default)."""
        g = int(grid_size or ctx.env_kwargs.get("grid_size") or DEFAULT_GRID_SIZE)
        looks = recorded.fit
        corners = np.asarray(looks.boxes[..., :2], dtype=np.int64)  # (max_steps, F, 2)
        exits = np.asarray(looks.exit_step, dtype=np.int64)
        plan = np.empty((corners.shape[0], 2), dtype=np.float32)
        previous = np.full(2, (image_size - patch_size) // 2, dtype=np.int64)
        for t in range(corners.shape[0]):
            looked = corners[t, exits > t]
            if len(looked):
                previous = most_frequent_place(looked, image_size - patch_size, g)
            plan[t] = corner_actions(previous, image_size, patch_size)
        stop = bool(np.any(recorded.eval.stopped) or np.any(looks.stopped))
        if stop:
            looks_before_stop = int(np.percentile(exits, 50, method="lower"))
            halt = (np.arange(len(plan)) >= looks_before_stop).astype(np.float32)
            plan = np.concatenate([plan, halt[:, None]], axis=1)
        return cls(plan, stop_action=stop)

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self._t = 0

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        t = min(self._t, len(self.plan) - 1)
        self._t += 1
        return np.repeat(self.plan[t][None], num_envs_of(obs), axis=0)


def most_frequent_place(corners: np.ndarray, span: int, grid_size: int) -> np.ndarray:
    """The mean corner (rounded, (2,) int64) of the looks in the most frequent cell of a G×G grid over
    [0, span]² (ties: the lowest cell index, row-major)."""
    cells = np.minimum(corners * grid_size // (span + 1), grid_size - 1) if span > 0 else np.zeros_like(corners)
    flat = cells[:, 0] * grid_size + cells[:, 1]
    mode = int(np.argmax(np.bincount(flat, minlength=grid_size * grid_size)))
    return np.rint(corners[flat == mode].mean(0)).astype(np.int64)
