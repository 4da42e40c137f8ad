"""Draw where agents look: images with the glance frame and each chosen patch, in order, numbered and coloured by
p(true class) after that step (red → yellow → green, with a colour scale), each captioned with the image index,
the true class's name and the predicted class's name.

A .png shows the final step of every image (one row per agent); a .gif plays the steps (glance, then one patch
more per frame). Images of the env's evaluation split: --start..--start+N-1 (default), the dataset indices
--indices 3,17,42, or the failure gallery of a benchmark folder: --wrong A --right B --results DIR draws the first
--n images where agent A answered wrongly and agent B rightly (as the report's gallery; --agent defaults to A,B).
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
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent center,paper-ppo --indices 3,17,42 --out three.png
  gfnet show --results results/fmnist --wrong random --right paper-ppo --n 6 --out gallery.png
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --import my_agents.py --agent center,my-agent --n 6 --out mine.png"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--env", default=None, help="env id (default with --results: the benchmarked env)")
    parser.add_argument("--agent", default=None,
                        help="agent name, or several separated by commas (one row each); BASE:LABEL is a named "
                             "variant of agent BASE (its weights from --agent-dir BASE:LABEL=DIR); default with "
                             "--wrong/--right: those two")
    add_agent_dir(parser)
    add_import(parser)
    parser.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--start", type=int, default=0, help="first image index (default 0)")
    parser.add_argument("--indices", default=None, metavar="I,J,...",
                        help="dataset indices of the evaluation split to draw, comma-separated (instead of "
                             "--start/--n)")
    parser.add_argument("--wrong", default=None, metavar="AGENT",
                        help="with --right and --results: the images where AGENT answered wrongly ...")
    parser.add_argument("--right", default=None, metavar="AGENT", help="... and this AGENT rightly")
    parser.add_argument("--results", default=None, metavar="DIR",
                        help="the `gfnet benchmark --out` folder whose per-image records --wrong/--right read")
    parser.add_argument("--out", required=True, help="output .png (final step) or .gif (step by step)")
    add_env_kwarg(parser)
    parser.add_argument("--device", default="auto", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random agent")
    parser.add_argument("--duration-ms", type=int, default=700, help="GIF frame duration")
    add_trust_agent(parser)


def parse_indices(text: str) -> list[int]:
    """``"3,17,42"`` → [3, 17, 42] (a ValueError naming the bad entry otherwise)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"--indices takes dataset indices >= 0 separated by commas (e.g. 3,17,42), got {part!r}")
        out.append(int(part))
    if not out:
        raise ValueError("--indices names no image: give dataset indices separated by commas, e.g. 3,17,42")
    return out


def select(args: argparse.Namespace) -> tuple[str, list[str], list[int], str | None]:
    """(env id, agent names, dataset indices, title) from the arguments; a ValueError for a bad combination."""
    gallery = [args.wrong, args.right, args.results]
    if any(v is not None for v in gallery):
        if any(v is None for v in gallery):
            raise ValueError("--wrong, --right and --results go together: --wrong A --right B --results DIR draws "
                             "the images of DIR's benchmark where A answered wrongly and B rightly")
        if args.indices is not None:
            raise ValueError("--indices and --wrong/--right choose the images two ways: give one of them")
        from agents.benchmark.report.looks import gallery_indices

        indices, results = gallery_indices(args.results, args.wrong, args.right, args.n)
        env = args.env or results["env_id"]
        if env != results["env_id"]:
            raise ValueError(f"--env {env} is not the env of --results {args.results} ({results['env_id']}): "
                             "leave --env out")
        if not indices:
            raise ValueError(f"in {args.results}, no image has {args.wrong} wrong and {args.right} right: try "
                             f"--wrong {args.right} --right {args.wrong}")
        agent = args.agent or f"{args.wrong},{args.right}"
        title = f"{args.wrong} wrong, {args.right} right ({args.results})"
    else:
        if args.env is None:
            raise ValueError("--env is required (or --results DIR with --wrong/--right)")
        if args.agent is None:
            raise ValueError("--agent is required (or --wrong/--right with --results DIR)")
        env, agent, title = args.env, args.agent, None
        # --n >= 1 and --start >= 0: checked by gfnet_cli.main
        indices = parse_indices(args.indices) if args.indices is not None else \
            list(range(args.start, args.start + args.n))
    names = [a.strip() for a in agent.split(",") if a.strip()]
    if not names:
        raise ValueError("--agent names no agent")
    return env, names, indices, title


def run(args: argparse.Namespace) -> int:
    import_user_modules(args.imports)  # before any agent lookup: the user's code registers its agents
    from gfnet_cli.show import episode_looks_for, write_looks

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--out must end in .png or .gif, got {out}")
    if out.parent.exists() and not out.parent.is_dir():
        raise NotADirectoryError(f"--out {out}: {out.parent} is a file, not a folder")
    env, names, indices, title = select(args)
    # bad input (unknown agent, env kwarg, checkpoint, index) raises; gfnet_cli.main prints it in one line
    looks = episode_looks_for(names, env, indices, parse_env_kwargs(args.env_kwarg),
                              parse_agent_dirs(args.agent_dir), device=args.device, seed=args.seed,
                              trust_agent=args.trust_agent)
    write_looks(looks, names, out, duration_ms=args.duration_ms, title=title)
    print(f"wrote {out}")
    return 0
