"""Episode images for TensorBoard: where a policy looks on a few fixed images, drawn during training.

One picture (tag :data:`TAG`) shows deterministic episodes on the first ``n_images`` images of the
task's validation split (:attr:`gfnet_env.tasks.Task.validation_split`), the same images every time so pictures from different training steps compare:
one row per image — the glance frame, then one patch more per frame, each look coloured by p(true class)
after it and each frame captioned with it, as ``gfnet show`` draws them (:func:`gfnet_env.render.rollout_frames`).

* :func:`episode_image`: the picture of a policy on a core, as (H, W, 3) uint8 (``dataformats="HWC"``);
* :func:`evaluation_core`: a small core on the evaluation split for it (its networks may be the training's own);
* both trainers draw and write it through :class:`agents.run_log.RunLog` (``open_pictures`` / ``picture``): the
  paper's PPO (:func:`agents.paper_ppo.train.train_policy`, ``episode_images=``) and the SB3 callback
  :func:`agents.sb3.callbacks.episode_image_callback`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from gfnet_env.core import GFNetCore

__all__ = ["DEFAULT_IMAGES", "EVAL_SPLIT", "TAG", "episode_image", "evaluation_core"]

#: TensorBoard tag of the picture (both training paths).
TAG = "episodes/looks"
#: Images per picture: enough to see a policy's habits, few enough to stay cheap and legible.
DEFAULT_IMAGES = 4


class _ValidationSplit:
    """The default ``split`` of :func:`evaluation_core`: the task's own validation split."""

    def __repr__(self) -> str:
        return "EVAL_SPLIT (the task's validation split)"


#: Split the pictures are drawn on: the task's validation split (:attr:`gfnet_env.tasks.Task.validation_split`,
#: the one ``train_sb3``'s EvalCallback uses); a user ``dataset=`` has no splits, and then its own first images
#: are drawn.
EVAL_SPLIT: Any = _ValidationSplit()


def episode_image(core: GFNetCore, policy: Any, indices: Sequence[int] | None = None,
                  deterministic: bool = True) -> np.ndarray:
    """Run ``policy`` on dataset ``indices`` of ``core`` and draw every episode, one row per image.

    Args:
        core: a core on the images (``early_exit`` unset, settings matching the policy's obs/action modes);
            ``core.num_envs == len(indices)`` runs them as one batch.
        policy: an agent (``reset`` / ``act``, e.g. :class:`agents.sb3.agent.SB3Agent`) or a function
            ``obs -> actions`` (see :func:`gfnet_env.rollout.rollout`).
        indices: dataset indices (default: the first :data:`DEFAULT_IMAGES` of ``core.dataset``).
        deterministic: passed to the agent's ``act``; deterministic episodes show what the policy has learnt,
            not its exploration noise.

    Returns:
        (H, W, 3) uint8 RGB: per image a text band (index, true class, final prediction) above its
        ``max_steps + 1`` frames (each (S', S' + 14, 3), S' = the image upscaled to at least 128 pixels), for
        ``SummaryWriter.add_image(TAG, image, step, dataformats="HWC")``.
    """
    from gfnet_env.data.image_folder import denormalizer_for
    from gfnet_env.rollout import rollout

    from gfnet_env.render import labelled_rows, rollout_frames

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
                    split: str | None | _ValidationSplit = EVAL_SPLIT, agent: Any = None) -> GFNetCore:
    """A core of ``n_images`` slots on the evaluation split, for :func:`episode_image`.

    Args:
        env_id: the GFNet env id trained on.
        env_kwargs: the training env's kwargs (``checkpoint``, ``data_root``, ``dataset``, ``reward``, …).
        n_images: slots (one batch of episodes).
        settings: an agent's ``env_settings()`` (``obs_mode`` / ``action_mode`` / …), applied as ``agent``'s.
        agent: an agent (anything with ``env_settings()``) whose env settings the core uses (by the factory).
        model: the GFNet to use instead of loading ``checkpoint`` again (the training core's own: no second copy
            in memory; it is frozen, so sharing it changes nothing).
        device: torch device (a ``device`` in ``env_kwargs`` wins when this is ``"auto"``).
        split: the split drawn (default: the task's validation split; None: ``env_kwargs``' own). When it cannot
            be read (an ImageNet folder without ``val/``), the training split's first images are drawn instead,
            with a warning.

    The core decodes its few images in the caller (``loader_threads=0``: no thread to leak, milliseconds for 4
    images). Close it when done.
    """
    from gfnet_env.factory import make_core
    from gfnet_env.tasks import get_task

    task = get_task(env_id)
    if isinstance(split, _ValidationSplit):
        split = task.validation_split if "split" in task.kwargs else None
    if settings is not None and agent is None:
        agent = _Settings(settings)
    kwargs = dict(env_kwargs)
    kwargs.pop("feature_cache", None)  # speeds up many grid episodes, not four
    env_device = kwargs.pop("device", "auto")
    device = env_device if isinstance(device, str) and device == "auto" else device
    kwargs["loader_threads"] = 0
    if model is not None and "checkpoint" in task.kwargs:
        kwargs["checkpoint"] = model
    if split is not None and kwargs.get("split") != split:
        try:
            return make_core(task, n_images, device=device, agent=agent, **{**kwargs, "split": split})
        except OSError as e:  # a missing folder of the evaluation split: draw the training images instead
            warnings.warn(f"episode images: the {split!r} split cannot be read ({e}); drawing the first images "
                          f"of the {kwargs.get('split', 'default')!r} split instead", stacklevel=2)
    return make_core(task, n_images, device=device, agent=agent, **kwargs)


class _Settings:
    """An agent's ``env_settings()`` given as a dict, in the shape the factory takes (``agent=``)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)

    def env_settings(self) -> dict[str, Any]:
        return self.settings


