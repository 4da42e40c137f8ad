"""Hand-written patch-selection baselines: random, centre, raster scan, glance saliency and the greedy oracle.

None of them learns. All act on a batch; the ones that need more than the observation read the
:class:`~gfnet_env.core.GFNetCore` handed to ``bind`` (the benchmark binds before evaluating).

| name | obs | action | chooses |
|---|---|---|---|
| ``random`` | any | continuous | a corner uniform in [0, 1]², from its own seeded generator |
| ``center`` | any | continuous | the centre patch, (0.5, 0.5), every step |
| ``raster`` | any | continuous | cell t of a g×g grid in snake order at step t (g = ⌈√(steps)⌉ by default) |
| ``saliency`` | feature_map | continuous | the patch centred on the previous map's cell of largest channel sum |
| ``oracle`` | any | grid | the cell whose focus step most raises p(true class) — uses the label: an upper bound |
"""

from __future__ import annotations

import math

import numpy as np
import torch

from feature_nets.classifiers import CascadeClassifier
from feature_nets.crop import crop_corners, crop_patches
from feature_nets.gfnet import StepOutput

from .base import Agent, num_envs_of, register


class RandomAgent(Agent):
    """Uniformly random corners in [0, 1]², reproducible for a fixed ``seed``.

    ``deterministic`` is ignored: the benchmark evaluates it over several seeds instead.
    """

    name = "random"
    obs_mode = "gru"
    action_mode = "continuous"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return self.rng.random((num_envs_of(obs), 2), dtype=np.float32)


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
        grid_size: g; default ⌈√(focus steps)⌉ of the bound core (so the steps spread over the image),
            2 when no core is bound.
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
        steps = getattr(self.core, "max_steps", None) if self.core is not None else None
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

    The previous look's map (C, h, w) is summed over channels; its arg-max cell (i, j) covers rows
    ``i/h .. (i+1)/h`` and columns ``j/w .. (j+1)/w`` of the region that look saw — the whole image after the
    glance, the previous patch after a focus step (taken from the bound core's ``boxes``). The action puts
    the next P×P patch's centre on that cell's centre (clipped to the image). Without a bound core the map
    is taken to cover the whole image and the action is the cell centre's fraction.
    """

    name = "saliency"
    obs_mode = "feature_map"
    action_mode = "continuous"

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        fmap = np.asarray(obs["feature_map"] if isinstance(obs, dict) else obs, dtype=np.float32)
        if fmap.ndim != 4:
            raise ValueError(f"saliency needs feature-map observations (N, C, h, w), got shape {fmap.shape}")
        n, _, h, w = fmap.shape
        sal = fmap.sum(axis=1).reshape(n, h * w)
        flat = sal.argmax(axis=1)
        ci, cj = (flat // w + 0.5) / h, (flat % w + 0.5) / w  # cell centre, fraction of the seen region
        if self.core is None:
            return np.stack([ci, cj], 1).astype(np.float32)
        s, p = self.core.model.image_size, self.core.model.patch_size
        boxes = self.core.boxes.astype(np.float64)  # (N, 4) row, col, height, width (host side)
        centre_r = boxes[:, 0] + ci * boxes[:, 2]
        centre_c = boxes[:, 1] + cj * boxes[:, 3]
        if s == p:
            return np.full((n, 2), 0.5, dtype=np.float32)
        a = np.stack([(centre_r - p / 2) / (s - p), (centre_c - p / 2) / (s - p)], 1)
        return np.clip(a, 0.0, 1.0).astype(np.float32)


class OracleAgent(Agent):
    """Greedy oracle on a G×G grid: the cell whose focus step most raises p(true class). **An upper bound.**

    It reads the label (``core.targets``), so it is never a contender; the benchmark reports it apart.
    At each step it tries every cell for every image at once: N·G² crops through the local encoder and one
    classifier step each, then takes the arg-max of p_t(y) per image (ties → the lowest cell index).

    Cost: G² focus steps' worth of multiply-adds per step (49× the env's focus cost for G = 7), run in
    chunks of ``chunk`` crops; the reported per-step multiply-adds are the env's (one look), not this search.

    Args:
        grid_size: G (default 7, the env's default grid).
        chunk: crops per forward pass (bounds memory).
    """

    name = "oracle"
    obs_mode = "gru"
    action_mode = "grid"
    upper_bound = True

    def __init__(self, grid_size: int = 7, chunk: int = 2048) -> None:
        self.grid_size = int(grid_size)
        self.chunk = int(chunk)

    @torch.inference_mode()
    def candidate_probs(self) -> torch.Tensor:
        """p_t(y) for every (image, cell) of the bound core's current batch: (N, G²) float tensor."""
        core = self.core
        if core is None:
            raise RuntimeError("the oracle reads the env's labels and images: call bind(core) first")
        from gfnet_env.core import grid_to_unit

        model, g2, n = core.model, self.grid_size ** 2, core.num_envs
        dev = core.device
        units = grid_to_unit(torch.arange(g2, device=dev), self.grid_size)  # (G², 2)
        out = torch.empty(n, g2, device=dev)
        groups = [np.arange(n)] if not isinstance(model.classifier, CascadeClassifier) \
            else [np.flatnonzero(core.steps == s) for s in np.unique(core.steps)]
        per_chunk = max(1, self.chunk // g2)  # images per forward pass
        for group in groups:
            for start in range(0, len(group), per_chunk):
                idx = torch.as_tensor(group[start:start + per_chunk], device=dev)
                b = len(idx)
                rep = lambda x: x.repeat_interleave(g2, 0)  # noqa: E731  (b, ...) -> (b·G², ...), image-major
                corners = crop_corners(units, model.image_size, model.patch_size).repeat(b, 1)  # (b·G², 2)
                source = torch.arange(b, device=dev).repeat_interleave(g2)
                patches = crop_patches(core.images[idx], corners, model.patch_size, source)  # (b·G², 3, P, P)
                pooled, fmap = model.local_encoder(patches)
                prev = StepOutput(rep(core.logits[idx]), rep(core.state[idx]), rep(core.fmap[idx]), None,
                                  None, int(core.steps[group[start]]))
                step = model.focus_from_features(pooled, fmap, corners, prev)
                probs = torch.softmax(step.logits.float(), -1)
                y = core.targets[idx].repeat_interleave(g2, 0)
                out[idx] = probs.gather(1, y[:, None])[:, 0].view(b, g2)
        return out

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        if self.core is not None and self.core.settings.action_mode == "grid" \
                and self.core.settings.grid_size != self.grid_size:
            raise ValueError(f"the oracle searches a {self.grid_size}×{self.grid_size} grid but the env's grid is "
                             f"{self.core.settings.grid_size}; build the env with grid_size={self.grid_size}")
        return self.candidate_probs().argmax(1).cpu().numpy().astype(np.int64)


register("random", RandomAgent)
register("center", CenterAgent)
register("raster", RasterAgent)
register("saliency", SaliencyAgent)
register("oracle", OracleAgent)
