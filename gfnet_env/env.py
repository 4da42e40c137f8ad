"""``GFNetEnv``: one image per episode, GFNet's frozen networks as the dynamics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from .checks import check_option_keys
from .core import GFNetCore, slice_obs
from .factory import make_core


class GFNetEnv(gym.Env):
    """GFNet as a reinforcement-learning environment: choose where to look, one patch per step.

    An episode classifies one image. ``reset`` draws an image and runs GFNet's *glance* (the whole image
    downsampled to P×P through the global encoder). Each ``step`` crops the P×P full-resolution patch at the
    chosen location, runs it through the local encoder and updates the classifier's memory. The networks
    are frozen; only the choice of locations is learned.

    | | |
    |---|---|
    | Observation (``obs_mode="gru"``, default) | ``Box(-1, 1, (D,), float32)``: the classifier state — the GRU hidden vector (D = 1024 for released GRU checkpoints), or for cascade classifiers ``Box(-inf, inf, (5·F,))``, the pooled vectors so far, zero-padded |
    | Observation (``"feature_map"``) | ``Box(-inf, inf, (C, h, w), float32)``: the encoder map of the last look, what the paper's policy reads |
    | Observation (``"dict"``) | ``Dict(state, feature_map, step: Discrete(max_steps+1), locations: Box(-1, 1, (max_steps, 2)), box: Box(0, S, (4,)))``; unused locations are −1; ``box`` is the previous look's (row, col, height, width) in pixels (the whole image after the glance) |
    | Action (``action_mode="continuous"``, default) | ``Box(0, 1, (2,), float32)``: the patch's top-left corner as fractions (row, col); corner = floor(a·(S−P)) pixels. Values outside [0, 1] are clipped; NaN or a wrong shape raises ``ValueError`` |
    | Action (``action_range="symmetric"``) | ``Box(-1, 1, (2,), float32)``, mapped to (a + 1) / 2: the same corners, in the symmetric range SB3's Gaussian policies expect (their zero mean is then the image centre) |
    | Action (``"grid"``) | ``Discrete(G·G)``: cell r·G + c of a G×G grid of corners spread evenly over the image |
    | Action (``stop_action=True``) | one more action that ends the episode without a look: grid ``Discrete(G·G + 1)`` (action G·G stops); continuous ``Box(0, 1, (3,))`` / ``Box(-1, 1, (3,))``, stop when the third component is >= 0.5 / >= 0 |
    | Reward (``"confidence_gain"``, default) | p_t(y) − p_{t−1}(y), the gain in softmax probability of the true class (the paper's). Also ``"log_confidence_gain"`` (log p_t(y) − log p_{t−1}(y)) and ``"correct_gain"`` (1[correct now] − 1[correct before]); minus ``step_cost`` × the step's multiply-adds (its look: encoder and classifier) |
    | Start | a random image of the split (``self.np_random``), or ``options={"index": i}``; the glance has been run |
    | Termination | after ``max_steps`` focus steps (default T−1), at a stop action (reward 0, no look, the answer is the current prediction), or as soon as the top-1 confidence reaches ``early_exit`` |
    | Truncation | never (the horizon is part of the task) |
    | Info | ``prediction``, ``confidence``, ``target``, ``correct``, ``step``, ``box`` (row, col, h, w in pixels), ``madds`` (cumulative multiply-adds of the looks: encoders and classifier, not the agent's own decisions), ``image_index``, ``stopped`` (the episode ended by the stop action); ``is_success`` (= correct) on the last step |

    Arguments:

    | argument | default | meaning |
    |---|---|---|
    | ``checkpoint`` | ``$GFNET_CHECKPOINT`` | released ``*.pth.tar`` path, or a GFNet model |
    | ``data_root`` | ``$GFNET_IMAGENET`` | ImageNet root with ``train/`` and ``val/`` in ImageFolder layout |
    | ``dataset`` | None | any torch Dataset of (3×S×S normalised tensor, label), used as is instead of ``data_root`` |
    | ``split`` | ``"val"`` | ``"val"`` (evaluation transform) or ``"train"`` (RandomResizedCrop + flip) |
    | ``obs_mode`` | ``"gru"`` | ``"gru"`` / ``"feature_map"`` / ``"dict"`` |
    | ``action_mode`` | ``"continuous"`` | ``"continuous"`` / ``"grid"`` |
    | ``grid_size`` | 7 | G for grid actions |
    | ``action_range`` | ``"unit"`` | continuous actions in ``"unit"`` [0, 1] (the paper's) or ``"symmetric"`` [-1, 1] |
    | ``reward`` | ``"confidence_gain"`` | see Reward |
    | ``step_cost`` | 0.0 | reward cost per multiply-add of each step |
    | ``max_steps`` | T−1 | focus steps per episode (at most T−1) |
    | ``early_exit`` | None | confidence in (0, 1] that ends the episode early |
    | ``stop_action`` | False | add the stop action (see Action): the agent decides when to answer |
    | ``device`` | ``"auto"`` | torch device (CUDA when available) |
    | ``feature_cache`` | False | grid mode: compute each image's cell features once and reuse them |
    | ``precision`` | ``"fp32"`` | ``"bf16"`` runs the networks under bf16 autocast (GPU; measure per backbone) |
    | ``channels_last`` | False | channels-last memory format for the networks |
    | ``loader_threads`` | auto | threads decoding images; auto (``gfnet_env.data.loading.default_loading``) for image folders: the cores torch's own threads leave when there are any (all but one with the networks on a GPU), else all cores but one; 0 for in-memory datasets |
    | ``prefetch`` | auto | decode each env's next image while the current batch steps (True) or at its reset, threads and caller together (False); auto: on where decoding has cores of its own (GPU, or cores torch leaves free), off where torch's threads fill every core |
    | ``jpeg_decoder`` | ``"pil"`` | ``"pil"``: PIL decodes and resizes in the loader threads; ``"torchvision"``: ``torchvision.io.decode_jpeg`` decodes instead — on a GPU env the threads read the files and each reset's batch is decoded on the GPU, on a CPU env the threads decode each file (evaluation transform only; rejected files fall back to PIL) |
    | ``render_mode`` | None | ``"rgb_array"``: the image with the glance frame and each patch in order |
    | ``trusted_pickle`` | False | allow full unpickling of legacy checkpoints you trust: only the bool True enables it (``"no"`` or 1 raise ``TypeError``) |

    Close the env (``env.close()`` or ``with gym.make(...) as env:``) to stop its image-loading threads.
    Details: docs/environment.md.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, task: str = "imagenet", render_mode: str | None = None, device: str = "auto",
                 core: GFNetCore | None = None, **kwargs) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; choose one of {self.metadata['render_modes']}")
        self.core = core if core is not None else make_core(task, 1, device=device, **kwargs)
        if self.core.num_envs != 1:
            raise ValueError("GFNetEnv runs one episode; use GFNetVectorEnv for a batch")
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.render_mode = render_mode
        self._confidences: list[float] = []

    @property
    def model(self):
        return self.core.model

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_option_keys(options, ("index",))  # {"indx": 3} is an error, not ignored
        super().reset(seed=seed)
        self.core.seed_slot(0, self.np_random)
        index = options.get("index")  # an integer image position (1.7 or "3" raise), or None for a random image
        self.core.reset_slots(np.array([0]), [index])
        info = _first(self.core.reset_info(np.array([0])))
        self._confidences = [float(info["confidence"])]
        return slice_obs(self.core.observe(), 0), info

    def step(self, action):
        batch = action[None] if hasattr(action, "shape") else np.asarray(action)[None]
        rewards, terminated, info = self.core.step(batch, single=True)
        info = _first(info)
        self._confidences.append(float(info["confidence"]))
        if terminated[0]:
            info["is_success"] = bool(info["correct"])
        return slice_obs(self.core.observe(), 0), float(rewards[0]), bool(terminated[0]), False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        from .render import render_slot

        return render_slot(self.core, 0, self._confidences)

    def close(self) -> None:
        """Release the image-loading threads (idempotent)."""
        self.core.close()
        super().close()


def _first(info: dict) -> dict:
    return {k: (v[0].item() if np.ndim(v[0]) == 0 else v[0]) for k, v in info.items()}
