"""The env's settings: every knob of a GFNet env that is not the choice of networks and images.

:class:`EnvSettings` is immutable; :meth:`EnvSettings.resolved` checks it against the model's number of looks T
and returns a copy with the defaults that depend on T filled in (``max_steps = T − 1``). The meaning of each
field is in the argument table of :class:`gfnet_env.env.GFNetEnv` and in docs/environment.md.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .rewards import REWARDS

OBS_MODES = ("gru", "feature_map", "dict")
ACTION_MODES = ("continuous", "grid")
ACTION_RANGES = ("unit", "symmetric")
PRECISIONS = ("fp32", "bf16")
#: G of grid actions (a G×G grid of patch locations) unless an env or an agent says otherwise.
DEFAULT_GRID_SIZE = 7
#: How image folders' JPEGs are decoded (the same tuple as :data:`gfnet_env.data.loading.JPEG_DECODERS`).
JPEG_DECODERS = ("pil", "torchvision")


@dataclass(frozen=True)
class EnvSettings:
    """What the env observes, accepts and rewards, and how it runs (see :class:`gfnet_env.env.GFNetEnv`)."""

    obs_mode: str = "gru"
    action_mode: str = "continuous"
    grid_size: int = DEFAULT_GRID_SIZE
    reward: str = "confidence_gain"
    step_cost: float = 0.0
    max_steps: int | None = None
    early_exit: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    loader_threads: int | None = None
    action_range: str = "unit"
    #: "pil": PIL decodes and resizes in the loader threads; "torchvision": the threads read the files and the
    #: batch is decoded with torchvision.io.decode_jpeg on the env's device (gfnet_env/data/loading.py)
    jpeg_decoder: str = "pil"
    #: None: decide by where the networks run (gfnet_env.data.loading.default_loading); True/False: force
    prefetch: bool | None = None
    #: one more action that ends the episode without a look (gfnet_env/actions.py)
    stop_action: bool = False

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> "EnvSettings":
        return dataclasses.replace(self, **changes)

    def resolved(self, T: int) -> "EnvSettings":
        """Check every field for a model with T looks; return a copy with ``max_steps`` set (default T − 1)."""
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {self.obs_mode!r}; choose one of {list(OBS_MODES)}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {self.action_mode!r}; choose one of {list(ACTION_MODES)}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {sorted(REWARDS)}")
        if isinstance(self.grid_size, bool) or not isinstance(self.grid_size, (int, np.integer)) or self.grid_size < 1:
            raise ValueError(f"grid_size must be a positive integer, got {self.grid_size!r}")
        max_steps = T - 1 if self.max_steps is None else _integer(self.max_steps, "max_steps")
        if not 1 <= max_steps <= T - 1:
            raise ValueError(
                f"max_steps={max_steps} is outside 1..{T - 1}: the checkpoint was trained for T={T} steps "
                f"(a glance and {T - 1} focus steps). Pass max_steps <= {T - 1}, or a checkpoint with a larger T."
            )
        if self.early_exit is not None and not 0.0 < _real(self.early_exit, "early_exit") <= 1.0:  # NaN fails too
            raise ValueError(f"early_exit is a confidence threshold in (0, 1], got {self.early_exit}")
        if self.action_range not in ACTION_RANGES:
            raise ValueError(f"unknown action_range {self.action_range!r}; choose 'unit' ([0, 1]) or 'symmetric' ([-1, 1])")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose 'fp32' or 'bf16'")
        step_cost = _real(self.step_cost, "step_cost")
        if not (math.isfinite(step_cost) and step_cost >= 0):
            raise ValueError(f"step_cost must be a finite number >= 0 (a reward cost per multiply-add), "
                             f"got {self.step_cost}")
        if self.loader_threads is not None and _integer(self.loader_threads, "loader_threads") < 0:
            raise ValueError(f"loader_threads must be >= 0 (0 loads images in the caller), got {self.loader_threads}")
        if self.jpeg_decoder not in JPEG_DECODERS:
            raise ValueError(f"unknown jpeg_decoder {self.jpeg_decoder!r}; choose 'pil' (PIL in the loader threads) "
                             "or 'torchvision' (batched torchvision.io.decode_jpeg on the env's device)")
        if self.prefetch is not None and not isinstance(self.prefetch, (bool, np.bool_)):
            raise TypeError(f"prefetch must be True, False or None (decided by the device), got {self.prefetch!r}")
        if not isinstance(self.stop_action, (bool, np.bool_)):
            raise TypeError(f"stop_action must be True or False, got {self.stop_action!r}")
        if not isinstance(self.channels_last, (bool, np.bool_)):
            raise TypeError(f"channels_last must be True or False, got {self.channels_last!r}")
        return self.replace(max_steps=int(max_steps), grid_size=int(self.grid_size))


def _real(value, name: str) -> float:
    """``value`` as a float if it is a real number (not a bool or a string), else a ``TypeError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _integer(value, name: str) -> int:
    """``value`` as an int if it is an integer (not a bool, a float or a string), else a ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)
