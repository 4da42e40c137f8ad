"""Stable-Baselines3 features extractors for GFNet observations.

* :class:`FeatureMapExtractor` — ``obs_mode="feature_map"``: the last look's (C, h, w) feature map (for the
  embedded task 128 × 4 × 4, values ≥ 0, about 0.2 on average, up to ~13). A 1×1 conv reduces the channels, a
  3×3 conv mixes neighbours, and a linear layer over the *flattened* map keeps where each activation is (the
  position of the item is what a patch policy needs; global pooling would throw it away).
* :class:`GFNetDictExtractor` — ``obs_mode="dict"``: the feature map through the same conv net, every bounded
  ``Box`` key (``state`` in [−1, 1], ``box`` in pixels [0, image size], ``locations`` in [−1, 1]) rescaled to
  [−1, 1] from its space's bounds, ``Discrete`` keys (``step``) one-hot (SB3's preprocessing does that), all
  concatenated. SB3's own ``CombinedExtractor`` would pass ``box`` unscaled (values up to 112).

Both work with any SB3 policy that takes ``features_extractor_class`` (``MlpPolicy``, ``CnnPolicy``,
``MultiInputPolicy``, sb3-contrib's ``MlpLstmPolicy`` / ``MultiInputLstmPolicy``)::

    from stable_baselines3 import PPO
    from gfnet_env.sb3 import FeatureMapExtractor, make_sb3_vec_env
    env = make_sb3_vec_env("GFNet-ClutteredFashionMNIST-v0", n_envs=16, split="train",
                           obs_mode="feature_map", action_mode="grid")
    PPO("MlpPolicy", env, n_steps=128, batch_size=256,
        policy_kwargs={"features_extractor_class": FeatureMapExtractor}).learn(50_000)
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from feature_nets.extras import reraise_missing

try:
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
except ModuleNotFoundError as e:  # the sb3 extra is not installed: say so
    reraise_missing(e, "sb3", "gfnet_env.sb3_extractors (the SB3 features extractors)")

__all__ = ["FeatureMapExtractor", "GFNetDictExtractor", "feature_map_net"]


def feature_map_net(shape: tuple[int, int, int], channels: int = 64, features_dim: int = 256) -> nn.Module:
    """(B, C, h, w) float → (B, features_dim): 1×1 conv to ``channels``, ReLU, 3×3 conv (same size), ReLU,
    flatten (channels·h·w), linear to ``features_dim``, ReLU."""
    c, h, w = (int(s) for s in shape)
    return nn.Sequential(
        nn.Conv2d(c, channels, kernel_size=1), nn.ReLU(),
        nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(channels * h * w, features_dim), nn.ReLU())


class FeatureMapExtractor(BaseFeaturesExtractor):
    """A small conv net over a ``Box`` of shape (C, h, w) (the ``feature_map`` observation).

    Args:
        observation_space: ``Box`` with a 3-D shape (C, h, w).
        features_dim: output width (default 256).
        channels: conv width (default 64).
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256, channels: int = 64) -> None:
        if len(observation_space.shape) != 3:
            raise ValueError(f"FeatureMapExtractor needs a (C, h, w) observation, got shape "
                             f"{observation_space.shape}; use obs_mode='feature_map'")
        super().__init__(observation_space, features_dim)
        self.net = feature_map_net(observation_space.shape, channels, features_dim)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations.float())


class _Rescale(nn.Module):
    """Flatten (B, ...) → (B, n) and map [low, high] → [−1, 1] per element (bounds from the space)."""

    def __init__(self, space: spaces.Box) -> None:
        super().__init__()
        low = np.broadcast_to(space.low, space.shape).astype(np.float32).reshape(-1)
        high = np.broadcast_to(space.high, space.shape).astype(np.float32).reshape(-1)
        finite = np.isfinite(low) & np.isfinite(high) & (high > low)
        centre = np.where(finite, (low + high) / 2, 0.0).astype(np.float32)
        half = np.where(finite, (high - low) / 2, 1.0).astype(np.float32)
        self.register_buffer("centre", torch.as_tensor(centre))
        self.register_buffer("scale", torch.as_tensor(half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).float() - self.centre) / self.scale


class GFNetDictExtractor(BaseFeaturesExtractor):
    """Combined extractor for ``dict`` observations (see the module docstring).

    Output width: ``map_features_dim`` (if there is a 3-D key) + the flattened size of every other ``Box`` key
    + n for each ``Discrete(n)`` key. For the embedded task: 256 + 256 (state) + 4 (box) + 8 (locations) +
    5 (step) = 529.

    Args:
        observation_space: a ``Dict`` space.
        map_features_dim: width of the feature map's conv net output (default 256).
        channels: conv width (default 64).
    """

    def __init__(self, observation_space: spaces.Dict, map_features_dim: int = 256, channels: int = 64) -> None:
        parts: dict[str, nn.Module] = {}
        total = 0
        for key, space in observation_space.spaces.items():
            if isinstance(space, spaces.Box) and len(space.shape) == 3:
                parts[key] = feature_map_net(space.shape, channels, map_features_dim)
                total += map_features_dim
            elif isinstance(space, spaces.Box):
                parts[key] = _Rescale(space)
                total += int(np.prod(space.shape))
            elif isinstance(space, spaces.Discrete):
                parts[key] = nn.Flatten()  # SB3's preprocess_obs already one-hot encodes it
                total += int(space.n)
            else:
                raise ValueError(f"GFNetDictExtractor: unsupported space {space} under key {key!r}")
        super().__init__(observation_space, total)
        self.parts = nn.ModuleDict(parts)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([net(observations[key].float()) for key, net in self.parts.items()], dim=1)
