"""Trained agents on disk: the ``agent.json`` that describes a training run's folder, and loading from it.

A trained agent's folder holds ``agent.json`` (``{"agent": name, "file": weights file, "env_kwargs": {...}}``)
next to its weights; :func:`load_agent` reads it, :func:`trained_paths` finds every trained copy under the
folders given to ``--agent-dir`` (a folder of seed sub-folders counts as several copies).

:func:`run_state` tells what a training folder holds: nothing yet, a finished run (``agent.json`` and no
:data:`UNFINISHED` marker) or an unfinished one. ``gfnet train-agent`` never starts over a folder that holds a run
unless asked (``--resume`` continues it, ``--overwrite`` replaces it: :func:`clear_run`), and writes the marker only
once the trainer has checked its inputs (the ``on_start`` hook of the trainers, called just before their first
write into the folder), never into a finished folder that ``--resume`` continues: its agent stays usable.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path

from feature_nets.files import atomic_write_text
from feature_nets.run_settings import jsonable, settings_refusal
from feature_nets.run_settings import settings_changes as _settings_changes

from .base import Agent, PathLike
from .registry import factory_of

__all__ = ["AGENT_JSON", "UNFINISHED", "clear_run", "jsonable", "load_agent", "mark_finished", "mark_unfinished",
           "check_agent_json", "read_agent_json", "run_state", "settings_changes", "settings_refusal", "trained_paths", "write_agent_json"]

#: Name of the file that describes a trained agent inside its folder.
AGENT_JSON = "agent.json"
#: Marker file in a training folder whose run has not finished (written at the start, removed at the end).
UNFINISHED = "UNFINISHED"
_UNFINISHED_TEXT = "This training run has not finished."


def mark_unfinished(folder: PathLike, resume_hint: str) -> Path:
    """Mark ``folder`` as holding an unfinished training run (atomically); ``resume_hint`` says how to go on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / UNFINISHED, f"{_UNFINISHED_TEXT} {resume_hint}\n")


def mark_finished(folder: PathLike) -> None:
    """Remove the :data:`UNFINISHED` marker of ``folder`` (after its ``agent.json`` is written)."""
    (Path(folder) / UNFINISHED).unlink(missing_ok=True)


def run_state(folder: PathLike) -> str:
    """What a training folder holds: ``"new"`` (missing, or neither ``agent.json`` nor the :data:`UNFINISHED`
    marker), ``"finished"`` (``agent.json`` and no marker) or ``"unfinished"`` (the marker)."""
    folder = Path(folder)
    if (folder / UNFINISHED).exists():
        return "unfinished"
    if (folder / AGENT_JSON).exists():
        return "finished"
    return "new"


def clear_run(folder: PathLike, inputs=()) -> None:
    """Delete everything in the training folder ``folder`` but its lock (``.lock``) and the ``inputs`` of the new
    run that lie inside it (a checkpoint the command reads, say): what ``--overwrite`` does to the run it replaces,
    so that none of its checkpoints is resumed later. Symlinks are removed, never followed."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    kept = []
    for value in inputs:
        if isinstance(value, (str, os.PathLike)) and str(value):
            try:
                kept.append(Path(value).resolve())
            except (OSError, RuntimeError, ValueError):
                pass
    for entry in folder.iterdir():
        real = entry.resolve()
        if entry.name == ".lock" or any(k == real or real in k.parents for k in kept):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def _refuse_unfinished(name: str, folder: Path) -> None:
    marker = folder / UNFINISHED
    if marker.exists():
        hint = marker.read_text(errors="replace").strip()
        raise ValueError(f"{name} in {folder}: the training run in this folder has not finished "
                         f"({UNFINISHED} marker). {hint.removeprefix(_UNFINISHED_TEXT).strip()}")


def load_agent(name: str | None, path: PathLike, device: str = "auto", trust_agent: bool = False) -> Agent:
    """A trained agent from its folder (with ``agent.json``) or weights file.

    Args:
        name: registry name, or None to take it from ``agent.json``.
        path: the folder ``learn`` wrote, or the weights file itself.
        device: torch device.
        trust_agent: ``True`` (the boolean) lets a loader unpickle the file fully, which may run code; only for
            files you trust (``--trust-agent``). Passed to loaders that take it (SB3 agents); paper-ppo files
            hold tensors only and are always read safely.
    """
    if not isinstance(trust_agent, bool):
        raise TypeError(f"trust_agent must be True or False, got {trust_agent!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trained agent at {path}: the folder or file does not exist")
    if path.is_dir():
        _refuse_unfinished(name or "agent", path)
    meta = read_agent_json(path)
    if name is None:
        if meta is None:
            raise ValueError(f"{path} has no {AGENT_JSON}; pass the agent name explicitly")
        name = meta["agent"]
    factory = factory_of(name)
    loader = getattr(factory, "load", None)
    if loader is None:
        raise ValueError(f"agent {name!r} cannot be loaded from a file")
    target = path
    if path.is_dir():
        if meta is None or "file" not in meta:
            raise FileNotFoundError(
                f"{path} is a folder without {AGENT_JSON}; point at the folder `gfnet train-agent --out` wrote, "
                "or at the weights file itself"
            )
        target = path / meta["file"]
    if "trust_agent" in inspect.signature(loader).parameters:
        return loader(target, device=device, trust_agent=trust_agent)
    return loader(target, device=device)


def trained_paths(name: str, paths) -> list[Path]:
    """Every trained copy under the given folders/files: a folder with agent.json, a weights file, or a folder
    whose sub-folders hold such copies (one per training seed)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"--agent-dir {name}={p}: no such file or folder")
        if p.is_dir():
            _refuse_unfinished(name, p)
        if p.is_file() or (p / AGENT_JSON).exists():
            out.append(p)
            continue
        for s in p.iterdir():
            if s.is_dir():
                _refuse_unfinished(name, s)
        subs = sorted(s for s in p.iterdir() if s.is_dir() and (s / AGENT_JSON).exists())
        if not subs:
            raise FileNotFoundError(f"--agent-dir {name}={p}: neither {AGENT_JSON} nor seed sub-folders holding one; "
                                    f"point at the folder `gfnet train-agent --agent {name} --out DIR` wrote")
        out.extend(subs)
    return out


def read_agent_json(path: PathLike) -> dict | None:
    """``agent.json`` of a trained agent's folder (or of the folder holding a weights file), or None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    f = folder / AGENT_JSON
    if not f.exists():
        return None
    try:
        meta = json.loads(f.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{f} is not readable JSON ({' '.join(str(e).split())[:120]}); restore the {AGENT_JSON} the "
                         "training run wrote, or retrain") from None
    check_agent_json(meta, f)
    return meta


def check_agent_json(meta, path) -> None:
    """What ``agent.json`` must hold: an object whose ``agent`` is a name and ``file`` the weights file's name in
    the folder (a ``ValueError`` naming the entry otherwise: ``"file": 7`` used to end in "unsupported operand
    type(s) for /")."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: {what}; it should read {{\"agent\": NAME, \"file\": WEIGHTS_FILE, ...}} as "
                          "`gfnet train-agent` writes it: restore that file, or retrain")

    if not isinstance(meta, dict):
        raise bad(f"holds a {type(meta).__name__}, not an object")
    if "agent" in meta and not (isinstance(meta["agent"], str) and meta["agent"]):
        raise bad(f"'agent' must be an agent name, got {meta['agent']!r:.40}")
    if "file" in meta:
        file = meta["file"]
        if not (isinstance(file, str) and file.strip()):
            raise bad(f"'file' must be the name of the weights file in the folder, got {file!r:.60}")


def write_agent_json(folder: PathLike, name: str, file: str, **extra) -> Path:
    """Write ``agent.json`` describing the agent saved as ``folder/file`` (atomically)."""
    text = json.dumps({"agent": name, "file": file, **jsonable(extra)}, indent=2, sort_keys=True)
    return atomic_write_text(Path(folder) / AGENT_JSON, text)


#: Settings a resumed run may change without --force-settings: the total it trains for.
RESUMABLE_CHANGES = ("steps",)


def settings_changes(saved: dict, now: dict, ignore=RESUMABLE_CHANGES) -> dict[str, tuple]:
    """:func:`feature_nets.run_settings.settings_changes` that lets a resumed agent train for another total."""
    return _settings_changes(saved, now, ignore)
