"""Helpers shared by the sub-commands: ``--env-kwarg k=v`` and ``--agent-dir NAME=DIR`` parsing."""

from __future__ import annotations

import argparse
import ast
from typing import Any


def parse_value(text: str) -> Any:
    """``"7"`` → 7, ``"0.5"`` → 0.5, ``"true"`` → True, ``"none"`` → None, ``"[1, 2]"`` → [1, 2], else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_pairs(pairs: list[str] | None, what: str) -> list[tuple[str, str]]:
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"gfnet: {what} expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        if not k:
            raise SystemExit(f"gfnet: {what} expects KEY=VALUE, got {pair!r}")
        out.append((k.strip(), v))
    return out


def parse_env_kwargs(pairs: list[str] | None) -> dict[str, Any]:
    """``["split=train", "grid_size=5"]`` → ``{"split": "train", "grid_size": 5}``."""
    return {k: parse_value(v) for k, v in parse_pairs(pairs, "--env-kwarg")}


def parse_agent_dirs(pairs: list[str] | None) -> dict[str, list[str]]:
    """``["sb3-ppo=runs/a", "sb3-ppo=runs/b"]`` → ``{"sb3-ppo": ["runs/a", "runs/b"]}`` (each DIR one or more runs)."""
    out: dict[str, list[str]] = {}
    for k, v in parse_pairs(pairs, "--agent-dir"):
        out.setdefault(k, []).append(v)
    return out


def add_env_kwarg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env-kwarg", action="append", default=[], metavar="KEY=VALUE",
                        help="env argument, repeatable (e.g. split=train, checkpoint=PATH, data_root=DIR, max_steps=3, "
                             "reward=log_confidence_gain); values are parsed as Python literals when possible")


def add_agent_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent-dir", action="append", default=[], metavar="NAME=DIR",
                        help="trained agent NAME from DIR (the folder `gfnet train-agent --out` wrote, a weights "
                             "file, or a folder of seed sub-folders); repeat for several training seeds")


def raw_formatter(parser: argparse.ArgumentParser, doc: str, example: str) -> None:
    """Description from a module docstring's first paragraph, and an 'Example' epilog."""
    parser.description = doc.strip().split("\n\n")[0]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Example:\n" + example
