"""Rendering: episode frames, grids, PNG and GIF files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gfnet_env.render import (
    GLANCE_COLOR,
    STEP_COLORS,
    confidence_color,
    draw_episode,
    episode_frames,
    grid_of_frames,
    save_gif,
    save_png,
    upscale_factor,
)

GREY = 100


def _image(s: int = 32) -> np.ndarray:
    return np.full((s, s, 3), GREY, dtype=np.uint8)


def test_shape_dtype_and_upscaling():
    out = draw_episode(_image(32), [(0, 0, 16, 16)])
    assert out.dtype == np.uint8 and out.shape == (128, 128, 3)
    assert draw_episode(_image(112), []).shape == (224, 224, 3)
    assert draw_episode(_image(224), [(10, 20, 96, 96)]).shape == (224, 224, 3)
    assert upscale_factor(28) == 5 and upscale_factor(128) == 1
    grey = draw_episode(np.full((20, 20), 7, np.uint8), None)
    assert grey.shape == (140, 140, 3)


def test_box_outline_drawn_and_interior_untouched():
    img = _image(32)
    k = upscale_factor(32)  # 4
    r, c, h, w = 8, 4, 16, 12
    out = draw_episode(img, [(r, c, h, w)], glance=False, labels=False)
    color = np.array(STEP_COLORS[0])
    top, left, bottom, right = r * k, c * k, (r + h) * k, (c + w) * k
    # The four edges carry the step colour ...
    for y, x in [(top, left + 10), (bottom - 1, left + 10), (top + 10, left), (top + 10, right - 1)]:
        assert (out[y, x] == color).all(), (y, x)
    # ... the middle of the patch and the region outside it keep the image.
    assert (out[top + 5 : bottom - 5, left + 5 : right - 5] == GREY).all()
    assert (out[:top] == GREY).all() and (out[bottom:] == GREY).all()
    assert (out[:, right:] == GREY).all() and (out[:, :left] == GREY).all()


def test_glance_frame_and_labels():
    out = draw_episode(_image(32), [(8, 8, 16, 16)], glance=True, labels=True)
    assert (out[0, :] == GLANCE_COLOR).all() and (out[:, -1] == GLANCE_COLOR).all()
    no_label = draw_episode(_image(32), [(8, 8, 16, 16)], glance=True, labels=False)
    corner = (slice(8 * 4 + 1, 8 * 4 + 12), slice(8 * 4 + 1, 8 * 4 + 12))
    assert not np.array_equal(out[corner], no_label[corner])  # the step number sits in the top-left corner
    mid = slice(8 * 4 + 20, 24 * 4 - 20)
    assert (out[mid, mid] == GREY).all()


def test_order_colours_and_confidence_colours():
    boxes = [(0, 0, 8, 8), (16, 16, 8, 8)]
    out = draw_episode(_image(32), boxes, glance=False, labels=False)
    assert (out[0, 10] == STEP_COLORS[0]).all() and (out[16 * 4, 16 * 4 + 10] == STEP_COLORS[1]).all()
    out = draw_episode(_image(32), boxes, confidences=[0.0, 1.0], glance=False, labels=False)
    assert tuple(out[0, 10]) == (255, 0, 0) and tuple(out[16 * 4, 16 * 4 + 10]) == (0, 255, 0)
    out = draw_episode(_image(32), boxes, confidences=[0.5, 0.0, 1.0], glance=True, labels=False)
    assert tuple(out[-1, 60]) == confidence_color(0.5) == (255, 255, 0)  # glance frame coloured by its confidence
    with pytest.raises(ValueError, match="confidences"):
        draw_episode(_image(32), boxes, confidences=[0.1])


def test_accepts_tensor_boxes_and_clips():
    boxes = torch.tensor([[0, 0, 16, 16], [20, 20, 16, 16]])  # the second runs past the 32-px image
    out = draw_episode(_image(32), boxes)
    assert out.shape == (128, 128, 3)
    with pytest.raises(ValueError):
        draw_episode(_image(32), [(0, 0, 0, 5)])
    with pytest.raises(ValueError, match="uint8"):
        draw_episode(np.zeros((32, 32, 3), np.float32), [])


def test_episode_frames():
    frames = episode_frames(_image(32), [(0, 0, 8, 8), (8, 8, 8, 8)], confidences=[0.2, 0.5, 0.9])
    assert len(frames) == 3 and all(f.shape == (128, 128, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[1])


def test_grid_of_frames():
    a = np.zeros((10, 12, 3), np.uint8)
    b = np.full((8, 8, 3), 50, np.uint8)
    g = grid_of_frames([a, b, a], ncols=2, gap=2)
    assert g.dtype == np.uint8 and g.shape == (2 * 10 + 3 * 2, 2 * 12 + 3 * 2, 3)
    assert (g[2:12, 2:14] == 0).all() and (g[2:10, 16:24] == 50).all()
    assert (g[0] == 255).all()  # the gap
    assert grid_of_frames([a], ncols=5, gap=0).shape == (10, 12, 3)
    with pytest.raises(ValueError):
        grid_of_frames([], ncols=2)


def test_save_png_and_gif(tmp_path):
    frames = episode_frames(_image(32), [(0, 0, 8, 8), (8, 8, 8, 8)])
    png = save_png(frames[-1], tmp_path / "sub" / "episode.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (128, 128)
        assert np.array_equal(np.asarray(im.convert("RGB")), frames[-1])
    gif = save_gif(frames, tmp_path / "episode.gif", duration_ms=200)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (128, 128)
        assert im.n_frames == len(frames)
        assert im.info.get("duration") == 200
