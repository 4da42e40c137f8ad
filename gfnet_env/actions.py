"""Action decoders: one per action mode, each owning its space, its checks and its map to patch locations.

A decoder turns a batch of env actions into (N, 2) locations in [0, 1] (row, column fractions; the patch's
top-left corner is ``floor(a · (S − P))``, docs/gfnet.md "Crop"). Actions are checked once, here; a
single env hands its one action over as a batch of one (``single=True`` phrases errors for it).

* :class:`ContinuousActions` — ``Box(0, 1, (2,))`` (``action_range="unit"``, the paper's) or ``Box(-1, 1, (2,))``
  (``"symmetric"``, mapped by (a + 1) / 2 so that a Gaussian policy's zero mean is the image centre).
  Values outside the box are clipped; NaN raises. A torch tensor stays on its device (no host round trip).
* :class:`GridActions` — ``Discrete(G²)``: cell r·G + c of a G×G grid of corners spread evenly over [0, 1]².

With ``stop_action=True`` each space has one more action that ends the episode without a look (the answer is
the classifier's current prediction): grid ``Discrete(G² + 1)``, action G² = stop; continuous ``Box(0, 1, (3,))``
(``Box(-1, 1, (3,))`` symmetric), stop when the third component is >= 0.5 (>= 0 symmetric: the middle of its
range), the first two are the location as without it. A stopping env's location is never looked at.
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
        cells: (N,) int64 grid cells (grid mode), else None (a stopping env's cell is 0, never looked up).
        stop: (N,) bool, True where the env stops (always a numpy array; all False without the stop action).
    """

    unit: np.ndarray | torch.Tensor
    cells: np.ndarray | None = None
    stop: np.ndarray | None = None


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

    def __init__(self, action_range: str = "unit", stop_action: bool = False) -> None:
        self.action_range = action_range
        self.stop_action = bool(stop_action)
        low = -1.0 if action_range == "symmetric" else 0.0
        self.dim = 3 if self.stop_action else 2
        #: the third component at or above which an env stops: the middle of its range
        self.stop_threshold = 0.0 if action_range == "symmetric" else 0.5
        self.space = spaces.Box(low, 1.0, (self.dim,), np.float32)

    def _what(self) -> str:
        pair = "a (row, col) fraction in [0, 1]" if self.action_range == "unit" else "a (row, col) pair in [-1, 1]"
        if self.stop_action:
            return f"{pair} and a stop component (stop at >= {self.stop_threshold:g}) per env"
        return f"{pair} per env"

    def decode(self, actions, n: int, single: bool = False) -> DecodedActions:
        d = self.dim
        if torch.is_tensor(actions):
            if actions.dtype == torch.bool or actions.is_complex():
                raise ValueError(f"continuous actions must be real numbers, got a tensor of dtype {actions.dtype}")
            a = actions.detach().float()
            if tuple(a.shape) != (n, d):
                raise _shape_error(tuple(a.shape[1:] if single else a.shape), n, single, (n, d), (d,), self._what())
            bad = torch.isnan(a).any(1)
            if bool(bad.any()):
                raise ValueError(f"NaN in actions of envs {torch.nonzero(bad).flatten().tolist()}; a policy produced NaN "
                                 "(check its inputs/learning rate)")
            stop = (a[:, 2] >= self.stop_threshold).cpu().numpy() if self.stop_action else np.zeros(n, dtype=bool)
            a = a[:, :2]
            if self.action_range == "symmetric":
                a = (a + 1.0) * 0.5
            return DecodedActions(a.clamp(0.0, 1.0), stop=stop)
        a = np.asarray(actions)
        if a.dtype.kind not in "fiu":  # strings ("0.5" would be parsed), bools, objects, complex numbers
            raise ValueError(f"continuous actions must be real numbers ({self._what()}), got dtype {a.dtype}")
        if a.shape != (n, d):
            raise _shape_error(a.shape[1:] if single else a.shape, n, single, (n, d), (d,), self._what())
        a = a.astype(np.float32, copy=False)
        if np.isnan(a).any():
            bad = np.flatnonzero(np.isnan(a).any(1)).tolist()
            raise ValueError(f"NaN in actions of envs {bad}; a policy produced NaN (check its inputs/learning rate)")
        stop = a[:, 2] >= self.stop_threshold if self.stop_action else np.zeros(n, dtype=bool)
        a = a[:, :2]
        if self.action_range == "symmetric":
            a = (a + 1.0) * 0.5
        return DecodedActions(np.clip(a, 0.0, 1.0), stop=stop)


class GridActions:
    """Cell indices of a G×G grid of corners; see the module docstring."""

    mode = "grid"

    def __init__(self, grid_size: int, stop_action: bool = False) -> None:
        self.grid_size = int(grid_size)
        self.stop_action = bool(stop_action)
        #: the stop action's index (G²) when there is one, else None
        self.stop = self.grid_size ** 2 if self.stop_action else None
        self.space = spaces.Discrete(self.grid_size ** 2 + int(self.stop_action))
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
        n_actions = g * g + int(self.stop_action)
        if a.min() < 0 or a.max() >= n_actions:
            stop = f" plus the stop action {g * g}" if self.stop_action else ""
            raise ValueError(f"grid actions must be in [0, {n_actions - 1}] for a {g}×{g} grid{stop}, got {a.tolist()}")
        stop = a == g * g if self.stop_action else np.zeros(n, dtype=bool)
        cells = np.where(stop, 0, a)
        return DecodedActions(self._unit[cells], cells, stop)


def make_action_decoder(action_mode: str, grid_size: int, action_range: str,
                        stop_action: bool = False) -> ContinuousActions | GridActions:
    """The decoder of an action mode (settings are checked by :meth:`EnvSettings.resolved` before)."""
    if action_mode == "grid":
        return GridActions(grid_size, stop_action)
    return ContinuousActions(action_range, stop_action)
