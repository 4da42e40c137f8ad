"""Episode images: where a policy looks, drawn with the class names and a colour scale of p(true class).

Every picture of looks in the project is drawn here: ``gfnet show`` (:func:`looks_figure`), the benchmark's
report (:mod:`agents.benchmark.report`, from the per-image records: :class:`Looks`) and the training pictures in
TensorBoard (:func:`episode_image`). An episode to draw is a :class:`Looks` (its image, the patches it looked at,
p(true class) and the predicted class after each step, the true class's name); :func:`looks_of_rollout` makes
them from a :func:`gfnet_env.rollout.rollout`.

For TensorBoard, where a policy looks on a few fixed images, drawn during training:

One picture (tag :data:`TAG`) shows deterministic episodes on the first ``n_images`` images of the task's
validation split (:attr:`gfnet_env.tasks.Task.validation_split`), the same images every time so pictures from
different training steps compare: one row per image, headed by its true and predicted class names — the glance
frame, then one patch more per frame, each look coloured by p(true class) after it and each frame captioned with
it (:func:`gfnet_env.render.rollout_frames`) — and a colour scale of p(true class) at the bottom.

* :func:`episode_image`: the picture of a policy on a core, as (H, W, 3) uint8 (``dataformats="HWC"``);
* :func:`evaluation_core`: a small core on the evaluation split for it (its networks may be the training's own);
* both trainers draw and write it through :class:`agents.run_log.RunLog` (``open_pictures`` / ``picture``): the
  paper's PPO (:func:`agents.paper_ppo.train.train_policy`, ``episode_images=``) and the SB3 callback
  :func:`agents.sb3.callbacks.episode_image_callback`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gfnet_env.core import GFNetCore

__all__ = ["DEFAULT_IMAGES", "EVAL_SPLIT", "P_TRUE_LABEL", "TAG", "Looks", "colour_scale_band", "episode_image",
           "evaluation_core", "figure_rgb", "looks_figure", "looks_of_rollout", "p_true_colormap"]

#: TensorBoard tag of the picture (both training paths).
TAG = "episodes/looks"
#: Images per picture: enough to see a policy's habits, few enough to stay cheap and legible.
DEFAULT_IMAGES = 4


#: What the colours of the looks mean (the colour scale's label).
P_TRUE_LABEL = "p(true class) after the look"


@dataclass
class Looks:
    """One episode to draw: an image, the patches looked at in order, and what the classifier said after each step.

    Attributes:
        image: (S, S, 3) uint8 RGB image.
        boxes: (L, 4) int (row, col, height, width) in pixels of the L patches looked at, in order.
        p_true: (L + 1,) float p(true class) after each step (glance first): the colour of each look.
        predicted: (L + 1,) names of the predicted class after each step.
        true_name: the true class's name.
        index: the image's dataset index.
        stopped: the agent's stop action ended the episode (else it ran out of looks).
    """

    image: np.ndarray
    boxes: np.ndarray
    p_true: np.ndarray
    predicted: list[str]
    true_name: str
    index: int
    stopped: bool = False

    @property
    def looks(self) -> int:
        return len(self.boxes)

    def frame(self, step: int | None = None) -> np.ndarray:
        """The image after ``step`` looks (None: all; later than the episode's end: its end), glance frame and
        patches numbered and coloured by p(true class) (:func:`gfnet_env.render.draw_episode`), as (S', S', 3)."""
        from gfnet_env.render import draw_episode

        k = self.looks if step is None else min(int(step), self.looks)
        return draw_episode(self.image, np.asarray(self.boxes)[:k].tolist(), confidences=list(self.p_true[: k + 1]))

    def caption(self, step: int | None = None) -> str:
        """``#index true: NAME / predicted: NAME (p(y)=…)`` after ``step`` looks (None: the episode's answer)."""
        k = self.looks if step is None else min(int(step), self.looks)
        mark = "✓" if self.predicted[k] == self.true_name else "✗"
        return (f"#{self.index} true: {self.true_name}\n"
                f"{mark} predicted: {self.predicted[k]} (p(y)={self.p_true[k]:.2f})")


def looks_of_rollout(result, images: Sequence[np.ndarray], class_names: Sequence[str]) -> list[Looks]:
    """The :class:`Looks` of every episode of a :func:`gfnet_env.rollout.rollout` (``images``: the E images it ran
    on, in its order, (S, S, 3) uint8; ``class_names``: by label)."""
    steps = result.probs.shape[0]
    targets = result.targets.tolist()
    p_true = result.probs.gather(2, result.targets[None, :, None].expand(steps, -1, 1))[..., 0].numpy()
    pred = result.probs.argmax(-1).numpy()                                              # (T', E)
    exits = result.exit_step if result.exit_step is not None else np.full(len(targets), steps - 1)
    out = []
    for i, (image, y) in enumerate(zip(images, targets)):
        k = int(exits[i])
        out.append(Looks(image=image, boxes=np.asarray(result.boxes[:k, i]), p_true=p_true[: k + 1, i],
                         predicted=[class_names[c] for c in pred[: k + 1, i]], true_name=class_names[y],
                         index=int(result.image_index[i]),
                         stopped=bool(result.stopped[i]) if result.stopped is not None else False))
    return out


def p_true_colormap(n: int = 256):
    """The colours of the looks (:func:`gfnet_env.render.confidence_color`: red 0 → yellow → green 1) as a
    matplotlib colormap, for the colour scale."""
    from matplotlib.colors import ListedColormap

    from gfnet_env.render import confidence_color

    return ListedColormap([tuple(c / 255 for c in confidence_color(i / (n - 1))) for i in range(n)], name="p_true")


def looks_figure(rows: Sequence[Sequence[Looks]], row_names: Sequence[str], step: int | None = None,
                 title: str | None = None):
    """A matplotlib figure of episodes: one row per agent (its name on the left), one column per image, each
    panel captioned with the image index, the true and the predicted class names and p(true class), and a colour
    scale of p(true class) (the colour of each look).

    Args:
        rows: rows[a][i], agent a on image i.
        row_names: the agents' names.
        step: draw every episode after this many looks (None: to its end; the frames of a GIF).
        title: written above the panels.
    """
    from feature_nets.extras import require

    Figure = require("matplotlib.figure", "benchmark", "the pictures of looks").Figure
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "benchmark", "the pictures of looks").FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(1.9 * n_cols + 1.3, 2.3 * n_rows + (0.4 if title else 0.1)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for a, (row, name) in enumerate(zip(rows, row_names)):
        for i in range(n_cols):
            ax = axes[a][i]
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(row):
                ax.set_axis_off()
                continue
            looks = row[i]
            ax.imshow(looks.frame(step))
            ax.set_title(looks.caption(step), fontsize=7)
            if i == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.86, bottom=0.03, top=0.88 if title else 0.93, wspace=0.08, hspace=0.35)
    cax = fig.add_axes((0.89, 0.12, 0.02, 0.72))
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=p_true_colormap()), cax=cax)
    bar.set_label(P_TRUE_LABEL, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def figure_rgb(fig) -> np.ndarray:
    """A matplotlib figure drawn as (H, W, 3) uint8 RGB."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def colour_scale_band(width: int, height: int = 30) -> np.ndarray:
    """A colour scale of p(true class) as a (height, width, 3) uint8 band (PIL only): the gradient with 0, 0.5 and
    1 marked and :data:`P_TRUE_LABEL` written under it, for pictures drawn without matplotlib."""
    from PIL import Image, ImageDraw

    from gfnet_env.render import confidence_color

    bar_w = max(60, min(width - 8, 300))
    band = Image.new("RGB", (max(width, bar_w + 8), height), (255, 255, 255))
    draw = ImageDraw.Draw(band)
    for x in range(bar_w):
        draw.line([(4 + x, 2), (4 + x, 11)], fill=confidence_color(x / (bar_w - 1)))
    for value, anchor in ((0.0, 4), (0.5, 4 + bar_w // 2 - 6), (1.0, 4 + bar_w - 8)):
        draw.text((anchor, 12), f"{value:g}", fill=(0, 0, 0))
    draw.text((bar_w + 12, 2), P_TRUE_LABEL, fill=(0, 0, 0))
    return np.asarray(band)[:, :width] if band.width > width else np.asarray(band)


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
        (H, W, 3) uint8 RGB: per image a text band (index, true class name, final predicted class name) above its
        ``max_steps + 1`` frames, and a colour scale of p(true class) at the bottom (each (each (S', S' + 14, 3), S' = the image upscaled to at least 128 pixels), for
        ``SummaryWriter.add_image(TAG, image, step, dataformats="HWC")``.
    """
    from gfnet_env.data.image_folder import denormalizer_for
    from gfnet_env.render import labelled_rows, rollout_frames
    from gfnet_env.rollout import rollout
    from gfnet_env.tasks import class_names_of

    dataset = core.dataset
    if indices is None:
        indices = range(min(DEFAULT_IMAGES, len(dataset)))
    indices = [int(i) for i in indices]
    result = rollout(core, policy, indices, deterministic=deterministic)
    denorm = denormalizer_for(dataset)
    images = [denorm(dataset[i][0]) for i in indices]
    rows = rollout_frames(result, images)
    final = result.probs[-1]  # (E, K) after the last step
    classes = class_names_of(dataset, int(final.shape[-1]))
    names = [f"image {i}: true {classes[y]}, predicted {classes[int(p.argmax())]} (p(y)={float(p[y]):.2f})"
             for i, y, p in zip(indices, result.targets.tolist(), final)]
    picture = labelled_rows(rows, names)
    return np.concatenate([picture, colour_scale_band(picture.shape[1])], 0)


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


