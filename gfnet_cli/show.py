"""Where agents look, as pictures: each image with the glance frame and every chosen patch, in order.

:func:`episode_frames_for` runs agents on given images through :func:`gfnet_env.rollout.rollout` and draws
frame k of every episode (the glance, then one patch more per frame, coloured by p(true class) after that
step, which the caption under the frame prints; :func:`gfnet_env.render.labelled_rows` stacks one row of frames
per agent under its name. ``gfnet show`` writes them as a PNG
(last frame) or a GIF (all frames); training logs them to TensorBoard (:mod:`agents.episode_images`).
"""

from __future__ import annotations

import numpy as np

from gfnet_env.data.image_folder import denormalizer_for
from gfnet_env.factory import build_core, env_id_of, load_task, shared_env_kwargs
from gfnet_env.render import rollout_frames
from gfnet_env.rollout import rollout

from agents.base import RunContext
from agents.benchmark.run import resolve_runs

__all__ = ["episode_frames_for"]


def episode_frames_for(agent_names: list[str], env_id: str, indices: list[int], env_kwargs: dict | None = None,
                       agent_dirs: dict | None = None, device: str = "auto",
                       seed: int = 0, trust_agent: bool = False) -> list[list[list[np.ndarray]]]:
    """frames[a][i][k]: agent a, image i, after step k (0 = glance only), as (S', S' + 14, 3) uint8 drawings.

    Each look is coloured by p(true class) after it (red 0 → green 1), and each frame is captioned with it.

    Each agent is its first run (``random`` with ``seed``; a trained agent from ``agent_dirs``, loaded with
    ``trust_agent`` as in :func:`agents.trained.load_agent`).
    """
    env_id = env_id_of(env_id)
    env_kwargs, task_kwargs, settings = shared_env_kwargs(dict(env_kwargs or {}), env_id)
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
        with build_core(model, ds, len(indices), settings, agent=agent, device=device) as core:
            result = rollout(core, agent, indices)
        out.append(rollout_frames(result, images))
    return out


