"""Draw where agents look: images with the glance frame and each chosen patch, in order, coloured by the
top-1 confidence after that step (red → yellow → green).

A .png shows the final step of every image (one row per agent); a .gif plays the steps (glance, then one patch
more per frame). Images are indices --start..--start+N-1 of the env's evaluation split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ._common import add_agent_dir, add_env_kwarg, parse_agent_dirs, parse_env_kwargs, raw_formatter

EXAMPLE = """  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent paper-ppo --n 8 --out ppo.png
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent random,saliency,oracle --n 6 --out looks.gif"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--env", required=True, help="env id")
    parser.add_argument("--agent", required=True, help="agent name, or several separated by commas (one row each)")
    add_agent_dir(parser)
    parser.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--start", type=int, default=0, help="first image index (default 0)")
    parser.add_argument("--out", required=True, help="output .png (final step) or .gif (step by step)")
    add_env_kwarg(parser)
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random agent")
    parser.add_argument("--duration-ms", type=int, default=700, help="GIF frame duration")


def episode_frames_for(agent_names: list[str], env_id: str, indices: list[int], env_kwargs: dict | None = None,
                       agent_dirs: dict | None = None, device: str = "auto",
                       seed: int = 0) -> list[list[list[np.ndarray]]]:
    """frames[a][i][k]: agent a, image i, after step k (0 = glance only), as (S', S', 3) uint8 drawings."""
    from agents.benchmark import _AGENT_KWARGS, _TASK_KWARGS, _env_id, resolve_runs
    from gfnet_env import ENV_TASKS
    from gfnet_env.core import CoreSettings, GFNetCore
    from gfnet_env.datasets import denormalizer_for
    from gfnet_env.render import draw_episode
    from gfnet_env.tasks import TASKS

    env_id = _env_id(env_id)
    env_kwargs = {k: v for k, v in (env_kwargs or {}).items() if k not in _AGENT_KWARGS}
    env_kwargs.pop("early_exit", None)
    task_kwargs = {k: env_kwargs[k] for k in _TASK_KWARGS if k in env_kwargs}
    settings_kwargs = {k: v for k, v in env_kwargs.items() if k not in _TASK_KWARGS and k != "grid_size"}
    model, ds = TASKS[ENV_TASKS[env_id]](**task_kwargs)
    if max(indices) >= len(ds):
        raise ValueError(f"image index {max(indices)} is beyond the split ({len(ds)} images)")
    denorm = denormalizer_for(ds)
    n = len(indices)
    out = []
    for name in agent_names:
        runs, _ = resolve_runs(name, env_id, model, env_kwargs, agent_dirs or {}, 1, seed, device)
        agent = runs[0].build()
        s = agent.env_settings()
        settings = CoreSettings(obs_mode=s["obs_mode"], action_mode=s["action_mode"],
                                grid_size=int(s.get("grid_size", env_kwargs.get("grid_size", 7))), **settings_kwargs)
        core = GFNetCore(model, ds, n, settings, device=device)
        agent.bind(core)
        agent.reset(n)
        slots = np.arange(n)
        core.reset_slots(slots, indices)
        conf = [core.reset_info(slots)["confidence"]]
        boxes = []
        obs = core.observe()
        for _ in range(core.max_steps):
            _r, _term, info = core.step(agent.act(obs, deterministic=True))
            boxes.append(info["box"])
            conf.append(info["confidence"])
            obs = core.observe()
        images = [denorm(core.images[i]) for i in range(n)]
        per_image = []
        for i in range(n):
            b = [boxes[k][i] for k in range(len(boxes))]
            c = [float(conf[k][i]) for k in range(len(conf))]
            per_image.append([draw_episode(images[i], b[:k], confidences=c[:k + 1], glance=True)
                              for k in range(len(conf))])
        out.append(per_image)
    return out


def _labelled_rows(rows: list[list[np.ndarray]], names: list[str]) -> np.ndarray:
    """Stack one row of frames per agent, each with its name written above it."""
    from PIL import Image, ImageDraw

    from gfnet_env.render import grid_of_frames

    blocks = []
    for name, frames in zip(names, rows):
        row = grid_of_frames(frames, ncols=len(frames))
        band = Image.new("RGB", (row.shape[1], 18), (255, 255, 255))
        ImageDraw.Draw(band).text((4, 3), name, fill=(0, 0, 0))
        blocks.append(np.concatenate([np.asarray(band), row], 0))
    width = max(b.shape[1] for b in blocks)
    padded = [np.pad(b, ((0, 6), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return np.concatenate(padded, 0)


def run(args: argparse.Namespace) -> int:
    from gfnet_env.render import save_gif, save_png

    names = [a.strip() for a in args.agent.split(",") if a.strip()]
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        print(f"gfnet show: --out must end in .png or .gif, got {out}")
        return 2
    if args.n < 1:
        print("gfnet show: --n must be >= 1")
        return 2
    indices = list(range(args.start, args.start + args.n))
    try:
        frames = episode_frames_for(names, args.env, indices, parse_env_kwargs(args.env_kwarg),
                                    parse_agent_dirs(args.agent_dir), device=args.device, seed=args.seed)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"gfnet show: {e.args[0] if e.args else e}")
        return 2
    if out.suffix.lower() == ".png":
        save_png(_labelled_rows([[img[-1] for img in agent] for agent in frames], names), out)
    else:
        steps = len(frames[0][0])
        save_gif([_labelled_rows([[img[k] for img in agent] for agent in frames], names) for k in range(steps)],
                 out, duration_ms=args.duration_ms)
    print(f"wrote {out}")
    return 0
