"""Action decoders: one per action mode, each owning its space, its checks and its map to patch locations.

A decoder turns a batch of env actions into (N, 2) locations in [0, 1] (row, column fractions; the patch's
top-left corner is ``floor(a · (S − P))``, docs/gfnet.md "Crop"). Actions are checked once, here; a
single env hands its one action over as a batch of one (``single=True`` phrases errors for it).

* :class:`ContinuousActions` — ``Box(0, 1, (2,))`` (``action_range="unit"``, the paper's) or ``Box(-1, 1, (2,))``
  (``"symmetric"``, mapped by (a + 1) / 2 so that a Gaussian policy's zero mean is the image centre).
  Values outside the box are clipped; NaN raises. A torch tensor stays on its device (no host round trip).
* :class:`GridActions` — ``Discrete(G²)``: cell r·G + c of a G×G grid of corners spread evenly over [0, 1]².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

__all__ = ["ContinuousActions", "DecodedActions", "GridActions", "grid_to_unit", "make_action_decoder"]


@dataclass
class DecodedActions:
    """A checked batch of actions.

    Attributes:
        unit: (N, 2) float32 locations in [0, 1]: a numpy array, or a tensor on the device it came on.
        cells: (N,) int64 grid cells (grid mode), else None.
    """

    unit: np.ndarray | torch.Tensor
    cells: np.ndarray | None = None


def grid_to_unit(cells: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Grid cell indices (row-major over a G×G grid of corners) → (N, 2) locations in [0, 1].

    Corner rows/columns are spread evenly over [0, 1], so cell (0, 0) is the top-left patch and
    (G−1, G−1) the bottom-right one; a 1×1 grid is the centre.
    """
    g = grid_size
    rc = torch.stack([cells // g, cells % g], dim=1).float()
    if g == 1:
        return torch.full_like(rc, 0.5)
    return rc / (g - 1)


def _shape_error(got: tuple, n: int, single: bool, batch_shape: tuple, single_shape: tuple, what: str) -> ValueError:
    want = single_shape if single else batch_shape
    return ValueError(f"expected {'an action' if single else 'actions'} of shape {want} — {what} — got {got}")


class ContinuousActions:
    """(row, col) fractions; see the module docstring."""

    mode = "continuous"

    def __init__(self, action_range: str = "unit") -> None:
        self.action_range = action_range
        low = -1.0 if action_range == "symmetric" else 0.0
        self.space = spaces.Box(low, 1.0, (2,), np.float32)

    def decode(self, actions, n: int, single: bool = False) -> DecodedActions:
        what = "a (row, col) fraction in [0, 1] per env" if self.action_range == "unit" \
            else "a (row, col) pair in [-1, 1] per env"
        if torch.is_tensor(actions):
            a = actions.detach().float()
            if tuple(a.shape) != (n, 2):
                raise _shape_error(tuple(a.shape[1:] if single else a.shape), n, single, (n, 2), (2,), what)
            bad = torch.isnan(a).any(1)
            if bool(bad.any()):
                raise ValueError(f"NaN in actions of envs {torch.nonzero(bad).flatten().tolist()}; a policy produced NaN "
                                 "(check its inputs/learning rate)")
            if self.action_range == "symmetric":
                a = (a + 1.0) * 0.5
            return DecodedActions(a.clamp(0.0, 1.0))
        a = np.asarray(actions)
        if a.shape != (n, 2):
            raise _shape_error(a.shape[1:] if single else a.shape, n, single, (n, 2), (2,), what)
        a = a.astype(np.float32, copy=False)
        if np.isnan(a).any():
            bad = np.flatnonzero(np.isnan(a).any(1)).tolist()
            raise ValueError(f"NaN in actions of envs {bad}; a policy produced NaN (check its inputs/learning rate)")
        if self.action_range == "symmetric":
            a = (a + 1.0) * 0.5
        return DecodedActions(np.clip(a, 0.0, 1.0))


class GridActions:
    """Cell indices of a G×G grid of corners; see the module docstring."""

    mode = "grid"

    def __init__(self, grid_size: int) -> None:
        self.grid_size = int(grid_size)
        self.space = spaces.Discrete(self.grid_size * self.grid_size)
        self._unit = grid_to_unit(torch.arange(self.grid_size ** 2), self.grid_size).numpy()  # (G², 2)

    def cell_locations(self) -> np.ndarray:
        """(G², 2) float32 location of every cell, in cell order."""
        return self._unit.copy()

    def decode(self, actions, n: int, single: bool = False) -> DecodedActions:
        g = self.grid_size
        a = np.asarray(actions.detach().cpu() if torch.is_tensor(actions) else actions)
        if single:
            a = a.reshape(-1)
        if a.shape == (n, 1):
            a = a[:, 0]
        if a.shape != (n,):
            if single:
                raise ValueError(f"expected one grid cell index, got an array of shape {np.shape(actions)}")
            raise ValueError(f"expected grid actions of shape ({n},) — one cell index per env — got {a.shape}")
        if a.dtype.kind == "f":
            if np.isnan(a).any():
                raise ValueError("NaN in grid actions; expected integer cell indices")
            if not np.all(a == np.round(a)):
                raise ValueError(f"grid actions must be integer cell indices, got {a}")
        elif a.dtype.kind not in "iu":
            raise ValueError(f"grid actions must be integer cell indices, got dtype {a.dtype}")
        a = a.astype(np.int64)
        if a.min() < 0 or a.max() >= g * g:
            raise ValueError(f"grid actions must be in [0, {g * g - 1}] for a {g}×{g} grid, got {a.tolist()}")
        return DecodedActions(self._unit[a], a)


def make_action_decoder(action_mode: str, grid_size: int, action_range: str) -> ContinuousActions | GridActions:
    """The decoder of an action mode (settings are checked by :meth:`EnvSettings.resolved` before)."""
    return GridActions(grid_size) if action_mode == "grid" else ContinuousActions(action_range)
