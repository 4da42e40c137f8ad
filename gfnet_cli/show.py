"""Where agents look, as pictures: each image with the glance frame and every chosen patch, in order.

:func:`episode_looks_for` runs agents on given images through :func:`gfnet_env.rollout.rollout` and returns their
episodes as :class:`agents.episode_images.Looks` (patches, p(true class) and the predicted class after each step,
the true class's name); :func:`write_looks` draws them with :func:`agents.episode_images.looks_figure` (one row
per agent, each panel captioned with the true and predicted class names, a colour scale of p(true class)) as a
PNG (every episode to its end) or a GIF (glance, then one patch more per frame). ``gfnet show`` is both.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gfnet_env.data.image_folder import denormalizer_for
from gfnet_env.factory import build_core, env_id_of, load_task, shared_env_kwargs
from gfnet_env.rollout import rollout
from gfnet_env.tasks import get_task

from agents.base import RunContext
from agents.benchmark.run import resolve_runs
from agents.episode_images import Looks, figure_rgb, looks_figure, looks_of_rollout

__all__ = ["episode_looks_for", "write_looks"]


def episode_looks_for(agent_names: list[str], env_id: str, indices: list[int], env_kwargs: dict | None = None,
                      agent_dirs: dict | None = None, device: str = "auto",
                      seed: int = 0, trust_agent: bool = False) -> list[list[Looks]]:
    """looks[a][i]: agent a's deterministic episode on image ``indices[i]`` of the env's evaluation split.

    Each agent is its first run (``random`` with ``seed``; a trained agent from ``agent_dirs``, loaded with
    ``trust_agent`` as in :func:`agents.trained.load_agent`); class names are the task's
    (:meth:`gfnet_env.tasks.Task.class_names`).
    """
    env_id = env_id_of(env_id)
    env_kwargs, task_kwargs, settings = shared_env_kwargs(dict(env_kwargs or {}), env_id)
    model, ds = load_task(env_id, **task_kwargs)
    if max(indices) >= len(ds):
        raise ValueError(f"image index {max(indices)} is beyond the split ({len(ds)} images)")
    denorm = denormalizer_for(ds)
    images = [denorm(ds[i][0]) for i in indices]
    names = get_task(env_id).class_names(ds, int(model.num_classes))
    out = []
    for name in agent_names:
        ctx = RunContext(name=name, env_id=env_id, model=model, env_kwargs=env_kwargs, seeds=1, seed=seed,
                         device=device)
        runs, _ = resolve_runs(ctx, agent_dirs or {}, trust_agent=trust_agent)
        agent = runs[0].build()
        with build_core(model, ds, len(indices), settings, agent=agent, device=device) as core:
            result = rollout(core, agent, indices)
        out.append(looks_of_rollout(result, images, names))
    return out


def write_looks(looks: list[list[Looks]], agent_names: list[str], out: str | os.PathLike, duration_ms: int = 700,
                title: str | None = None) -> Path:
    """Draw ``looks`` (rows of :func:`episode_looks_for`) into ``out``: a .png of every episode to its end, or a
    .gif of the steps; written atomically (a temporary file in ``out``'s folder, renamed over it)."""
    from gfnet_env.render import save_gif

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        if out.suffix.lower() == ".png":
            looks_figure(looks, agent_names, title=title).savefig(tmp, format="png")
        else:
            steps = max(lk.looks for row in looks for lk in row) + 1
            frames = [figure_rgb(looks_figure(looks, agent_names, step=k, title=_step_title(title, k)))
                      for k in range(steps)]
            save_gif(frames, tmp, duration_ms=duration_ms)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def _step_title(title: str | None, step: int) -> str:
    """A GIF frame's title: ``title`` and how many looks the frame shows."""
    when = "the glance" if step == 0 else f"after {step} look{'s' if step > 1 else ''}"
    return f"{title}: {when}" if title else when
