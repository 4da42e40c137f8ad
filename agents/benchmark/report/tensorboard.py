"""The benchmark's results as TensorBoard logs (``gfnet benchmark --tensorboard DIR``): one run per agent,
``DIR/<agent>/`` (a named variant's ``:`` written ``_``), so TensorBoard overlays the agents.

Per agent:

* ``anytime/top1`` — top-1 (%) after each look, at step k (0 = the glance);
* ``anytime/madds_cumulative`` — multiply-adds per image spent by step k (the env's looks plus its decisions);
* ``budgeted/top1`` — the budgeted curve: top-1 (%) at step = mean multiply-adds per image (rounded), one
  point per threshold;
* ``summary/last_step_top1``, ``summary/mean_return`` — at step 0;
* ``episodes/looks`` (:data:`agents.episode_images.TAG`, step 0) — the agent's looks on the report's images
  (:func:`agents.episode_images.looks_figure`: class names, colour scale of p(true class)), drawn from the
  per-image records.

The folder is written whole and then put in place (a staging folder beside it, renamed; a previous ``DIR`` is
replaced), so TensorBoard never reads half of a run's logs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from feature_nets.extras import require

__all__ = ["check_tensorboard", "run_name", "write_tensorboard"]


def check_tensorboard() -> None:
    """Refuse ``--tensorboard`` before any work when TensorBoard is not installed (:class:`MissingExtraError`)."""
    require("torch.utils.tensorboard", "train", "the benchmark's TensorBoard logs")


def run_name(agent: str) -> str:
    """The TensorBoard run (sub-folder) of an agent: its name with characters a folder name cannot hold replaced."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in agent) or "_"


def write_tensorboard(folder: str | os.PathLike, results: dict, arrays: dict[str, np.ndarray] | None,
                      dataset: Any = None) -> Path:
    """Write the TensorBoard logs of ``results`` (and, with the per-image ``arrays`` and the evaluation
    ``dataset``, each agent's looks) into ``folder`` (see the module docstring); returns it."""
    from ...episode_images import TAG, figure_rgb, looks_figure
    from .images import report_images
    from .looks import has_looks, look_columns, looks_from_records, split_records

    SummaryWriter = require("torch.utils.tensorboard", "train", "the benchmark's TensorBoard logs").SummaryWriter
    folder = Path(folder)
    stage = folder.parent / f".{folder.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    records = split_records(arrays or {})
    images = report_images(results["env_id"], dataset) if dataset is not None and records else None
    columns = look_columns(len(arrays["image_index"]) if images is not None else 0)
    try:
        for name, entry in results["agents"].items():
            writer = SummaryWriter(str(stage / run_name(name)))
            try:
                cumulative = np.cumsum(entry.get("madds_per_step", []))
                for k, top1 in enumerate(entry["anytime_top1"]):
                    writer.add_scalar("anytime/top1", float(top1), k)
                    if k < len(cumulative):
                        writer.add_scalar("anytime/madds_cumulative", float(cumulative[k]), k)
                curve = entry.get("budgeted") or {}
                for madds, top1 in sorted(zip(curve.get("madds", []), curve.get("top1", []))):
                    writer.add_scalar("budgeted/top1", float(top1), int(round(madds)))
                writer.add_scalar("summary/last_step_top1", float(entry["anytime_top1"][-1]), 0)
                writer.add_scalar("summary/mean_return", float(entry["mean_return"]), 0)
                if images is not None and name in records and has_looks(records[name]):
                    looks = looks_from_records(records[name], columns, arrays["image_index"], arrays["target"],
                                               images.image_at, images.class_names)
                    writer.add_image(TAG, figure_rgb(looks_figure([looks], [name])), 0, dataformats="HWC")
            finally:
                writer.close()
        old = folder.parent / f".{folder.name}.old-{os.getpid()}"
        if folder.exists():
            os.replace(folder, old)
        os.replace(stage, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder
