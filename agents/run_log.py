"""The run log: everything a training run writes besides its weights, opened in one place and closed by one call.

Both trainers write through it, so they record and draw a run the same way:

* ``progress.csv``: one row per update, each flushed whole; a resumed run truncates the file to the rows of the
  updates it keeps (a torn last row, or rows of updates it redoes, are dropped) and appends after them;
* TensorBoard scalars (``tensorboard/`` under the run folder; SB3 writes its own through its logger instead);
* a tqdm progress bar of env steps (no ``rich`` needed);
* episode pictures (:mod:`agents.episode_images`, tag :data:`~agents.episode_images.TAG`): a policy's
  deterministic episodes on a few fixed evaluation images, the same images each time so they compare across
  the run, written to TensorBoard or to any ``write(image, step)`` (SB3's logger output).

Each piece is opened on demand (``open_*``) and can be closed on its own; :meth:`RunLog.close` (or leaving the
``with`` block) releases every piece still open, whether the run ended, failed or was interrupted by Ctrl-C,
so no file handle, event writer, bar or picture core outlives the run.

Example::

    with RunLog(out_dir) as log:
        log.open_tensorboard()
        log.open_csv(["batch", "loss"])
        log.open_progress(total=1000, desc="training")
        for batch in ...:
            log.write_row({"batch": batch, "loss": loss})
            log.add_scalars({"train/loss": loss}, step)
            log.advance(step, loss=f"{loss:.3f}")
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from feature_nets.files import atomic_write_text

__all__ = ["PROGRESS_FILE", "TENSORBOARD_DIR", "RunLog", "truncate_csv"]

#: The per-update table of a run folder.
PROGRESS_FILE = "progress.csv"
#: The TensorBoard folder of a run folder.
TENSORBOARD_DIR = "tensorboard"


def truncate_csv(path: Path, fields: Sequence[str], rows: int) -> None:
    """Keep the header and the whole rows 1..``rows`` of a per-update CSV (first column: the update count from
    1), rewritten atomically; a torn row (a crash or full disk mid-write) and the rows after ``rows`` are
    dropped, with a warning when fewer than ``rows`` whole rows are there."""
    fields = list(fields)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    kept = []
    if lines and next(csv.reader([lines[0]]), None) == fields:
        for line in lines[1:]:
            row = next(csv.reader([line]), [])
            if len(kept) == rows or len(row) != len(fields) or row[0] != str(len(kept) + 1):
                break
            kept.append(line)
    if len(kept) < rows:
        warnings.warn(f"{path}: {rows - len(kept)} of the {rows} resumed batches have no whole row", stacklevel=3)
    out = io.StringIO()
    csv.writer(out).writerow(fields)
    atomic_write_text(path, out.getvalue() + "".join(line + "\r\n" for line in kept))


class RunLog:
    """What one training run writes besides its weights (see the module docstring); a context manager.

    Args:
        out_dir: the run folder (``progress.csv`` and ``tensorboard/`` go there); None when only the progress
            bar and pictures written elsewhere are used.
    """

    def __init__(self, out_dir: str | Path | None = None) -> None:
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.writer = None  # torch SummaryWriter
        self.bar = None  # tqdm
        self._csv_file = None
        self._csv_writer: csv.DictWriter | None = None
        self._core = None  # the pictures' env core (owned: closed with the log)
        self._indices: list[int] = []
        self._write_image: Callable[[np.ndarray, int], None] | None = None
        self._deterministic = True

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _path(self, name: str) -> Path:
        if self.out_dir is None:
            raise ValueError(f"RunLog without out_dir has no {name}")
        return self.out_dir / name

    # --- TensorBoard scalars --------------------------------------------------------------------------------
    def open_tensorboard(self, purge_step: int | None = None) -> None:
        """Open the event writer of ``out_dir/tensorboard``; ``purge_step``: a resumed run's first step (events
        at or after it, written by the interrupted run, are hidden)."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self._path(TENSORBOARD_DIR)), purge_step=purge_step)

    def add_scalars(self, values: dict[str, float], step: int) -> None:
        """One TensorBoard scalar per ``tag: value`` at ``step`` (in the dict's order)."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    # --- progress.csv -----------------------------------------------------------------------------------------
    def open_csv(self, fields: Sequence[str], keep_rows: int | None = None, name: str = PROGRESS_FILE) -> None:
        """Open ``out_dir/name`` with columns ``fields``: a new file with its header, or, with ``keep_rows`` and an
        existing file (a resumed run), that file truncated to its first ``keep_rows`` whole rows
        (:func:`truncate_csv`) and appended to."""
        path = self._path(name)
        new = keep_rows is None or not path.exists()
        if not new:
            truncate_csv(path, fields, keep_rows)
        # never through a symlink planted under the name (it would write into the link's target): ELOOP instead
        self._csv_file = open(path, "w" if new else "a", newline="",  # noqa: SIM115 (closed by close())
                              opener=lambda p, flags: os.open(p, flags | getattr(os, "O_NOFOLLOW", 0), 0o666))
        self._csv_writer = csv.DictWriter(self._csv_file, fieldnames=list(fields))
        if new:
            self._csv_writer.writeheader()

    def write_row(self, row: dict[str, Any]) -> None:
        """Append ``row`` and flush it: only whole rows reach the file (a torn one is dropped on resume)."""
        self._csv_writer.writerow(row)
        self._csv_file.flush()

    # --- the progress bar -------------------------------------------------------------------------------------
    def open_progress(self, total: int, initial: int = 0, desc: str = "training") -> None:
        """A tqdm bar of env steps from ``initial`` (a resumed run's) to ``total``."""
        from tqdm.auto import tqdm

        self.bar = tqdm(total=int(total), initial=int(initial), desc=desc, unit="step", dynamic_ncols=True)

    def advance(self, step: int, **postfix: Any) -> None:
        """Move the bar to ``step`` env steps (if open), showing ``postfix`` (``name=value``) when given."""
        if self.bar is None:
            return
        self.bar.update(int(step) - self.bar.n)
        if postfix:
            self.bar.set_postfix(**postfix)

    def close_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # --- episode pictures -------------------------------------------------------------------------------------
    def open_pictures(self, core, n_images: int, write: Callable[[np.ndarray, int], None] | None = None,
                      deterministic: bool = True) -> None:
        """Draw pictures on the first ``n_images`` images of ``core`` (an evaluation core,
        :func:`agents.episode_images.evaluation_core`; the log closes it). ``write(image, step)`` receives each
        (H, W, 3) uint8 picture; by default it goes to this log's TensorBoard writer as
        :data:`~agents.episode_images.TAG`. ``deterministic``: the policy's mode, as evaluations use."""
        self._core = core
        self._indices = list(range(min(int(n_images), len(core.dataset))))
        self._write_image = write or self._add_image
        self._deterministic = deterministic

    def _add_image(self, image: np.ndarray, step: int) -> None:
        from .episode_images import TAG

        self.writer.add_image(TAG, image, step, dataformats="HWC")

    def picture(self, policy: Any, step: int) -> np.ndarray | None:
        """Draw ``policy``'s episodes (an agent or an ``obs -> actions`` function, :func:`episode_image`) and
        write the picture at ``step``; returns it (None when no pictures are open)."""
        from .episode_images import episode_image

        if self._core is None:
            return None
        image = episode_image(self._core, policy, self._indices, deterministic=self._deterministic)
        self._write_image(image, step)
        return image

    def close_pictures(self) -> None:
        """Close the pictures' core (idempotent; networks it shares with a training core stay with that core)."""
        core, self._core = self._core, None
        if core is not None:
            core.close()

    # --- all of it --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every piece still open: the CSV, the event writer, the bar, the pictures' core (idempotent).
        Each is closed even when closing another fails; the first error is raised afterwards."""
        error: BaseException | None = None
        for close in (self._close_csv, self._close_tensorboard, self.close_progress, self.close_pictures):
            try:
                close()
            except BaseException as e:  # noqa: BLE001 (re-raised below, after the others are closed)
                error = error or e
        if error is not None:
            raise error

    def _close_csv(self) -> None:
        f, self._csv_file, self._csv_writer = self._csv_file, None, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # a row torn by a full disk is dropped when resuming

    def _close_tensorboard(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
