"""Drawing GFNet episodes: the image with the glance frame and each focus patch, in order.

Pure numpy + PIL (no matplotlib), fast enough to call on every ``render()``.

* :func:`draw_episode`: one frame — the image (upscaled by an integer factor when small), the glance frame
  around the whole image, each patch as a rectangle outline coloured by its step (a fixed tab10 list) or,
  when confidences are given, by the confidence after that step (red → yellow → green), and the step
  number in the patch's top-left corner.
* :func:`episode_frames`: the frames of an animation (glance only, then one more patch per frame).
* :func:`grid_of_frames`: tile frames with a small gap.
* :func:`save_png` / :func:`save_gif`.
* :func:`rollout_frames`: the captioned frames of every episode of a :func:`gfnet_env.rollout.rollout`, and
  :func:`labelled_rows`: one row of frames per name (``gfnet show`` and the training pictures in TensorBoard).
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from .rollout import Rollout

__all__ = [
    "STEP_COLORS",
    "GLANCE_COLOR",
    "MIN_RENDER_SIZE",
    "upscale_factor",
    "confidence_color",
    "draw_episode",
    "episode_frames",
    "grid_of_frames",
    "save_png",
    "save_gif",
]

PathLike = Union[str, os.PathLike]
Color = tuple[int, int, int]

#: Colours of focus steps 1, 2, … (matplotlib's tab10 without its grey), cycled when there are more steps.
STEP_COLORS: tuple[Color, ...] = (
    (31, 119, 180),  # blue
    (255, 127, 14),  # orange
    (44, 160, 44),  # green
    (214, 39, 40),  # red
    (148, 103, 189),  # purple
    (140, 86, 75),  # brown
    (227, 119, 194),  # pink
    (188, 189, 34),  # olive
    (23, 190, 207),  # cyan
)

#: Colour of the glance frame (the border of the whole image) when no glance confidence is given.
GLANCE_COLOR: Color = (255, 255, 255)

#: Images smaller than this (shorter side, pixels) are upscaled by an integer factor with nearest neighbour.
MIN_RENDER_SIZE = 128


def upscale_factor(size: int) -> int:
    """Integer factor by which an image with shorter side ``size`` is enlarged (1 when ``size >= 128``)."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    return 1 if size >= MIN_RENDER_SIZE else math.ceil(MIN_RENDER_SIZE / size)


def confidence_color(confidence: float) -> Color:
    """Red (0) → yellow (0.5) → green (1); values outside [0, 1] are clipped, NaN is drawn grey."""
    c = float(confidence)
    if math.isnan(c):
        return (128, 128, 128)
    c = min(max(c, 0.0), 1.0)
    r, g, b = colorsys.hsv_to_rgb(c / 3.0, 1.0, 1.0)
    return (round(r * 255), round(g * 255), round(b * 255))


def _as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{what} must be (H, W, 3) RGB (or (H, W) grey), got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{what} must be uint8 (0..255), got dtype {arr.dtype}; use gfnet_env.data.image_folder.denormalizer_for "
                "to turn a normalised tensor into one"
            )
        raise ValueError(f"{what} must be uint8, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def _boxes_array(boxes, height: int, width: int) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4), dtype=np.int64)
    if hasattr(boxes, "detach"):  # a torch tensor
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be a list of (row, col, height, width), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("boxes must be finite")
    arr = np.rint(arr).astype(np.int64)
    if np.any(arr[:, 2:] <= 0):
        raise ValueError(f"box heights and widths must be positive, got {arr.tolist()}")
    # Clip to the image (a box partly outside is drawn where it is visible).
    r0 = np.clip(arr[:, 0], 0, height - 1)
    c0 = np.clip(arr[:, 1], 0, width - 1)
    r1 = np.clip(arr[:, 0] + arr[:, 2], 1, height)
    c1 = np.clip(arr[:, 1] + arr[:, 3], 1, width)
    return np.stack([r0, c0, np.maximum(r1 - r0, 1), np.maximum(c1 - c0, 1)], axis=1)


def _outline(canvas: np.ndarray, top: int, left: int, bottom: int, right: int, thickness: int, color: Color) -> None:
    """Draw a rectangle outline *inside* [top, bottom) × [left, right) of ``canvas`` in place."""
    t_r = min(thickness, max(1, (bottom - top) // 2))
    t_c = min(thickness, max(1, (right - left) // 2))
    col = np.asarray(color, dtype=np.uint8)
    canvas[top : top + t_r, left:right] = col
    canvas[bottom - t_r : bottom, left:right] = col
    canvas[top:bottom, left : left + t_c] = col
    canvas[top:bottom, right - t_c : right] = col


_FONTS: dict[int, ImageFont.ImageFont] = {}


def _font(size: int):
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except (TypeError, AttributeError, OSError, ImportError):  # old Pillow or no FreeType: the bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _text_color(bg: Color) -> Color:
    luminance = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_episode(
    image_rgb: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray | None,
    confidences: Sequence[float] | None = None,
    glance: bool = True,
    *,
    labels: bool = True,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one episode on its image.

    Args:
        image_rgb: (S, S, 3) uint8 RGB image (any H × W works; (H, W) grey is repeated to RGB).
        boxes: focus patches in step order, each ``(row, col, height, width)`` in pixels of ``image_rgb``
            (the ``boxes`` of ``feature_nets.gfnet.StepOutput``); a (N, 4) array or tensor also works.
            Boxes are clipped to the image.
        confidences: optional; ``len(boxes)`` values — the confidence after each focus step — or
            ``len(boxes) + 1`` values, the first being the glance's (then the glance frame is coloured by it
            too). Colours go red (0) → yellow (0.5) → green (1). Without them each step has a fixed colour
            (:data:`STEP_COLORS`, cycled).
        glance: draw the glance frame (the border of the whole image).
        labels: write the step number (1, 2, …) in each patch's top-left corner (skipped for patches too
            small to hold it).
        thickness: outline width in output pixels (default: ``max(1, S' // 100)``).

    Returns:
        (S', S', 3) uint8 with ``S' = k·S``, where ``k`` is :func:`upscale_factor` of the image (1 for
        S >= 128). Outlines are drawn inside each box, so a patch's interior is untouched; later steps are drawn
        over earlier ones, and all numbers last.
    """
    img = _as_rgb_uint8(image_rgb)
    h, w = img.shape[:2]
    bx = _boxes_array(boxes, h, w)
    n = len(bx)
    glance_conf = None
    if confidences is not None:
        conf = [float(c) for c in (confidences.tolist() if hasattr(confidences, "tolist") else confidences)]
        if len(conf) == n + 1:
            glance_conf, conf = conf[0], conf[1:]
        elif len(conf) != n:
            raise ValueError(
                f"confidences must have len(boxes) = {n} values (one per focus step) or {n + 1} (glance first), "
                f"got {len(conf)}"
            )
        colors = [confidence_color(c) for c in conf]
    else:
        colors = [STEP_COLORS[i % len(STEP_COLORS)] for i in range(n)]

    k = upscale_factor(min(h, w))
    canvas = np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img.copy()
    big_h, big_w = canvas.shape[:2]
    t = max(1, min(big_h, big_w) // 100) if thickness is None else int(thickness)
    if t < 1:
        raise ValueError(f"thickness must be positive, got {thickness}")

    if glance:
        gcolor = GLANCE_COLOR if glance_conf is None else confidence_color(glance_conf)
        _outline(canvas, 0, 0, big_h, big_w, t, gcolor)
    for (r, c, bh, bw), color in zip(bx.tolist(), colors):
        _outline(canvas, r * k, c * k, (r + bh) * k, (c + bw) * k, t, color)

    if labels and n:
        size = max(8, min(big_h, big_w) // 20)
        font = _font(size)
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for i, ((r, c, bh, bw), color) in enumerate(zip(bx.tolist(), colors)):
            text = str(i + 1)
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
            tw, th = x1 - x0, y1 - y0
            pad = 1
            box_w, box_h = tw + 2 * pad, th + 2 * pad
            if box_w * 2 > bw * k or box_h * 2 > bh * k:
                continue  # the patch is too small to hold a readable number
            left, top = c * k + t, r * k + t
            draw.rectangle([left, top, left + box_w - 1, top + box_h - 1], fill=color)
            draw.text((left + pad - x0, top + pad - y0), text, fill=_text_color(color), font=font)
        canvas = np.asarray(pil, dtype=np.uint8).copy()
    return canvas


def episode_frames(
    image_rgb: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray | None,
    confidences: Sequence[float] | None = None,
    glance: bool = True,
    **kwargs,
) -> list[np.ndarray]:
    """Frames of an animation: the glance alone, then the first 1, 2, … patches (``len(boxes) + 1`` frames).

    ``confidences`` as in :func:`draw_episode`; frame ``j`` uses the values up to step ``j``.
    """
    img = _as_rgb_uint8(image_rgb)
    bx = _boxes_array(boxes, img.shape[0], img.shape[1])
    n = len(bx)
    conf = None if confidences is None else [float(c) for c in confidences]
    with_glance = conf is not None and len(conf) == n + 1
    if conf is not None and len(conf) not in (n, n + 1):
        raise ValueError(f"confidences must have {n} or {n + 1} values, got {len(conf)}")
    frames = []
    for j in range(n + 1):
        cj = None if conf is None else (conf[: j + 1] if with_glance else conf[:j])
        frames.append(draw_episode(img, bx[:j], cj, glance, **kwargs))
    return frames


def _background(background, what: str = "background") -> np.ndarray:
    arr = np.asarray(background, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3 or np.any(arr < 0) or np.any(arr > 255):
        raise ValueError(f"{what} must be an int or an RGB triple in 0..255, got {background!r}")
    return arr.astype(np.uint8)


def grid_of_frames(
    frames: Sequence[np.ndarray],
    ncols: int,
    gap: int = 4,
    background: int | Sequence[int] = 255,
) -> np.ndarray:
    """Tile frames row by row, ``ncols`` per row, ``gap`` pixels apart (and around), on ``background``.

    Frames of different sizes are placed top-left in cells of the largest height and width. Returns
    (H, W, 3) uint8.
    """
    if len(frames) == 0:
        raise ValueError("grid_of_frames needs at least one frame")
    if ncols < 1:
        raise ValueError(f"ncols must be positive, got {ncols}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    imgs = [_as_rgb_uint8(f, f"frame {i}") for i, f in enumerate(frames)]
    ncols = min(ncols, len(imgs))
    nrows = math.ceil(len(imgs) / ncols)
    ch = max(f.shape[0] for f in imgs)
    cw = max(f.shape[1] for f in imgs)
    out = np.empty((nrows * ch + (nrows + 1) * gap, ncols * cw + (ncols + 1) * gap, 3), dtype=np.uint8)
    out[:] = _background(background)
    for i, f in enumerate(imgs):
        r, c = divmod(i, ncols)
        top, left = gap + r * (ch + gap), gap + c * (cw + gap)
        out[top : top + f.shape[0], left : left + f.shape[1]] = f
    return out


def _prepare_path(path: PathLike) -> Path:
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def save_png(array: np.ndarray, path: PathLike) -> Path:
    """Write an (H, W, 3) uint8 array (or (H, W) grey) as a PNG; parent folders are created. Returns the path."""
    p = _prepare_path(path)
    Image.fromarray(_as_rgb_uint8(array)).save(p, format="PNG")
    return p


def save_gif(
    frames: Sequence[np.ndarray],
    path: PathLike,
    duration_ms: int = 500,
    loop: int = 0,
    background: int | Sequence[int] = 255,
) -> Path:
    """Write frames as an animated GIF (``loop=0``: forever), ``duration_ms`` per frame.

    Frames of different sizes are padded (bottom/right, with ``background``) to the largest. Returns the path.
    """
    if len(frames) == 0:
        raise ValueError("save_gif needs at least one frame")
    if duration_ms <= 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    imgs = [_as_rgb_uint8(f, f"frame {i}") for i, f in enumerate(frames)]
    hh = max(f.shape[0] for f in imgs)
    ww = max(f.shape[1] for f in imgs)
    bg = _background(background)
    padded = []
    for f in imgs:
        if f.shape[:2] != (hh, ww):
            g = np.empty((hh, ww, 3), dtype=np.uint8)
            g[:] = bg
            g[: f.shape[0], : f.shape[1]] = f
            f = g
        padded.append(Image.fromarray(f))
    p = _prepare_path(path)
    padded[0].save(
        p,
        format="GIF",
        save_all=True,
        append_images=padded[1:],
        duration=int(duration_ms),
        loop=int(loop),
        optimize=False,
        disposal=1,
    )
    return p


def render_slot(core, slot: int, confidences: Sequence[float] | None = None) -> np.ndarray:
    """Draw episode ``slot`` of a :class:`~gfnet_env.core.GFNetCore` so far: image, glance frame, patches in order.

    Args:
        core: the batched core.
        slot: which of its episodes.
        confidences: top-1 confidence after each step so far (glance first), colouring the boxes; None → by order.

    Returns:
        (k·S, k·S, 3) uint8 RGB frame.
    """
    import torch

    from feature_nets.crop import crop_corners

    from .data.image_folder import denormalizer_for

    image = denormalizer_for(core.dataset)(core._images[slot].detach().cpu())
    n = int(core._steps[slot])
    p, s = core.model.patch_size, core.model.image_size
    boxes = []
    if n:
        corners = crop_corners(torch.as_tensor(core._locations[slot, :n]), s, p).tolist()
        boxes = [(r, c, p, p) for r, c in corners]
    return draw_episode(image, boxes, confidences=list(confidences) if confidences else None, glance=True)


def rollout_frames(result: Rollout, images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """frames[i][k]: episode i of a rollout after step k (0 = glance only), as (S', S' + 14, 3) uint8 drawings.

    Each look is coloured by p(true class) after it (red 0 → green 1), and each frame is captioned with it. An
    episode that stopped (or exited early) at step k shows its step-k picture in its later frames.

    Args:
        result: a :func:`gfnet_env.rollout.rollout` of E episodes (T' = max_steps + 1 steps each).
        images: the E images it ran on, in its order, as (S, S, 3) uint8 RGB (``denormalizer_for(dataset)``).
    """
    if len(images) != result.targets.shape[0]:
        raise ValueError(f"{len(images)} images for a rollout of {result.targets.shape[0]} episodes")
    # p(true class) after each step: the colour of each look, and the caption under each frame
    p_true = result.probs.gather(2, result.targets[None, :, None].expand(result.probs.shape[0], -1, 1))[..., 0]
    steps = result.probs.shape[0]
    exits = result.exit_step if result.exit_step is not None else np.full(len(images), steps - 1)
    per_image = []
    for i, image in enumerate(images):
        k_exit = int(exits[i])
        p = p_true[: k_exit + 1, i].tolist()
        frames = episode_frames(image, result.boxes[:k_exit, i].tolist(), confidences=p)
        captioned = [_captioned(f, f"step {k}: p(y)={p[k]:.2f}") for k, f in enumerate(frames)]
        # an episode that ended early keeps its last picture for the remaining frames
        ended = "stopped" if result.stopped is not None and result.stopped[i] else "ended"
        captioned += [_captioned(frames[-1], f"{ended} at {k_exit}: p(y)={p[-1]:.2f}")] * (steps - 1 - k_exit)
        per_image.append(captioned)
    return per_image


def _captioned(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with a white band below it holding ``text``."""
    band = Image.new("RGB", (frame.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0))
    return np.concatenate([frame, np.asarray(band)], 0)


def labelled_rows(rows: list[list[np.ndarray]], names: list[str]) -> np.ndarray:
    """Stack one row of frames per agent, each with its name written above it."""
    blocks = []
    for name, frames in zip(names, rows):
        row = grid_of_frames(frames, ncols=len(frames))
        band = Image.new("RGB", (row.shape[1], 18), (255, 255, 255))
        ImageDraw.Draw(band).text((4, 3), name, fill=(0, 0, 0))
        blocks.append(np.concatenate([np.asarray(band), row], 0))
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 6), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return np.concatenate(padded, 0)
