"""The benchmark's report: ``report.html``, one self-contained page of a results folder (:mod:`.page`), written by
every ``gfnet benchmark`` and ``gfnet compare --out`` (staged with the other files,
:meth:`agents.benchmark.results.ResultsFolder.write`) and again by ``gfnet report DIR`` (:func:`report_folder`,
e.g. with another pair for the failure gallery).

Everything is drawn from the folder's files — ``results.json``, the plots, ``per_image.npz`` with each agent's
looks (:mod:`.looks`) — and the benchmarked images (:mod:`.images`): no agent runs again.
:mod:`.tensorboard` writes the same results as TensorBoard logs (``gfnet benchmark --tensorboard DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from feature_nets.files import atomic_write_text

from .images import ReportImages, load_images, report_images
from .looks import (
    LOOKS_IMAGES,
    Gallery,
    default_pair,
    failure_gallery,
    has_looks,
    look_columns,
    look_records,
    looks_from_records,
    split_records,
)
from .page import build_page

__all__ = ["GALLERY_IMAGES", "LOOKS_IMAGES", "REPORT_FILE", "Gallery", "ReportImages", "default_pair",
           "failure_gallery", "has_looks", "look_columns", "look_records", "looks_from_records", "report_folder",
           "split_records",
           "write_report"]

#: The report's file name in a results folder.
REPORT_FILE = "report.html"
#: Images shown per side of the failure gallery (default).
GALLERY_IMAGES = 8


def write_report(folder: str | Path, results: dict, arrays: dict[str, np.ndarray] | None, images: Any = None,
                 wrong: str | None = None, right: str | None = None, gallery_images: int = GALLERY_IMAGES) -> Path:
    """Write ``folder/report.html`` (atomically) from ``results``, the per-image ``arrays`` and the plots in
    ``folder``.

    Args:
        images: the evaluation dataset, or :class:`ReportImages`; None: loaded from the results' env arguments
            (:func:`agents.benchmark.report.images.load_images`), else the page says why it has no pictures.
        wrong, right: the failure gallery's pair (default: :func:`default_pair`, the best agent vs the reference).
        gallery_images: images per side of the gallery.

    Raises:
        ValueError: ``wrong`` / ``right`` are not benchmarked agents (or only one of them is given).
    """
    from ..tables import markdown_table

    folder = Path(folder)
    records = {n: r for n, r in split_records(arrays or {}).items() if n in results.get("agents", {})}
    if (wrong is None) != (right is None):
        raise ValueError("give both --wrong AGENT and --right AGENT (or neither: the best agent vs the reference)")
    pair = (wrong, right) if wrong is not None else default_pair(results)
    gallery = None
    if pair is not None and records:
        if (pair[0] in records and pair[1] in records) or wrong is not None:  # a pair asked for: checked
            gallery = failure_gallery(records, pair[0], pair[1], gallery_images)
    reason = "the folder holds no per-image records" if not records else ""
    if records and images is None:
        images, reason = load_images(results)
    elif images is not None and not isinstance(images, ReportImages):
        images = report_images(results["env_id"], images)
    columns = look_columns(len(arrays["image_index"]) if arrays is not None and "image_index" in arrays else 0)
    plots = {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
    page = build_page(results, arrays if records else None, records, plots, images, reason, gallery, columns,
                      markdown_table(results))
    return atomic_write_text(folder / REPORT_FILE, page)


def report_folder(folder: str | Path, wrong: str | None = None, right: str | None = None,
                  gallery_images: int = GALLERY_IMAGES) -> Path:
    """Write ``report.html`` into a benchmark (or ``gfnet compare --out``) folder from its files, under the
    folder's lock (``gfnet report``); returns its path."""
    from feature_nets.folders import OutputFolder

    from ..merge import read_per_image, read_results

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: give a `gfnet benchmark --out` folder")
    results = read_results(folder)
    arrays: dict[str, np.ndarray] = {}
    if (folder / "per_image.npz").is_file():
        image_index, records = read_per_image(folder)
        with np.load(folder / "per_image.npz", allow_pickle=False) as data:
            target = data["target"] if "target" in data.files else None
        arrays = {"image_index": image_index, **({"target": target} if target is not None else {})}
        arrays.update({f"{n}/{k}": v for n, r in records.items() for k, v in r.items()})
    claimed = OutputFolder(folder, "report").claim()  # the lock every writer of a results folder takes
    try:
        return write_report(folder, results, arrays or None, wrong=wrong, right=right, gallery_images=gallery_images)
    finally:
        claimed.release()
