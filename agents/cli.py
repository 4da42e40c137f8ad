"""The ``gfnet`` console script: one sub-command per module of :mod:`agents.commands`.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: (sub-command, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("train-agent", "agents.commands.train_agent", "train an agent (paper-ppo, sb3-*) on a GFNet env"),
    ("benchmark", "agents.commands.benchmark", "compare agents on the same images: tables, CSV, JSON, plots"),
    ("show", "agents.commands.show", "draw the patches agents choose (PNG or GIF)"),
    ("train-policy", "agents.commands.train_policy",
     "stage 2: train the paper's policy on a checkpoint's frozen networks and write it back"),
    ("train-features", "agents.commands.train_features", "stages 1 and 3: train the encoders and classifier"),
    ("train-default-task", "agents.commands.train_default_task",
     "train the embedded default task's GFNet from scratch (CPU)"),
]

EXAMPLE = """Example:
  gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 --agents random,center,saliency,oracle,paper-ppo --out results/
  gfnet train-agent --agent sb3-ppo --env GFNet-ClutteredFashionMNIST-v0 --steps 200000 --out runs/sb3_ppo
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent paper-ppo --n 8 --out looks.png
  gfnet COMMAND --help    (each sub-command's options and examples)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gfnet",
        description="GFNet (Glance and Focus Networks) as a research instrument: train patch-selection agents, "
                    "benchmark them fairly, draw where they look, and train GFNet's own networks.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module, help_text in COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(command, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 1
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
