"""The batched core of the GFNet environment: N episodes stepped as one batch on one device.

The single env (:mod:`gfnet_env.env`), the Gymnasium vector env (:mod:`gfnet_env.vector`), the
Stable-Baselines3 adapter (:mod:`gfnet_env.sb3`) and :func:`gfnet_env.rollout.rollout` are thin faces over
this one class, so there is exactly one implementation of a step.

Episode = one image. ``reset_slots`` draws images for some slots and runs the glance on them as a batch;
``step`` crops one patch per slot (one batched gather), runs the local encoder and the classifier on the
whole batch, and returns rewards, terminations and infos as numpy arrays. Slots that end an episode are not
reset here; the faces decide when (Gymnasium's same-step autoreset, SB3's auto-reset).

The per-episode buffers (images, labels, logits, classifier state, feature maps) are private: code outside
``gfnet_env`` sees observations, infos, and the views of :mod:`gfnet_env.views`.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch.utils.data import Dataset

from feature_nets.crop import crop_corners
from feature_nets.devices import resolve_device
from feature_nets.gfnet import GFNet, StepOutput
from feature_nets.madds import count_madds

from .actions import make_action_decoder
from .checks import check_buffer_memory, check_int, check_slots
from .data.loading import SlotImageLoader, default_loading
from .rewards import StepReward
from .settings import EnvSettings
from .views import EnvView, PrivilegedView

__all__ = ["GFNetCore", "slice_obs"]


class GFNetCore:
    """N GFNet episodes as one batch.

    Args:
        model: a GFNet (frozen here: eval mode, no gradients).
        dataset: torch ``Dataset`` yielding (3×S×S float tensor, int label); datasets with the raw item protocol
            of :mod:`gfnet_env.data.loading` (uint8 pixels or JPEG bytes) are normalised in batches on ``device``.
        num_envs: N, number of episode slots.
        settings: :class:`~gfnet_env.settings.EnvSettings` (checked against the model's T here).
        device: torch device or ``"auto"``.
        feature_cache: optional :class:`gfnet_env.cache.GridFeatureCache` for grid actions.

    Use as a context manager, or call :meth:`close`, to stop the image-loading threads.
    """

    def __init__(
        self,
        model: GFNet,
        dataset: Dataset,
        num_envs: int,
        settings: EnvSettings,
        device: str | torch.device = "auto",
        feature_cache=None,
    ) -> None:
        num_envs = check_int(num_envs, "num_envs", minimum=1, hint=" (the number of episodes stepped as one batch)")
        if len(dataset) == 0:
            raise ValueError("the dataset is empty; point data_root/dataset at a folder with images")
        settings = settings.resolved(model.T)
        if feature_cache is not None and settings.action_mode != "grid":
            raise ValueError("feature_cache needs action_mode='grid' (features are cached per grid cell)")
        self.settings = settings
        self.device = resolve_device(device)
        s, fmap = model.image_size, int(np.prod(model.feature_map_shape))
        check_buffer_memory(  # before anything is allocated: 10**7 envs fail here, with the estimate
            num_envs, 4 * 2 * (3 * s * s + fmap + model.num_classes + model.state_dim) + 4096, self.device,
            f"the image 3×{s}×{s} and feature map {fmap} floats, each held twice during a reset, plus ~4 kB")
        self._model = model.to(self.device).eval()
        if settings.channels_last:
            self._model = self._model.to(memory_format=torch.channels_last)
        for p in self._model.parameters():
            p.requires_grad_(False)
        self._dataset = dataset
        self.num_envs = num_envs
        self.max_steps = int(settings.max_steps)
        self._actions = make_action_decoder(settings.action_mode, settings.grid_size, settings.action_range,
                                            settings.stop_action)
        self._feature_cache = feature_cache

        madds = count_madds(self._model)
        #: multiply-adds of step t (0 = glance), and cumulative: what every agent pays for its looks (encoders
        #: and classifier; an agent's own decisions, e.g. the paper's policy network, are not the env's cost).
        self.madds_per_step = np.asarray(madds["env_per_step"], dtype=np.float64)
        self.madds_cumulative = np.asarray(madds["env_cumulative"], dtype=np.float64)
        self._reward = StepReward(settings.reward, settings.step_cost, self.madds_per_step, self.device)

        self._build_spaces()
        n = num_envs
        # decoding files pays off in threads, prefetched where decoding has cores of its own; in-memory tensors load
        # in the caller (gfnet_env/data/loading.py: default_loading)
        decodes_files = getattr(dataset, "decodes_files", False)
        threads, prefetch = default_loading(self.device.type) if decodes_files else (0, True)
        if settings.loader_threads is not None:
            threads = int(settings.loader_threads)
        if settings.prefetch is not None:
            prefetch = bool(settings.prefetch)
        self._loader = SlotImageLoader(dataset, n, threads, image_size=model.image_size,
                                       jpeg_decoder=settings.jpeg_decoder, device=self.device, prefetch=prefetch)
        self._closed = False
        self._resets = 0
        self._steps = np.zeros(n, dtype=np.int64)          # focus steps taken in the current episode
        self._image_index = np.full(n, -1, dtype=np.int64)
        self._done = np.ones(n, dtype=bool)
        s = model.image_size
        self._images = torch.zeros(n, 3, s, s, device=self.device)
        self._targets = torch.zeros(n, dtype=torch.long, device=self.device)
        self._logits = torch.zeros(n, model.num_classes, device=self.device)
        self._state = torch.zeros(n, model.state_dim, device=self.device)
        self._fmap = torch.zeros(n, *model.feature_map_shape, device=self.device)
        self._targets_np = np.zeros(n, dtype=np.int64)
        self._boxes = np.zeros((n, 4), dtype=np.int64)  # (row, col, h, w) of the last look, host side
        self._locations = np.full((n, self.max_steps, 2), -1.0, dtype=np.float32)

    # --- public read-only facts ----------------------------------------------------------------------
    @property
    def model(self) -> GFNet:
        """The frozen networks."""
        return self._model

    @property
    def dataset(self) -> Dataset:
        """The images episodes are drawn from."""
        return self._dataset

    @property
    def feature_cache(self):
        """The grid feature cache in use (None without one)."""
        return self._feature_cache

    def view(self) -> EnvView:
        """The static facts an agent may know (:class:`~gfnet_env.views.EnvView`)."""
        m, st = self._model, self.settings
        return EnvView(num_envs=self.num_envs, image_size=m.image_size, patch_size=m.patch_size, T=m.T,
                       max_steps=self.max_steps, num_classes=m.num_classes,
                       feature_map_shape=tuple(m.feature_map_shape), obs_mode=st.obs_mode,
                       action_mode=st.action_mode, action_range=st.action_range, grid_size=st.grid_size,
                       madds_per_step=tuple(float(x) for x in self.madds_per_step), stop_action=st.stop_action)

    def privileged_view(self) -> PrivilegedView:
        """Label-reading access for upper-bound agents (:class:`~gfnet_env.views.PrivilegedView`)."""
        return PrivilegedView(self)

    # --- spaces ------------------------------------------------------------------------------------
    def _build_spaces(self) -> None:
        m, st = self._model, self.settings
        low, high = m.classifier.state_bounds
        state_space = spaces.Box(low, high, (m.state_dim,), np.float32)
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
                    "box": spaces.Box(0.0, float(m.image_size), (4,), np.float32),
                }
            )
        self.action_space = self._actions.space

    # --- seeding and images ---------------------------------------------------------------------------
    def seed_slot(self, slot: int, seed: int | np.random.Generator | None) -> None:
        """Seed the image draws of one slot (env i of a vector env seeded with s gets s + i).

        A ``Generator`` is used as is (the single env passes its ``np_random``); otherwise an integer >= 0 or None.
        """
        if not isinstance(seed, np.random.Generator) and seed is not None:
            seed = check_int(seed, f"seed of env {slot}", minimum=0)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._loader.set_rng(slot, rng)

    @property
    def skipped_images(self) -> int:
        """Corrupt images skipped so far."""
        return self._loader.skipped_images

    @property
    def loader_threads(self) -> int:
        """Image-loading threads in use (0: images load in the caller)."""
        return self._loader.threads

    @property
    def loader_prefetch(self) -> bool:
        """Whether loader threads decode each env's next image ahead of its reset (never without threads)."""
        return self._loader.prefetch and self._loader.threads > 0

    @property
    def decoder_fallbacks(self) -> int:
        """Files ``jpeg_decoder="torchvision"`` rejected and PIL decoded instead, so far."""
        return self._loader.fallbacks

    # --- reset ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def reset_slots(self, slots: np.ndarray, indices: list[int | None] | None = None) -> None:
        """Start new episodes in ``slots``: draw (or take) images and run the glance on them as one batch."""
        self._check_open()
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size == 0:
            return
        # float32 (B, 3, S, S) on the device; raw uint8 items are normalised there (gfnet_env/data/loading.py)
        batch, labels, used = self._loader.load_batch(slots, indices, self.device)
        if batch.shape[1:] != self._images.shape[1:]:
            raise ValueError(
                f"dataset images have shape {tuple(batch.shape[1:])}, the model needs {tuple(self._images.shape[1:])}; "
                "transform them to the checkpoint's image_size (datasets.eval_transform does)"
            )
        self._check_batch(batch, labels, used)
        sl = torch.as_tensor(slots, device=self.device)
        with self._autocast():
            out = self._model.glance(batch)
        self._images[sl] = batch
        self._targets[sl] = torch.as_tensor(labels, device=self.device)
        self._targets_np[slots] = labels
        self._logits, self._state, self._fmap = self._logits.clone(), self._state.clone(), self._fmap.clone()
        self._write(sl, out)
        self._boxes[slots] = (0, 0, self._model.image_size, self._model.image_size)
        self._steps[slots] = 0
        self._done[slots] = False
        self._image_index[slots] = used
        self._resets += 1  # lets views tell a new set of episodes from the old one
        self._locations[slots] = -1.0
        if self._feature_cache is not None:
            self._feature_cache.prepare(self, slots)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this env is closed; make a new one")

    def _check_batch(self, batch: torch.Tensor, labels: list[int], used: list[int]) -> None:
        """Cheap checks of a loaded batch (B, 3, S, S): finite pixels (one reduction) and labels in range."""
        finite = torch.isfinite(batch).flatten(1).all(1)
        if not bool(finite.all()):
            bad = [used[i] for i in torch.nonzero(~finite).flatten().tolist()]
            raise ValueError(f"dataset images {bad[:10]} contain NaN or infinite values; they would give NaN "
                             "observations and rewards. Fix the data or the transform that produced them.")
        c = self._model.num_classes
        wrong = [(used[i], y) for i, y in enumerate(labels) if not 0 <= y < c]
        if wrong:
            raise ValueError(f"dataset labels {wrong[:10]} (index, label) are outside the checkpoint's classes "
                             f"0..{c - 1}; the dataset does not match the checkpoint")

    def _write(self, sl: torch.Tensor, out: StepOutput) -> None:
        self._logits[sl] = out.logits.float()
        self._state[sl] = out.state.float()
        self._fmap[sl] = out.feature_map.float()

    def _autocast(self):
        """bf16 autocast when asked for (observations and rewards are still computed in fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16")

    def _look_groups(self, slots: np.ndarray | None = None) -> list[np.ndarray]:
        """``slots`` (default all) split into groups that can share one classifier call: one group, unless the head
        depends on the look index (the cascade), where slots at different steps (early exit, stops) are grouped
        by step."""
        if slots is None:
            slots = np.arange(self.num_envs)
        if slots.size == 0:
            return []
        if not self._model.classifier.look_dependent:
            return [slots]
        steps = self._steps[slots]
        return [slots[steps == s] for s in np.unique(steps)]

    # --- step ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, actions, single: bool = False, slots: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
        """One focus step for every slot, or for ``slots`` only.

        Args:
            actions: one action per stepped slot: (M, 2) floats (continuous; numpy, or a torch tensor, which stays
                on its device; (M, 3) with the stop action) or (M,) ints (grid).
            single: phrase action errors for a single env's one action.
            slots: (M,) distinct slot indices to step (default: all N). The others are left as they are — a
                rollout steps the episodes that have not ended yet.

        A slot whose action is the stop action (``stop_action=True``) makes no look: its episode terminates with
        reward 0, its classifier state, prediction and ``madds`` unchanged, and ``info["stopped"]`` True.

        Returns:
            rewards (M,) float32, terminated (M,) bool, info dict of (M,)/(M, 4) numpy arrays (``prediction``,
            ``confidence``, ``target``, ``correct``, ``step``, ``box``, ``madds``, ``image_index``, ``stopped``),
            in the order of ``slots``.
        """
        self._check_open()
        model, n = self._model, self.num_envs
        full = slots is None
        idx = np.arange(n) if full else check_slots(slots, n)
        if self._done[idx].any():
            raise RuntimeError(
                f"envs {idx[self._done[idx]].tolist()} have finished their episode; reset them before stepping"
            )
        decoded = self._actions.decode(actions, idx.size, single=single)
        stop = decoded.stop if decoded.stop is not None else np.zeros(idx.size, dtype=bool)
        looks = idx[~stop]
        on_device = torch.is_tensor(decoded.unit)
        if on_device:  # corners computed where the actions are; they come back with the step's one copy
            unit_dev = decoded.unit.to(self.device)
            corners_dev = crop_corners(unit_dev, model.image_size, model.patch_size)
        else:  # corners computed on the host (the boxes in info need them there) and sent to the device once
            corners = crop_corners(torch.from_numpy(decoded.unit), model.image_size, model.patch_size)
            corners_dev = corners.to(self.device, non_blocking=True)
        # per slot of the whole batch, so that a group picks its own rows
        corners_all = corners_dev if full else torch.zeros(n, 2, dtype=corners_dev.dtype, device=self.device)
        cells_all = decoded.cells if (full or decoded.cells is None) else np.zeros(n, dtype=np.int64)
        if not full:
            corners_all[torch.as_tensor(idx, device=self.device)] = corners_dev
            if decoded.cells is not None:
                cells_all[idx] = decoded.cells
        prev_logits = self._logits
        with self._autocast():
            for group in self._look_groups(looks):
                self._focus_group(group, corners_all, cells_all)
        t = self._steps.copy()
        t[looks] += 1
        reward = self._reward(prev_logits, self._logits, self._targets, np.maximum(t, 1))
        conf, pred = torch.softmax(self._logits, dim=-1).max(dim=-1)
        rows = torch.stack([reward, conf, pred.float()], 0)  # (3, N)
        if not full:
            rows = rows[:, torch.as_tensor(idx, device=self.device)]  # (3, M)
        if on_device:
            rows = torch.cat([rows, torch.stack([corners_dev[:, 0].float(), corners_dev[:, 1].float(),
                                                 unit_dev[:, 0], unit_dev[:, 1]], 0)], 0)
        packed = rows.cpu().numpy()  # the step's one device->host copy
        if on_device:
            corners_np, unit_np = packed[3:5].T.astype(np.int64), packed[5:7].T.copy()
        else:
            corners_np, unit_np = corners.numpy(), decoded.unit
        went = ~stop
        self._locations[idx[went], self._steps[idx[went]]] = unit_np[went]
        self._boxes[idx[went], :2] = corners_np[went]
        self._boxes[idx[went], 2:] = model.patch_size
        self._steps = t
        terminated = stop | (t[idx] >= self.max_steps)
        if self.settings.early_exit is not None:
            terminated |= packed[1] >= self.settings.early_exit
        self._done[idx] = terminated
        rewards = np.where(stop, np.float32(0.0), packed[0]).astype(np.float32)
        info = self._info(packed[1], packed[2], t[idx], idx)
        info["stopped"] = stop.copy()
        return rewards, terminated, info

    def _focus_group(self, slots: np.ndarray, corners: torch.Tensor, cells: np.ndarray | None) -> None:
        full = slots.size == self.num_envs
        sl = None if full else torch.as_tensor(slots, device=self.device)
        pick = (lambda x: x) if full else (lambda x: x[sl])
        prev = StepOutput(pick(self._logits), pick(self._state), pick(self._fmap), None, None,
                          int(self._steps[slots[0]]))
        if cells is not None and self._feature_cache is not None:
            pooled, fmap, cell_corners = self._feature_cache.lookup(self, slots, cells[slots])
            out = self._model.focus_from_features(pooled, fmap, cell_corners, prev)
        else:
            out = self._model.focus_at(pick(self._images), pick(corners), prev)
        if full:  # new tensors replace the old (the previous logits stay valid for the reward)
            self._logits, self._state, self._fmap = out.logits.float(), out.state.float(), out.feature_map.float()
        else:
            self._logits, self._state, self._fmap = self._logits.clone(), self._state.clone(), self._fmap.clone()
            self._write(sl, out)

    def _info(self, conf, pred, t, idx: np.ndarray) -> dict:
        """Info of slots ``idx`` from their (M,) confidences, predictions and looks taken ``t``."""
        pred = pred.astype(np.int64)
        targets = self._targets_np[idx]
        return {
            "prediction": pred,
            "confidence": conf.astype(np.float32),
            "target": targets,
            "correct": pred == targets,
            "step": t.copy(),
            "box": self._boxes[idx],
            "madds": self.madds_cumulative[t],
            "image_index": self._image_index[idx],
        }

    def reset_info(self, slots: np.ndarray) -> dict:
        """Info of freshly reset slots (after the glance), same keys as a step's (``stopped`` False)."""
        slots = np.asarray(slots, dtype=np.int64)
        conf, pred = torch.softmax(self._logits, dim=-1).max(dim=-1)
        packed = torch.stack([conf, pred.float()], 0).cpu().numpy()
        info = self._info(packed[0][slots], packed[1][slots], self._steps[slots], slots)
        info["stopped"] = np.zeros(slots.size, dtype=bool)
        return info

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
    def observe(self, slots: np.ndarray | None = None, as_tensor: bool = False):
        """Observations of ``slots`` (all by default), batched along axis 0.

        Args:
            slots: which episodes (default all).
            as_tensor: torch tensors on the core's device instead of numpy arrays (no host copy; for
                policies that run on the same device). Always copies, never views of the buffers.
        """
        mode = self.settings.obs_mode
        sl = slice(None) if slots is None else torch.as_tensor(np.asarray(slots), device=self.device)
        idx = slice(None) if slots is None else np.asarray(slots)
        out = (lambda t: t.detach().clone()) if as_tensor else _to_numpy
        host = (lambda a: torch.as_tensor(a, device=self.device)) if as_tensor else (lambda a: a)
        if mode == "gru":
            return out(self._state[sl])
        if mode == "feature_map":
            return out(self._fmap[sl])
        return {
            "state": out(self._state[sl]),
            "feature_map": out(self._fmap[sl]),
            "step": host(self._steps[idx].copy()),
            "locations": host(self._locations[idx].copy()),
            "box": host(self._boxes[idx].astype(np.float32)),
        }

    # --- resources -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the image-loading threads (idempotent). The core cannot be reset afterwards."""
        if not self._closed:
            self._closed = True
            self._loader.close()

    def __enter__(self) -> "GFNetCore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy copy (never a view of the core's buffers, which the next step overwrites)."""
    return t.detach().to("cpu", copy=True).numpy()


def slice_obs(obs, i: int):
    """Observation of env ``i`` from a batched observation (array or dict of arrays), as a copy."""
    if isinstance(obs, dict):
        return {k: v[i].copy() for k, v in obs.items()}
    return obs[i].copy()
