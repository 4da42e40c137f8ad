"""The benchmarked images, found again for the report: the evaluation dataset and the names of its classes.

The benchmark hands its dataset to the report directly. ``gfnet report`` and ``gfnet compare --out`` load it from
the results' env arguments (:func:`load_images`) and check it against the protocol's dataset fingerprint
(:func:`agents.benchmark.merge.protocol_of`), so that looks are never drawn on other images than the ones
benchmarked (a ``dataset=`` object is not stored in ``results.json``: such a folder's report has no pictures).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MISSING_SIDE", "ReportImages", "load_images", "report_images"]

#: Side (pixels) of the grey square drawn for an image that cannot be read when the report is drawn.
MISSING_SIDE = 128


@dataclass
class ReportImages:
    """The evaluation images (``image_at``: dataset index → (S, S, 3) uint8) and the class names by label."""

    image_at: Callable[[int], np.ndarray]
    class_names: list[str]

    def name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else f"class {label}"


def report_images(env_id: str, dataset: Any) -> ReportImages:
    """:class:`ReportImages` of a dataset of task ``env_id`` (class names: :meth:`gfnet_env.tasks.Task.class_names`)."""
    from gfnet_env.data.image_folder import denormalizer_for
    from gfnet_env.tasks import get_task

    denorm = denormalizer_for(dataset)
    try:
        names = get_task(env_id).class_names(dataset)
    except KeyError:  # a task registered by code not imported here: the dataset's own names
        from gfnet_env.tasks import class_names_of

        names = class_names_of(dataset)

    def image_at(i: int) -> np.ndarray:
        try:
            return denorm(dataset[int(i)][0])
        except OSError as e:  # a file that cannot be read now (CorruptImageError): a grey square, not a lost report
            warnings.warn(f"report: image {i} cannot be drawn ({e}); a grey square stands for it", stacklevel=2)
            return np.full((MISSING_SIDE, MISSING_SIDE, 3), 128, dtype=np.uint8)

    return ReportImages(image_at, names)


def load_images(results: dict) -> tuple[ReportImages | None, str]:
    """The benchmarked images from ``results``' env arguments, or (None, why not) when they cannot be loaded or
    are not the benchmarked ones (their fingerprint differs from the protocol's)."""
    from gfnet_env.cache import dataset_fingerprint
    from gfnet_env.factory import load_task, shared_env_kwargs

    env_id = results.get("env_id", "")
    try:
        _, task_kwargs, _ = shared_env_kwargs(dict(results.get("env_kwargs") or {}), env_id)
        _, dataset = load_task(env_id, **task_kwargs)
    except Exception as e:  # noqa: BLE001 - any failure to find the images leaves the report without pictures
        return None, f"the benchmarked images could not be loaded ({type(e).__name__}: {str(e)[:200]})"
    expected = (results.get("protocol") or {}).get("dataset")
    if expected is not None and dataset_fingerprint(dataset) != expected:
        return None, ("the images the results' env arguments give now are not the benchmarked ones (their "
                      "fingerprint differs)")
    return report_images(env_id, dataset), ""
