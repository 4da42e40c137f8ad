"""Draw where agents look: images with the glance frame and each chosen patch, in order, coloured by p(true
class) after that step (red → yellow → green) and captioned with it.

A .png shows the final step of every image (one row per agent); a .gif plays the steps (glance, then one patch
more per frame). Images are indices --start..--start+N-1 of the env's evaluation split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    add_agent_dir,
    add_env_kwarg,
    add_import,
    import_user_modules,
    parse_agent_dirs,
    parse_env_kwargs,
    raw_formatter,
)
from .benchmark import add_trust_agent

EXAMPLE = """  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent paper-ppo --n 8 --out ppo.png
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent random,saliency,oracle --n 6 --out looks.gif
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --import my_agents.py --agent center,my-agent --n 6 --out mine.png"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--env", required=True, help="env id")
    parser.add_argument("--agent", required=True,
                        help="agent name, or several separated by commas (one row each); BASE:LABEL is a named "
                             "variant of agent BASE (its weights from --agent-dir BASE:LABEL=DIR)")
    add_agent_dir(parser)
    add_import(parser)
    parser.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--start", type=int, default=0, help="first image index (default 0)")
    parser.add_argument("--out", required=True, help="output .png (final step) or .gif (step by step)")
    add_env_kwarg(parser)
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random agent")
    parser.add_argument("--duration-ms", type=int, default=700, help="GIF frame duration")
    add_trust_agent(parser)


def run(args: argparse.Namespace) -> int:
    import_user_modules(args.imports)  # before any agent lookup: the user's code registers its agents
    from gfnet_cli.show import episode_frames_for
    from gfnet_env.render import labelled_rows
    from gfnet_env.render import save_gif, save_png

    names = [a.strip() for a in args.agent.split(",") if a.strip()]
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--out must end in .png or .gif, got {out}")
    if not names:
        raise ValueError("--agent names no agent")
    if out.parent.exists() and not out.parent.is_dir():
        raise NotADirectoryError(f"--out {out}: {out.parent} is a file, not a folder")
    indices = list(range(args.start, args.start + args.n))  # --n >= 1 and --start >= 0: checked by gfnet_cli.main
    # bad input (unknown agent, env kwarg, checkpoint, index) raises; gfnet_cli.main prints it in one line
    frames = episode_frames_for(names, args.env, indices, parse_env_kwargs(args.env_kwarg),
                                parse_agent_dirs(args.agent_dir), device=args.device, seed=args.seed,
                                trust_agent=args.trust_agent)
    if out.suffix.lower() == ".png":
        save_png(labelled_rows([[img[-1] for img in agent] for agent in frames], names), out)
    else:
        steps = len(frames[0][0])
        save_gif([labelled_rows([[img[k] for img in agent] for agent in frames], names) for k in range(steps)],
                 out, duration_ms=args.duration_ms)
    print(f"wrote {out}")
    return 0
