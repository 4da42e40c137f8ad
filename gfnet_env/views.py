"""What an agent may know besides its observations: a public view of static facts, and a privileged view.

An agent never receives the env's core. Before an evaluation it is bound to one view:

* :class:`EnvView` — static, read-only facts every agent may use (image and patch size, number of steps,
  action geometry, the env's multiply-adds per step). It holds no per-episode data: no image, no label.
* :class:`PrivilegedView` — for agents that read the label (the greedy oracle). It answers "what would p(true
  class) be after a focus step at each of these locations?" for every episode of the batch. An agent that
  asks for it is an **upper bound**, never a contender, and every result says so (docs/environment.md,
  "What agents see").
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import torch

from feature_nets.crop import crop_corners, crop_patches
from feature_nets.gfnet import StepOutput

__all__ = ["EnvView", "PrivilegedView"]


@dataclass(frozen=True)
class EnvView:
    """Static facts about a batch of GFNet episodes (immutable; no image, label or classifier state).

    Attributes:
        num_envs: N, episodes per batch.
        image_size: S, side of the full-resolution image, pixels.
        patch_size: P, side of a glance/patch, pixels.
        T: looks the networks were trained for (glance + T − 1 focus steps).
        max_steps: focus steps per episode.
        num_classes: classifier outputs.
        feature_map_shape: (C, h, w) of the ``feature_map`` observation.
        obs_mode, action_mode, action_range, grid_size: the env's settings.
        madds_per_step: multiply-adds of step t (0 = the glance), what every agent pays.
        stop_action: whether the action space has the stop action (:mod:`gfnet_env.actions`).
    """

    num_envs: int
    image_size: int
    patch_size: int
    T: int
    max_steps: int
    num_classes: int
    feature_map_shape: tuple[int, int, int]
    obs_mode: str
    action_mode: str
    action_range: str
    grid_size: int
    madds_per_step: tuple[float, ...]
    stop_action: bool = False


class PrivilegedView:
    """Label-reading access to the current batch, for upper-bound agents only (see the module docstring).

    Attributes:
        env: the :class:`EnvView` of the same env.
    """

    #: Most bytes of local-encoder outputs :meth:`lookahead` keeps between calls (the images' candidate crops).
    MAX_CACHE_BYTES = 1 << 30

    def __init__(self, core) -> None:  # a GFNetCore (not imported: core.py imports this module)
        self._core = core
        self.env = core.view()
        self._features: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._features_key: tuple | None = None

    def labels(self) -> np.ndarray:
        """(N,) int64 true classes of the current episodes (a copy)."""
        return self._core._targets_np.copy()

    def true_class_probs(self) -> np.ndarray:
        """(N,) float32 p(true class) of every episode now (after its latest look)."""
        core = self._core
        probs = torch.softmax(core._logits.float(), -1).gather(1, core._targets[:, None])[:, 0]
        return probs.detach().cpu().numpy()

    @torch.inference_mode()
    def lookahead(self, locations: np.ndarray | torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """p_t(true class) after a focus step at each of K locations, for every episode: (N, K) float tensor.

        Nothing in the env changes. Every (episode, location) pair costs one classifier step; its crop goes
        through the local encoder once per set of episodes: the encoder is frozen and the images stay the same
        until the next reset, so its outputs are kept (up to :attr:`MAX_CACHE_BYTES`) and reused at later steps
        — computed in the same chunks as they would be again, so the numbers are the same bit for bit.

        Args:
            locations: (K, 2) locations in [0, 1] (row, col fractions), the same for every episode.
            chunk: crops per forward pass (bounds memory).
        """
        core = self._core
        model, n, dev = core.model, core.num_envs, core.device
        units = torch.as_tensor(np.asarray(locations) if not torch.is_tensor(locations) else locations,
                                device=dev).float()
        k = units.shape[0]
        out = torch.empty(n, k, device=dev)
        per_chunk = max(1, chunk // k)  # episodes per forward pass
        key = (core._resets, units.cpu().numpy().tobytes(), per_chunk)
        if key != self._features_key:  # other episodes or other candidates: forget the kept features
            self._features, self._features_key = {}, key
        for group in core._look_groups():
            for start in range(0, len(group), per_chunk):
                idx = torch.as_tensor(group[start:start + per_chunk], device=dev)
                b = len(idx)
                rep = lambda x: x.repeat_interleave(k, 0)  # noqa: E731  (b, ...) -> (b·K, ...), episode-major
                corners = crop_corners(units, model.image_size, model.patch_size).repeat(b, 1)  # (b·K, 2)
                source = torch.arange(b, device=dev).repeat_interleave(k)
                pooled, fmap = self._encoded(tuple(group[start:start + per_chunk].tolist()), idx, corners, source)
                prev = StepOutput(rep(core._logits[idx]), rep(core._state[idx]), rep(core._fmap[idx]), None,
                                  None, int(core._steps[group[start]]))
                step = model.focus_from_features(pooled, fmap, corners, prev)
                probs = torch.softmax(step.logits.float(), -1)
                y = core._targets[idx].repeat_interleave(k, 0)
                out[idx] = probs.gather(1, y[:, None])[:, 0].view(b, k)
        return out

    def _encoded(self, episodes: tuple, idx: torch.Tensor, corners: torch.Tensor, source: torch.Tensor):
        """Local-encoder outputs of the candidate crops of ``episodes`` (computed once per set of episodes)."""
        if episodes in self._features:
            return self._features[episodes]
        core, model = self._core, self._core.model
        patches = crop_patches(core._images[idx], corners, model.patch_size, source)  # (b·K, 3, P, P)
        pooled, fmap = model.local_encoder(patches)
        kept = sum(p.numel() * p.element_size() + f.numel() * f.element_size() for p, f in self._features.values())
        if kept + pooled.numel() * pooled.element_size() + fmap.numel() * fmap.element_size() <= self.MAX_CACHE_BYTES:
            self._features[episodes] = (pooled, fmap)
        return pooled, fmap
