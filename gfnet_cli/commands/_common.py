"""Helpers shared by the sub-commands: ``--env-kwarg k=v`` and ``--agent-dir NAME=DIR`` parsing, and
``--import MODULE`` (user code that registers agents)."""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
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


def add_import(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE``, repeatable: user code that registers agents, imported before any agent lookup."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (repeatable): a dotted module name importable from the working "
                             "directory or sys.path, or a path to a .py file; its code registers agents with "
                             "agents.register(NAME, ...), which --agents/--agent can then name")


def _looks_like_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def _import_file(name: str) -> ModuleType:
    """The module of the ``.py`` file ``name``, executed once per process under a name unique to its path."""
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"--import {name}: no such file {path}")
    # a unique, valid module name per file: two files with the same stem do not replace each other, and the
    # same file imported twice (two CLI calls in one process) runs its registrations once, as `import` would
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"gfnet_user_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--import {name}: {path} is not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as `import` does, so that the module's classes can be pickled
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # a failed import leaves nothing behind, so that a fixed file is re-read
        raise
    return module


def _import_dotted(name: str) -> ModuleType:
    """The module of the dotted name ``name``, found on ``sys.path`` or in the working directory.

    The working directory is added for this import only: appended to ``sys.path`` (installed modules win, also
    for what the user's module imports) and removed right after, so that a stray ``matplotlib.py`` there is never
    imported later in the run (the benchmark imports matplotlib when it draws its plots)."""
    if not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"--import {name}: neither a dotted module name (my_pkg.my_agents) nor a .py file path")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except ImportError as e:
        # the named module (or a package above it) is missing: bad input. A missing module that the user's
        # code itself imports is a bug in that code, and keeps its traceback.
        missing = getattr(e, "name", None)
        if missing is not None and (name == missing or name.startswith(missing + ".")):
            raise ValueError(f"--import {name}: no module named {missing!r} in the working directory {cwd} or on "
                             "sys.path (pass a dotted module name importable from there, or a path to a .py "
                             "file)") from e
        raise
    finally:
        if added and cwd in sys.path:  # remove the entry this call appended (the last one equal to cwd)
            del sys.path[len(sys.path) - 1 - sys.path[::-1].index(cwd)]


def import_user_modules(names: list[str] | None) -> list[ModuleType]:
    """Import each ``--import`` module in order, running the user code that registers agents.

    A name ending in ``.py`` or holding a path separator is a file, imported by path; anything else is a dotted
    module name, imported from ``sys.path`` or the working directory (added after ``sys.path`` for that import
    only: a stray module there, e.g. ``matplotlib.py``, never shadows an installed one, during or after it).

    Raises:
        ValueError: a module or file that cannot be found (one line naming it and what was tried).
        Exception: whatever the user's module raises while it runs, with its traceback (a bug in that code).
    """
    modules = []
    for name in names or []:
        name = name.strip()
        if not name:
            raise ValueError("--import needs a module name or a .py file path")
        modules.append(_import_file(name) if _looks_like_path(name) else _import_dotted(name))
    return modules


def raw_formatter(parser: argparse.ArgumentParser, doc: str, example: str) -> None:
    """Description from a module docstring's first paragraph, and an 'Example' epilog."""
    parser.description = doc.strip().split("\n\n")[0]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Example:\n" + example
