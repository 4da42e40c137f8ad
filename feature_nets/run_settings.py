"""The settings of a training run as recorded in JSON, and a resume with other settings: what differs, the refusal.

A resumed run must be the run that was saved: every command that resumes (``gfnet train-agent``, ``train-policy``,
``train-features``) compares the settings given now with the saved ones and refuses the differences in one line
(:func:`settings_refusal`), unless ``--force-settings`` applies them from the resumed point on, which the run then
records as ``forced_settings``.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["jsonable", "settings_changes", "settings_refusal"]


def settings_changes(saved: dict, now: dict, ignore=()) -> dict[str, tuple]:
    """``{setting: (saved, now)}`` for every setting of ``now`` that differs from ``saved`` (both as recorded in
    JSON: models and datasets passed as objects are not compared), except those in ``ignore``."""
    saved, now = jsonable(saved), jsonable(now)
    return {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now))
            if k not in ignore and k != "forced_settings" and saved.get(k) != now.get(k)}


def settings_refusal(changes: dict[str, tuple], what: str) -> ValueError:
    """The one-line refusal of a resume with other settings."""
    listed = "; ".join(f"{k}: {old!r} saved, {new!r} now" for k, (old, new) in changes.items())
    return ValueError(f"--resume with other settings than {what} ({listed}); resume with the saved settings, or "
                      "pass --force-settings to apply these from here on (it is recorded)")


def jsonable(obj):
    """``obj`` with everything JSON cannot hold (models, datasets, tensors) dropped or converted."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            j = jsonable(v)
            if j is not _DROP:
                out[str(k)] = j
        return out
    if isinstance(obj, (list, tuple)):
        return [x for x in (jsonable(v) for v in obj) if x is not _DROP]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return _DROP


_DROP = object()
