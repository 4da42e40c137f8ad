"""Hand-written patch-selection baselines: random, centre, raster scan, glance saliency (also with inhibition of
return) and the greedy oracle.

None of them learns. All act on a batch of observations; besides them they use only the view they are
bound to (docs/environment.md, "What agents see"): static facts for raster and saliency, and for the oracle —
which reads the label — a privileged view that marks it as an upper bound.

| name | obs | action | chooses |
|---|---|---|---|
| ``random`` | any | continuous | a corner uniform in [0, 1]², drawn from a generator keyed by (seed, image) |
| ``center`` | any | continuous | the centre patch, (0.5, 0.5), every step |
| ``raster`` | any | continuous | cell t of a g×g grid in snake order at step t (g = ⌈√(steps)⌉ by default) |
| ``saliency`` | dict | continuous | the patch centred on the previous map's cell of largest channel sum |
| ``saliency-ior`` | dict | continuous | the glance map's most salient cell whose patch overlaps no earlier look |
| ``oracle`` | any | grid | the cell whose focus step most raises p(true class) — uses the label: an upper bound |
"""

from __future__ import annotations

import math

import numpy as np

from gfnet_env.settings import DEFAULT_GRID_SIZE

from .base import Agent, Run, RunContext, num_envs_of


class RandomAgent(Agent):
    """Uniformly random corners in [0, 1]², reproducible for a fixed ``seed``.

    Its draws are keyed by (seed, image, step): told the batch's images (``begin_episodes``, which
    :func:`gfnet_env.rollout.rollout` calls), episode i draws from its own generator seeded with
    (seed, dataset index of its image), its s-th action being that generator's s-th pair. An image's looks then
    do not depend on the batch size nor on the batch or shard it falls in (:mod:`agents.benchmark.shards`).
    Acting without being told the images (e.g. through the Gymnasium env), it draws from one generator seeded
    with ``seed``, in batch order.

    ``deterministic`` is ignored: the benchmark evaluates it over several seeds instead.
    """

    name = "random"
    obs_mode = "gru"
    action_mode = "continuous"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._per_image: list[np.random.Generator] | None = None

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self._per_image = None  # until begin_episodes names the images

    def begin_episodes(self, image_index: np.ndarray) -> None:
        """The batch's images (dataset indices): one generator per episode, keyed by (seed, image)."""
        self._per_image = [np.random.default_rng([self.seed, int(i)]) for i in np.asarray(image_index).reshape(-1)]

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        n = num_envs_of(obs)
        if self._per_image is None:
            return self.rng.random((n, 2), dtype=np.float32)
        if n != len(self._per_image):
            raise ValueError(f"random: {n} observations for a batch of {len(self._per_image)} images")
        return np.stack([g.random(2, dtype=np.float32) for g in self._per_image])

    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """One run per seed: seed, seed + 1, …, seed + seeds − 1."""
        return [Run(f"seed={ctx.seed + k}", lambda k=k: cls(seed=ctx.seed + k)) for k in range(ctx.seeds)], \
            f"{ctx.seeds} seeds"


class CenterAgent(Agent):
    """Always the centre patch, action (0.5, 0.5)."""

    name = "center"
    obs_mode = "gru"
    action_mode = "continuous"

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return np.full((num_envs_of(obs), 2), 0.5, dtype=np.float32)


class RasterAgent(Agent):
    """A fixed scan: focus step t looks at cell t (mod g²) of a g×g grid of corners, rows in snake order.

    Snake order: row 0 left to right, row 1 right to left, … so consecutive patches are neighbours.

    Args:
        grid_size: g; default ⌈√(focus steps)⌉ of the bound view (so the steps spread over the image),
            2 when unbound.
    """

    name = "raster"
    obs_mode = "gru"
    action_mode = "continuous"

    def __init__(self, grid_size: int | None = None) -> None:
        self.scan_grid = grid_size
        self.t = 0

    def _g(self) -> int:
        if self.scan_grid is not None:
            return int(self.scan_grid)
        steps = self.view.max_steps if self.view is not None else None
        return max(1, math.ceil(math.sqrt(steps))) if steps else 2

    def cell_order(self) -> list[tuple[int, int]]:
        """The (row, col) cells of the scan, in order."""
        g = self._g()
        return [(r, c if r % 2 == 0 else g - 1 - c) for r in range(g) for c in range(g)]

    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self.t = 0

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        g = self._g()
        order = self.cell_order()
        r, c = order[self.t % len(order)]
        self.t += 1
        a = np.array([0.5, 0.5], dtype=np.float32) if g == 1 else np.array([r, c], dtype=np.float32) / (g - 1)
        return np.tile(a, (num_envs_of(obs), 1))


class SaliencyAgent(Agent):
    """Look where the previous feature map is strongest.

    Reads the ``dict`` observation: ``feature_map`` (N, C, h, w) of the previous look and ``box``, the region
    (row, col, height, width, pixels) that look saw — the whole image after the glance, the previous patch
    after a focus step. The map is summed over channels; its arg-max cell (i, j) covers rows
    ``i/h .. (i+1)/h`` and columns ``j/w .. (j+1)/w`` of that region. The action puts the next P×P patch's
    centre on that cell's centre (clipped to the image), with S and P from the bound view. Given a bare
    feature map, or unbound, the map is taken to cover the whole image and the action is the cell centre's
    fraction.
    """

    name = "saliency"
    obs_mode = "dict"
    action_mode = "continuous"

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        fmap = np.asarray(obs["feature_map"] if isinstance(obs, dict) else obs, dtype=np.float32)
        if fmap.ndim != 4:
            raise ValueError(f"saliency needs feature-map observations (N, C, h, w), got shape {fmap.shape}")
        n, _, h, w = fmap.shape
        sal = fmap.sum(axis=1).reshape(n, h * w)
        flat = sal.argmax(axis=1)
        ci, cj = (flat // w + 0.5) / h, (flat % w + 0.5) / w  # cell centre, fraction of the seen region
        if self.view is None or not isinstance(obs, dict) or "box" not in obs:
            return np.stack([ci, cj], 1).astype(np.float32)
        s, p = self.view.image_size, self.view.patch_size
        boxes = np.asarray(obs["box"], dtype=np.float64)  # (N, 4) row, col, height, width
        centre_r = boxes[:, 0] + ci * boxes[:, 2]
        centre_c = boxes[:, 1] + cj * boxes[:, 3]
        if s == p:
            return np.full((n, 2), 0.5, dtype=np.float32)
        a = np.stack([(centre_r - p / 2) / (s - p), (centre_c - p / 2) / (s - p)], 1)
        return np.clip(a, 0.0, 1.0).astype(np.float32)


class SaliencyIORAgent(Agent):
    """Glance saliency with inhibition of return: never look again where a patch has already looked.

    ``saliency`` follows the previous look's feature map, which after a focus step covers only the previous
    patch, so it keeps looking inside it. This agent ranks the cells of the *glance* map (the whole image,
    kept per env from the episode's first observation) by channel sum and takes the most salient cell whose
    P×P patch (centred on the cell, clipped to the image) overlaps no patch looked at so far in the episode
    (the ``locations`` of the dict observation). When every cell's patch overlaps an earlier one, it takes the
    one with the least overlapping area (ties: the more salient). Deterministic; needs the bound view (S, P).
    """

    name = "saliency-ior"
    obs_mode = "dict"
    action_mode = "continuous"

    def reset(self, num_envs: int) -> None:
        self._glance: np.ndarray | None = None  # (N, h, w) channel sums of each episode's glance map

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        if not isinstance(obs, dict) or not {"feature_map", "step", "locations"} <= set(obs):
            raise ValueError("saliency-ior needs dict observations (obs_mode='dict': feature_map, step, locations)")
        if self.view is None:
            raise ValueError("saliency-ior needs the env's view (image and patch size): bind(view) it first, or "
                             "run it through gfnet_env.rollout, which does")
        fmap = np.asarray(obs["feature_map"], dtype=np.float32)
        n, _, h, w = fmap.shape
        steps = np.asarray(obs["step"]).reshape(n)
        if getattr(self, "_glance", None) is None or self._glance.shape != (n, h, w):
            self._glance = np.zeros((n, h, w), dtype=np.float32)
        first = steps == 0
        self._glance[first] = fmap[first].sum(axis=1)
        s, p = self.view.image_size, self.view.patch_size
        if s == p:
            return np.full((n, 2), 0.5, dtype=np.float32)
        # candidate corners (pixels): each glance cell's centre, patch centred on it, clipped to the image
        rows, cols = np.meshgrid((np.arange(h) + 0.5) * s / h, (np.arange(w) + 0.5) * s / w, indexing="ij")
        corners = np.floor(np.clip(np.stack([rows.ravel(), cols.ravel()], 1) - p / 2, 0, s - p))
        looked = np.asarray(obs["locations"], dtype=np.float64)  # (N, max_steps, 2), -1 = no look yet
        valid = looked[..., 0] >= 0
        seen = np.floor(np.clip(looked, 0, 1) * (s - p))  # (N, m, 2) corners of earlier looks
        d = np.abs(corners[None, :, None, :] - seen[:, None, :, :])  # (N, C, m, 2)
        area = np.prod(np.clip(p - d, 0, None), axis=-1) * valid[:, None, :]  # overlap with each earlier look
        overlap = area.sum(-1)  # (N, C)
        sal = self._glance.reshape(n, h * w)
        # lexicographic: least overlap first (0 where possible), then the most salient
        order = np.array([np.lexsort((-sal[i], overlap[i]))[0] for i in range(n)])
        return (corners[order] / (s - p)).astype(np.float32)


class OracleAgent(Agent):
    """Greedy oracle on a G×G grid: the cell whose focus step most raises p(true class). **An upper bound.**

    It reads the label through a :class:`~gfnet_env.views.PrivilegedView` (``privileged = True``), so it is
    never a contender; every result reports it apart. At each step it tries every cell for every image at
    once (N·G² crops through the local encoder and one classifier step each, ``chunk`` crops at a time) and
    takes the arg-max of p_t(y) per image (ties → the lowest cell index).

    Cost: G² focus steps' worth of multiply-adds per step (49× the env's focus cost for G = 7); the
    reported per-step multiply-adds are the env's (one look), not this search.

    Args:
        grid_size: G (default 7, the env's default grid).
        chunk: crops per forward pass (bounds memory).
    """

    name = "oracle"
    obs_mode = "gru"
    action_mode = "grid"
    privileged = True
    #: Its search is reported as no decision cost: it is an upper bound, not a policy anyone could deploy.
    decision_madds = 0.0

    def __init__(self, grid_size: int = DEFAULT_GRID_SIZE, chunk: int = 2048) -> None:
        from gfnet_env.actions import GridActions

        self.grid_size = int(grid_size)
        self.chunk = int(chunk)
        self._cells = GridActions(self.grid_size).cell_locations()  # (G², 2)

    @classmethod
    def runs(cls, ctx: RunContext) -> tuple[list[Run], str]:
        """One run on the env's grid (``grid_size`` env kwarg, default 7)."""
        g = int(ctx.env_kwargs.get("grid_size", DEFAULT_GRID_SIZE))
        return [Run("grid", lambda: cls(grid_size=g))], f"greedy on a {g}×{g} grid (uses the label)"

    def candidate_probs(self):
        """p_t(y) for every (image, cell) of the current batch: (N, G²) float tensor."""
        if not hasattr(self.view, "lookahead"):
            raise RuntimeError("the oracle reads the env's labels: it must be bound to a PrivilegedView "
                               "(gfnet_env.rollout does this for agents with privileged = True)")
        return self.view.lookahead(self._cells, chunk=self.chunk)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        env = getattr(self.view, "env", None)
        if env is not None and env.action_mode == "grid" and env.grid_size != self.grid_size:
            raise ValueError(f"the oracle searches a {self.grid_size}×{self.grid_size} grid but the env's grid is "
                             f"{env.grid_size}; build the env with grid_size={self.grid_size}")
        return self.candidate_probs().argmax(1).cpu().numpy().astype(np.int64)
