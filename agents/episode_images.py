"""Episode images for TensorBoard: where a policy looks on a few fixed images, drawn during training.

One picture (tag :data:`TAG`) shows deterministic episodes on the first ``n_images`` images of the
evaluation split (``val``), the same images every time so pictures from different training steps compare:
one row per image — the glance frame, then one patch more per frame, each look coloured by p(true class)
after it and each frame captioned with it, as ``gfnet show`` draws them (:func:`agents.show.rollout_frames`).

* :func:`episode_image`: the picture of a policy on a core, as (H, W, 3) uint8 (``dataformats="HWC"``);
* :func:`evaluation_core`: a small core on the evaluation split for it (its networks may be the training's own);
* :func:`episode_image_callback`: an SB3 callback that logs the picture every ``every_steps`` env steps;
* the paper's PPO logs it itself (:func:`agents.paper_ppo.train.train_policy`, ``episode_images=``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gfnet_env.core import GFNetCore

__all__ = ["DEFAULT_IMAGES", "EVAL_SPLIT", "TAG", "episode_image", "episode_image_callback", "evaluation_core"]

#: TensorBoard tag of the picture (both training paths).
TAG = "episodes/looks"
#: Images per picture: enough to see a policy's habits, few enough to stay cheap (well under a second on CPU
#: for the embedded task) and legible.
DEFAULT_IMAGES = 4
#: Split the pictures are drawn on (the one ``train_sb3``'s EvalCallback uses); a user ``dataset=`` has no
#: splits, and then its own first images are drawn.
EVAL_SPLIT = "val"
#: SB3 logger outputs that cannot show an image (TensorBoard is the one that can).
_EXCLUDE = ("stdout", "log", "json", "csv")


def episode_image(core: GFNetCore, policy: Any, indices: Sequence[int] | None = None,
                  deterministic: bool = True) -> np.ndarray:
    """Run ``policy`` on dataset ``indices`` of ``core`` and draw every episode, one row per image.

    Args:
        core: a core on the images (``early_exit`` unset, settings matching the policy's obs/action modes);
            ``core.num_envs == len(indices)`` runs them as one batch.
        policy: an agent (``reset`` / ``act``, e.g. :class:`agents.sb3_agents.SB3Agent`) or a function
            ``obs -> actions`` (see :func:`gfnet_env.rollout.rollout`).
        indices: dataset indices (default: the first :data:`DEFAULT_IMAGES` of ``core.dataset``).
        deterministic: passed to the agent's ``act``; deterministic episodes show what the policy has learnt,
            not its exploration noise.

    Returns:
        (H, W, 3) uint8 RGB: per image a text band (index, true class, final prediction) above its
        ``max_steps + 1`` frames (each (S', S' + 14, 3), S' = the image upscaled to at least 128 pixels), for
        ``SummaryWriter.add_image(TAG, image, step, dataformats="HWC")``.
    """
    from gfnet_env.datasets import denormalizer_for
    from gfnet_env.rollout import rollout

    from .show import labelled_rows, rollout_frames

    dataset = core.dataset
    if indices is None:
        indices = range(min(DEFAULT_IMAGES, len(dataset)))
    indices = [int(i) for i in indices]
    result = rollout(core, policy, indices, deterministic=deterministic)
    denorm = denormalizer_for(dataset)
    images = [denorm(dataset[i][0]) for i in indices]
    rows = rollout_frames(result, images)
    final = result.probs[-1]  # (E, K) after the last step
    names = [f"image {i}: true class {int(y)}, predicted {int(p.argmax())} (p(y)={float(p[y]):.2f})"
             for i, y, p in zip(indices, result.targets.tolist(), final)]
    return labelled_rows(rows, names)


def evaluation_core(env_id: str, env_kwargs: dict[str, Any], n_images: int = DEFAULT_IMAGES,
                    settings: dict[str, Any] | None = None, model=None, device: str | Any = "auto",
                    split: str | None = EVAL_SPLIT) -> GFNetCore:
    """A core of ``n_images`` slots on the evaluation split, for :func:`episode_image`.

    Args:
        env_id: the GFNet env id trained on.
        env_kwargs: the training env's kwargs (``checkpoint``, ``data_root``, ``dataset``, ``reward``, …).
        n_images: slots (one batch of episodes).
        settings: env settings that override ``env_kwargs`` (the agent's ``obs_mode`` / ``action_mode`` / …).
        model: the GFNet to use instead of loading ``checkpoint`` again (the training core's own: no second copy
            in memory; it is frozen, so sharing it changes nothing).
        device: torch device (a ``device`` in ``env_kwargs`` wins when this is ``"auto"``).
        split: the split drawn (None: ``env_kwargs``' own). When it cannot be read (an ImageNet folder without
            ``val/``), the training split's first images are drawn instead, with a warning.

    The core runs every episode to its end (``early_exit`` dropped) and decodes its few images in the caller
    (``loader_threads=0``: no thread to leak, milliseconds for 4 images). Close it when done.
    """
    from gfnet_env.factory import make_core, task_of

    kwargs = dict(env_kwargs)
    kwargs.pop("feature_cache", None)  # speeds up many grid episodes, not four
    kwargs.pop("early_exit", None)  # every episode runs to its end (what rollout() requires)
    env_device = kwargs.pop("device", "auto")
    device = env_device if isinstance(device, str) and device == "auto" else device
    kwargs.update(settings or {})
    kwargs["loader_threads"] = 0
    if model is not None:
        kwargs["checkpoint"] = model
    if split is not None and kwargs.get("split") != split:
        try:
            return make_core(task_of(env_id), n_images, device=device, **{**kwargs, "split": split})
        except OSError as e:  # a missing folder of the evaluation split: draw the training images instead
            warnings.warn(f"episode images: the {split!r} split cannot be read ({e}); drawing the first images "
                          f"of the {kwargs.get('split', 'default')!r} split instead", stacklevel=2)
    return make_core(task_of(env_id), n_images, device=device, **kwargs)


def episode_image_callback(env_id: str, env_kwargs: dict[str, Any], every_steps: int, wrap: Callable[[Any], Any],
                           n_images: int = DEFAULT_IMAGES, split: str | None = EVAL_SPLIT,
                           device: str = "auto", deterministic: bool = True):
    """An SB3 callback logging :func:`episode_image` of the model being trained, tag :data:`TAG`.

    The picture is written at the start of training, every ``every_steps`` env steps (at the first
    step at or after each multiple) and at the end, to the model's logger's TensorBoard output
    (``out_dir/tensorboard`` in :func:`agents.sb3_agents.train_sb3`) at the step it was drawn.

    Args:
        env_id: the GFNet env id trained on.
        env_kwargs: env kwargs of the training env (or of its evaluation env: then pass ``split=None``).
            ``obs_mode`` / ``action_mode`` / ``grid_size`` / ``action_range`` are taken from the model's spaces.
        every_steps: env steps (``model.num_timesteps``) between pictures.
        wrap: the project agent class of the algorithm (e.g. :class:`agents.sb3_agents.SB3PPOAgent`), called on
            the live SB3 model (no copy) to act in the pictures' episodes. Passed in, not looked up here, so that
            this module does not import :mod:`agents.sb3_agents`, which imports it.
        n_images: images (rows) per picture: the first ``n_images`` of the split.
        split: as in :func:`evaluation_core` (default ``val``; None keeps ``env_kwargs``' split).
        device: torch device of the core when the training env has none to share.
        deterministic: deterministic actions (the policy's mode), as the evaluation uses.

    The networks are the training env's own when it exposes its core (:func:`gfnet_env.make_sb3_vec_env`
    does), so no second copy is loaded. The small core the callback builds starts no threads and is closed at
    the end of training; SB3 skips that hook when ``learn`` raises, so call the callback's ``close()`` then
    to free it at once (otherwise garbage collection does).
    """
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Image, TensorBoardOutputFormat

    if int(every_steps) < 1:
        raise ValueError(f"every_steps must be >= 1, got {every_steps}")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")

    class EpisodeImageCallback(BaseCallback):
        """Logs ``episodes/looks`` pictures of the model being trained (:func:`episode_image_callback`)."""

        def __init__(self) -> None:
            super().__init__(verbose=0)
            self.core: GFNetCore | None = None
            self.agent = None
            self.indices: list[int] = []
            self._next = 0  # num_timesteps at or after which the next periodic picture is drawn
            self._last: int | None = None  # num_timesteps of the last picture written

        def _init_callback(self) -> None:
            self.agent = wrap(self.model)
            training_core = getattr(self.training_env, "core", None)  # GFNetVecMonitor / GFNetSB3VecEnv
            self.core = evaluation_core(
                env_id, env_kwargs, int(n_images), settings=self.agent.env_settings(),
                model=None if training_core is None else training_core.model,
                device=device if training_core is None else training_core.device, split=split)
            self.indices = list(range(min(int(n_images), len(self.core.dataset))))

        def _write(self) -> None:
            """Draw the picture and write it now, at ``num_timesteps``.

            Written straight to the logger's TensorBoard output rather than ``logger.record``-ed: SB3 dumps
            recorded values only at the end of a rollout (every ``log_interval`` episodes off-policy) and never
            after training ends, so a recorded picture would carry a later step, and the last one would be lost.
            """
            step = int(self.num_timesteps)
            if step == self._last:
                return
            image = episode_image(self.core, self.agent, self.indices, deterministic=deterministic)
            for out in self.logger.output_formats:
                if isinstance(out, TensorBoardOutputFormat):
                    # what logger.record(TAG, Image(...), exclude=_EXCLUDE) + logger.dump(step) writes there
                    out.write({TAG: Image(image, "HWC")}, {TAG: _EXCLUDE}, step)
            self._last = step

        def _on_training_start(self) -> None:
            self._write()
            self._next = (int(self.num_timesteps) // int(every_steps) + 1) * int(every_steps)

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                self._write()
                self._next = (int(self.num_timesteps) // int(every_steps) + 1) * int(every_steps)
            return True

        def _on_training_end(self) -> None:
            try:
                self._write()
            finally:
                self.close()

        def close(self) -> None:
            """Close the callback's core (idempotent; the shared networks stay with the training env)."""
            if self.core is not None:
                self.core.close()
                self.core = None

    return EpisodeImageCallback()
