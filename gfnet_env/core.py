"""The batched core of the GFNet environment: N episodes stepped as one batch on one device.

The single env (:mod:`gfnet_env.env`), the Gymnasium vector env (:mod:`gfnet_env.vector`) and the
Stable-Baselines3 adapter (:mod:`gfnet_env.sb3`) are thin faces over this one class, so there is exactly
one implementation of a step.

Episode = one image. ``reset_slots`` draws images for some slots and runs the glance on them as a batch;
``step`` crops one patch per slot (one batched gather), runs the local encoder and the classifier on the
whole batch, and returns rewards, terminations and infos as numpy arrays. Slots that end an episode are not
reset here; the faces decide when (Gymnasium's same-step autoreset, SB3's auto-reset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch.utils.data import Dataset

from feature_nets.classifiers import CascadeClassifier
from feature_nets.crop import crop_corners
from feature_nets.gfnet import GFNet, StepOutput
from feature_nets.madds import count_madds

from .loading import SlotImageLoader
from .rewards import get_reward

OBS_MODES = ("gru", "feature_map", "dict")
ACTION_MODES = ("continuous", "grid")


@dataclass
class CoreSettings:
    """The env's knobs (see :class:`gfnet_env.env.GFNetEnv` for their meaning)."""

    obs_mode: str = "gru"
    action_mode: str = "continuous"
    grid_size: int = 7
    reward: str = "confidence_gain"
    step_cost: float = 0.0
    max_steps: int | None = None
    early_exit: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    loader_threads: int | None = None
    action_range: str = "unit"

    def validate(self, T: int) -> None:
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {self.obs_mode!r}; choose one of {list(OBS_MODES)}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {self.action_mode!r}; choose one of {list(ACTION_MODES)}")
        get_reward(self.reward)
        if self.action_mode == "grid" and (not isinstance(self.grid_size, (int, np.integer)) or self.grid_size < 1):
            raise ValueError(f"grid_size must be a positive integer, got {self.grid_size!r}")
        if self.max_steps is None:
            self.max_steps = T - 1
        if not 1 <= self.max_steps <= T - 1:
            raise ValueError(
                f"max_steps={self.max_steps} is outside 1..{T - 1}: the checkpoint was trained for T={T} steps "
                f"(a glance and {T - 1} focus steps). Pass max_steps <= {T - 1}, or a checkpoint with a larger T."
            )
        if self.early_exit is not None and not 0.0 < self.early_exit <= 1.0:
            raise ValueError(f"early_exit is a confidence threshold in (0, 1], got {self.early_exit}")
        if self.action_range not in ("unit", "symmetric"):
            raise ValueError(f"unknown action_range {self.action_range!r}; choose 'unit' ([0, 1]) or 'symmetric' ([-1, 1])")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r}; choose 'fp32' or 'bf16'")
        if self.step_cost < 0:
            raise ValueError(f"step_cost must be >= 0 (a cost per multiply-add), got {self.step_cost}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class GFNetCore:
    """N GFNet episodes as one batch.

    Args:
        model: a GFNet (frozen here: eval mode, no gradients).
        dataset: torch ``Dataset`` yielding (3×S×S float tensor, int label).
        num_envs: N, number of episode slots.
        settings: :class:`CoreSettings`.
        device: torch device or ``"auto"``.
        feature_cache: optional :class:`gfnet_env.cache.GridFeatureCache` for grid actions.
    """

    def __init__(
        self,
        model: GFNet,
        dataset: Dataset,
        num_envs: int,
        settings: CoreSettings,
        device: str | torch.device = "auto",
        feature_cache=None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty; point data_root/dataset at a folder with images")
        settings.validate(model.T)
        self.settings = settings
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if settings.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dataset = dataset
        self.num_envs = num_envs
        self.max_steps = int(settings.max_steps)
        self.reward_fn = get_reward(settings.reward)
        self.feature_cache = feature_cache

        madds = count_madds(self.model)
        #: multiply-adds of step t (0 = glance), and cumulative.
        self.madds_per_step = np.asarray(madds["per_step"], dtype=np.float64)
        self.madds_cumulative = np.asarray(madds["cumulative"], dtype=np.float64)

        self._build_spaces()
        n = num_envs
        threads = settings.loader_threads
        if threads is None:  # decoding files pays off in threads; in-memory tensors do not
            from .datasets import ImageFolderDataset

            threads = min(8, os.cpu_count() or 1) if isinstance(dataset, ImageFolderDataset) else 0
        self.loader = SlotImageLoader(dataset, n, threads)
        self.steps = np.zeros(n, dtype=np.int64)          # focus steps taken in the current episode
        self.image_index = np.full(n, -1, dtype=np.int64)
        self.done = np.ones(n, dtype=bool)
        s = model.image_size
        self.images = torch.zeros(n, 3, s, s, device=self.device)
        self.targets = torch.zeros(n, dtype=torch.long, device=self.device)
        self.logits = torch.zeros(n, model.num_classes, device=self.device)
        self.state = torch.zeros(n, model.state_dim, device=self.device)
        self.fmap = torch.zeros(n, *model.feature_map_shape, device=self.device)
        self.targets_np = np.zeros(n, dtype=np.int64)
        self.boxes = np.zeros((n, 4), dtype=np.int64)  # (row, col, h, w) of the last look, host side
        self.locations = np.full((n, self.max_steps, 2), -1.0, dtype=np.float32)

    # --- spaces ------------------------------------------------------------------------------------
    def _build_spaces(self) -> None:
        m, st = self.model, self.settings
        if isinstance(m.classifier, CascadeClassifier):
            state_space = spaces.Box(-np.inf, np.inf, (m.state_dim,), np.float32)
        else:
            state_space = spaces.Box(-1.0, 1.0, (m.state_dim,), np.float32)  # GRU hidden values are in [-1, 1]
        fmap_space = spaces.Box(-np.inf, np.inf, m.feature_map_shape, np.float32)
        if st.obs_mode == "gru":
            self.observation_space = state_space
        elif st.obs_mode == "feature_map":
            self.observation_space = fmap_space
        else:
            self.observation_space = spaces.Dict(
                {
                    "state": state_space,
                    "feature_map": fmap_space,
                    "step": spaces.Discrete(self.max_steps + 1),
                    "locations": spaces.Box(-1.0, 1.0, (self.max_steps, 2), np.float32),
                }
            )
        if st.action_mode == "continuous":
            low = -1.0 if st.action_range == "symmetric" else 0.0
            self.action_space = spaces.Box(low, 1.0, (2,), np.float32)
        else:
            self.action_space = spaces.Discrete(st.grid_size * st.grid_size)

    # --- seeding and images ---------------------------------------------------------------------------
    def seed_slot(self, slot: int, seed: int | None) -> None:
        """Seed the image draws of one slot (env i of a vector env seeded with s gets s + i)."""
        self.loader.set_rng(slot, np.random.default_rng(seed))

    @property
    def skipped_images(self) -> int:
        """Corrupt images skipped so far."""
        return self.loader.skipped_images

    # --- reset ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def reset_slots(self, slots: np.ndarray, indices: list[int | None] | None = None) -> None:
        """Start new episodes in ``slots``: draw (or take) images and run the glance on them as one batch."""
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size == 0:
            return
        loaded = self.loader.load(slots, indices)
        batch = torch.stack([img for img, _, _ in loaded])
        labels = [label for _, label, _ in loaded]
        used = [index for _, _, index in loaded]
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True).float()
        if batch.shape[1:] != self.images.shape[1:]:
            raise ValueError(
                f"dataset images have shape {tuple(batch.shape[1:])}, the model needs {tuple(self.images.shape[1:])}; "
                "transform them to the checkpoint's image_size (datasets.eval_transform does)"
            )
        sl = torch.as_tensor(slots, device=self.device)
        with self._autocast():
            out = self.model.glance(batch)
        self.images[sl] = batch
        self.targets[sl] = torch.as_tensor(labels, device=self.device)
        self.targets_np[slots] = labels
        self.logits, self.state, self.fmap = self.logits.clone(), self.state.clone(), self.fmap.clone()
        self._write(sl, out)
        self.boxes[slots] = (0, 0, self.model.image_size, self.model.image_size)
        self.steps[slots] = 0
        self.done[slots] = False
        self.image_index[slots] = used
        self.locations[slots] = -1.0
        if self.feature_cache is not None:
            self.feature_cache.prepare(self, slots)

    def _write(self, sl: torch.Tensor, out: StepOutput) -> None:
        self.logits[sl] = out.logits.float()
        self.state[sl] = out.state.float()
        self.fmap[sl] = out.feature_map.float()

    def _autocast(self):
        """bf16 autocast when asked for (observations and rewards are still computed in fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16")

    # --- actions -------------------------------------------------------------------------------------
    def actions_to_unit(self, actions) -> np.ndarray:
        """Validate a batch of env actions and turn them into (N, 2) float32 corners in [0, 1] (host side)."""
        n, st = self.num_envs, self.settings
        a = np.asarray(actions.detach().cpu() if torch.is_tensor(actions) else actions)
        if st.action_mode == "continuous":
            if a.shape != (n, 2):
                raise ValueError(
                    f"expected actions of shape ({n}, 2) — a (row, col) fraction in [0, 1] per env — got {a.shape}"
                )
            a = a.astype(np.float32, copy=False)
            if np.isnan(a).any():
                bad = np.flatnonzero(np.isnan(a).any(1)).tolist()
                raise ValueError(f"NaN in actions of envs {bad}; a policy produced NaN (check its inputs/learning rate)")
            if st.action_range == "symmetric":  # [-1, 1] -> [0, 1]: a policy's zero mean is the image centre
                a = (a + 1.0) * 0.5
            return np.clip(a, 0.0, 1.0)
        return grid_to_unit(torch.as_tensor(self.grid_cells(a)), st.grid_size).numpy()

    def grid_cells(self, actions) -> np.ndarray:
        """Validate grid actions: (N,) int64 cell indices in [0, G²)."""
        n, g = self.num_envs, self.settings.grid_size
        a = np.asarray(actions.detach().cpu() if torch.is_tensor(actions) else actions)
        if a.shape == (n, 1):
            a = a[:, 0]
        if a.shape != (n,):
            raise ValueError(f"expected grid actions of shape ({n},) — one cell index per env — got {a.shape}")
        if a.dtype.kind == "f":
            if np.isnan(a).any():
                raise ValueError("NaN in grid actions; expected integer cell indices")
            if not np.all(a == np.round(a)):
                raise ValueError(f"grid actions must be integer cell indices, got {a}")
        a = a.astype(np.int64)
        if a.min() < 0 or a.max() >= g * g:
            raise ValueError(f"grid actions must be in [0, {g * g - 1}] for a {g}×{g} grid, got {a.tolist()}")
        return a

    # --- step ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, actions) -> tuple[np.ndarray, np.ndarray, dict]:
        """One focus step for every slot.

        Args:
            actions: (N, 2) floats in [0, 1] (continuous) or (N,) ints (grid).

        Returns:
            rewards (N,) float32, terminated (N,) bool, info dict of (N,)/(N, 4) numpy arrays
            (``prediction``, ``confidence``, ``target``, ``correct``, ``step``, ``box``, ``madds``, ``image_index``).
        """
        if self.done.any():
            raise RuntimeError(
                f"envs {np.flatnonzero(self.done).tolist()} have finished their episode; reset them before stepping"
            )
        cells = self.grid_cells(actions) if self.feature_cache is not None else None
        unit = self.actions_to_unit(actions)
        # Corners are computed on the host (the boxes in info need them there) and sent to the device once.
        corners = crop_corners(torch.from_numpy(unit), self.model.image_size, self.model.patch_size)
        corners_dev = corners.to(self.device, non_blocking=True)
        prev_logits = self.logits
        # Cascade heads depend on the look index, so slots at different steps (early exit) are grouped.
        groups = [np.arange(self.num_envs)] if not isinstance(self.model.classifier, CascadeClassifier) \
            else [np.flatnonzero(self.steps == s) for s in np.unique(self.steps)]
        with self._autocast():
            for g in groups:
                self._focus_group(g, corners_dev, cells)
        rows = np.arange(self.num_envs)
        self.locations[rows, self.steps] = unit
        self.boxes[:, :2] = corners.numpy()
        self.boxes[:, 2:] = self.model.patch_size
        t = self.steps = self.steps + 1
        reward = self.reward_fn(prev_logits, self.logits, self.targets)
        conf, pred = torch.softmax(self.logits, dim=-1).max(dim=-1)
        packed = torch.stack([reward, conf, pred.float()], 0).cpu().numpy()  # the step's one device->host copy
        reward_np = packed[0].astype(np.float32)
        if self.settings.step_cost:
            reward_np = reward_np - np.float32(self.settings.step_cost) * self.madds_per_step[t].astype(np.float32)
        terminated = t >= self.max_steps
        if self.settings.early_exit is not None:
            terminated |= packed[1] >= self.settings.early_exit
        self.done = terminated.copy()
        return reward_np, terminated, self._info(packed[1], packed[2], t)

    def _focus_group(self, slots: np.ndarray, corners: torch.Tensor, cells) -> None:
        full = slots.size == self.num_envs
        sl = None if full else torch.as_tensor(slots, device=self.device)
        pick = (lambda x: x) if full else (lambda x: x[sl])
        prev = StepOutput(pick(self.logits), pick(self.state), pick(self.fmap), None, None, int(self.steps[slots[0]]))
        if cells is not None:
            pooled, fmap, cell_corners = self.feature_cache.lookup(self, slots, cells[slots])
            out = self.model.focus_from_features(pooled, fmap, cell_corners, prev)
        else:
            out = self.model.focus_at(pick(self.images), pick(corners), prev)
        if full:  # new tensors replace the old (the previous logits stay valid for the reward)
            self.logits, self.state, self.fmap = out.logits.float(), out.state.float(), out.feature_map.float()
        else:
            self.logits, self.state, self.fmap = self.logits.clone(), self.state.clone(), self.fmap.clone()
            self._write(sl, out)

    def _info(self, conf, pred, t) -> dict:
        pred = pred.astype(np.int64)
        return {
            "prediction": pred,
            "confidence": conf.astype(np.float32),
            "target": self.targets_np.copy(),
            "correct": pred == self.targets_np,
            "step": t.copy(),
            "box": self.boxes.copy(),
            "madds": self.madds_cumulative[t],
            "image_index": self.image_index.copy(),
        }

    def reset_info(self, slots: np.ndarray) -> dict:
        """Info of freshly reset slots (after the glance), same keys as a step's."""
        conf, pred = torch.softmax(self.logits, dim=-1).max(dim=-1)
        packed = torch.stack([conf, pred.float()], 0).cpu().numpy()
        info = self._info(packed[0], packed[1], self.steps.copy())
        return {k: v[slots] for k, v in info.items()}

    def autoreset(self, slots: np.ndarray, obs):
        """Start new episodes in ``slots`` and write their first observations into the batch ``obs`` (in place)."""
        self.reset_slots(slots)
        new_obs = self.observe(slots)
        if isinstance(obs, dict):
            for k in obs:
                obs[k][slots] = new_obs[k]
        else:
            obs[slots] = new_obs
        return obs

    # --- observations --------------------------------------------------------------------------------
    def observe(self, slots: np.ndarray | None = None):
        """Observations of ``slots`` (all by default) as numpy, batched along axis 0."""
        mode = self.settings.obs_mode
        sl = slice(None) if slots is None else torch.as_tensor(np.asarray(slots), device=self.device)
        idx = slice(None) if slots is None else np.asarray(slots)
        if mode == "gru":
            return _to_numpy(self.state[sl])
        if mode == "feature_map":
            return _to_numpy(self.fmap[sl])
        return {
            "state": _to_numpy(self.state[sl]),
            "feature_map": _to_numpy(self.fmap[sl]),
            "step": self.steps[idx].copy(),
            "locations": self.locations[idx].copy(),
        }


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy copy (never a view of the core's buffers, which the next step overwrites)."""
    return t.detach().to("cpu", copy=True).numpy()


def grid_to_unit(cells: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Grid cell indices (row-major over a G×G grid of corners) → (N, 2) actions in [0, 1].

    Corner rows/columns are spread evenly over [0, 1], so cell (0, 0) is the top-left patch and
    (G−1, G−1) the bottom-right one; a 1×1 grid is the centre.
    """
    g = grid_size
    rc = torch.stack([cells // g, cells % g], dim=1).float()
    if g == 1:
        return torch.full_like(rc, 0.5)
    return rc / (g - 1)


def slice_obs(obs, i: int):
    """Observation of env ``i`` from a batched observation (array or dict of arrays), as a copy."""
    if isinstance(obs, dict):
        return {k: v[i].copy() for k, v in obs.items()}
    return obs[i].copy()




