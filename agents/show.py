"""Where agents look, as pictures: each image with the glance frame and every chosen patch, in order.

:func:`episode_frames_for` runs agents on given images through :func:`gfnet_env.rollout.rollout` and draws
frame k of every episode (the glance, then one patch more per frame, coloured by p(true class) after that
step, which the caption under the frame prints; :func:`rollout_frames` draws them for a rollout already run);
:func:`labelled_rows` stacks one row of frames per agent under its name. ``gfnet show`` writes them as a PNG
(last frame) or a GIF (all frames); training logs them to TensorBoard (:mod:`agents.episode_images`).
"""

from __future__ import annotations

import numpy as np

from gfnet_env.core import GFNetCore
from gfnet_env.datasets import denormalizer_for
from gfnet_env.factory import env_id_of, load_task, split_env_kwargs
from gfnet_env.render import episode_frames, grid_of_frames
from gfnet_env.rollout import Rollout, rollout

from .base import RunContext
from .benchmark import AGENT_KWARGS, resolve_runs

__all__ = ["episode_frames_for", "labelled_rows", "rollout_frames"]


def episode_frames_for(agent_names: list[str], env_id: str, indices: list[int], env_kwargs: dict | None = None,
                       agent_dirs: dict | None = None, device: str = "auto",
                       seed: int = 0, trust_agent: bool = False) -> list[list[list[np.ndarray]]]:
    """frames[a][i][k]: agent a, image i, after step k (0 = glance only), as (S', S' + 14, 3) uint8 drawings.

    Each look is coloured by p(true class) after it (red 0 → green 1), and each frame is captioned with it.

    Each agent is its first run (``random`` with ``seed``; a trained agent from ``agent_dirs``, loaded with
    ``trust_agent`` as in :func:`agents.trained.load_agent`).
    """
    env_id = env_id_of(env_id)
    env_kwargs = {k: v for k, v in (env_kwargs or {}).items() if k not in AGENT_KWARGS and k != "early_exit"}
    grid_size = int(env_kwargs.get("grid_size", 7))
    task_kwargs, settings = split_env_kwargs({k: v for k, v in env_kwargs.items() if k != "grid_size"})
    model, ds = load_task(env_id, **task_kwargs)
    if max(indices) >= len(ds):
        raise ValueError(f"image index {max(indices)} is beyond the split ({len(ds)} images)")
    denorm = denormalizer_for(ds)
    images = [denorm(ds[i][0]) for i in indices]
    out = []
    for name in agent_names:
        ctx = RunContext(name=name, env_id=env_id, model=model, env_kwargs=env_kwargs, seeds=1, seed=seed,
                         device=device)
        runs, _ = resolve_runs(ctx, agent_dirs or {}, trust_agent=trust_agent)
        agent = runs[0].build()
        s = agent.env_settings()
        agent_settings = settings.replace(obs_mode=s["obs_mode"], action_mode=s["action_mode"],
                                          grid_size=int(s.get("grid_size", grid_size)),
                                          action_range=s.get("action_range", "unit"))
        with GFNetCore(model, ds, len(indices), agent_settings, device=device) as core:
            result = rollout(core, agent, indices)
        out.append(rollout_frames(result, images))
    return out


def rollout_frames(result: Rollout, images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """frames[i][k]: episode i of a rollout after step k (0 = glance only), as (S', S' + 14, 3) uint8 drawings.

    Each look is coloured by p(true class) after it (red 0 → green 1), and each frame is captioned with it.

    Args:
        result: a :func:`gfnet_env.rollout.rollout` of E episodes (T' = max_steps + 1 steps each).
        images: the E images it ran on, in its order, as (S, S, 3) uint8 RGB (``denormalizer_for(dataset)``).
    """
    if len(images) != result.targets.shape[0]:
        raise ValueError(f"{len(images)} images for a rollout of {result.targets.shape[0]} episodes")
    # p(true class) after each step: the colour of each look, and the caption under each frame
    p_true = result.probs.gather(2, result.targets[None, :, None].expand(result.probs.shape[0], -1, 1))[..., 0]
    per_image = []
    for i, image in enumerate(images):
        p = p_true[:, i].tolist()
        frames = episode_frames(image, result.boxes[:, i].tolist(), confidences=p)
        per_image.append([_captioned(f, f"step {k}: p(y)={p[k]:.2f}") for k, f in enumerate(frames)])
    return per_image


def _captioned(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with a white band below it holding ``text``."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (frame.shape[1], 14), (255, 255, 255))
    ImageDraw.Draw(band).text((2, 1), text, fill=(0, 0, 0))
    return np.concatenate([frame, np.asarray(band)], 0)


def labelled_rows(rows: list[list[np.ndarray]], names: list[str]) -> np.ndarray:
    """Stack one row of frames per agent, each with its name written above it."""
    from PIL import Image, ImageDraw

    blocks = []
    for name, frames in zip(names, rows):
        row = grid_of_frames(frames, ncols=len(frames))
        band = Image.new("RGB", (row.shape[1], 18), (255, 255, 255))
        ImageDraw.Draw(band).text((4, 3), name, fill=(0, 0, 0))
        blocks.append(np.concatenate([np.asarray(band), row], 0))
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 6), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return np.concatenate(padded, 0)
