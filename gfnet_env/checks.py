"""The checked boundary of user input to the environment: dataset items, integers, ``options``, memory.

Each check raises an error whose message names the problem and the fix; none changes a valid input.

* :func:`check_sample` / :func:`check_image_dataset` — dataset items (type, dtype, shape, label, finiteness);
* :func:`check_int` — integer arguments (``num_envs``, image indices; bools and floats such as 1.7 are refused);
* :func:`check_option_keys` — the keys of ``reset(options=...)``;
* :func:`check_buffer_memory` — refuse ``num_envs`` whose per-episode buffers cannot fit, before allocating.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from feature_nets.files import host_available_memory

__all__ = ["check_buffer_memory", "check_image_dataset", "check_int", "check_option_keys", "check_sample"]


def _is_int_label(label: Any) -> bool:
    if isinstance(label, bool):
        return False
    if isinstance(label, (int, np.integer)):
        return True
    if isinstance(label, torch.Tensor) and label.ndim == 0 and not label.is_floating_point() \
            and label.dtype != torch.bool:
        return not label.is_complex()
    return False


def check_sample(image: Any, label: Any, where: str, image_size: int | None = None,
                 num_classes: int | None = None, finite: bool = True) -> tuple[torch.Tensor, int]:
    """Check one dataset item and return it as (float tensor, int label). Cheap: no copy of the image.

    Args:
        image, label: the item.
        where: how messages name it (``"dataset[17]"``).
        image_size: S, when the image must be (3, S, S).
        num_classes: when the label must be in [0, num_classes).
        finite: also check that no pixel is NaN or ±inf (one pass over the image).

    Labels must be integers (int, numpy integer, 0-d integer tensor): float labels are refused, integral ones
    such as 3.0 too, because a float label usually means the wrong column was passed. Images must be floating
    point: a uint8 image holds raw 0–255 pixels, not the normalised values the networks were trained on.

    Raises:
        ValueError: the message says what was found and how to fix it.
    """
    shape = f"(3, {image_size}, {image_size})" if image_size else "(3, S, S)"
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{where}[0] (the image) is a {type(image).__name__}, not a torch.Tensor; each sample must be "
                         f"(float tensor {shape}, int label) (add a transform ending in ToTensor/Normalize)")
    if not image.is_floating_point():
        hint = ("raw 0–255 pixels: convert to float and normalise them as the checkpoint was trained (e.g. "
                "ToTensor() then Normalize(IMAGENET_MEAN, IMAGENET_STD))") if image.dtype == torch.uint8 else \
            "images must be float tensors, normalised as the checkpoint was trained"
        raise ValueError(f"{where}[0] (the image) has dtype {image.dtype}: {hint}")
    if image_size is not None and tuple(image.shape) != (3, image_size, image_size):
        raise ValueError(f"{where}[0] (the image) has shape {tuple(image.shape)}; each image must be a float tensor "
                         f"of shape {shape} (resize/crop it to the checkpoint's image size)")
    if finite and not bool(torch.isfinite(image).all()):
        raise ValueError(f"{where}[0] (the image) contains NaN or infinite values; fix the data or the transform "
                         "that produced them (they would make every reward NaN)")
    if not _is_int_label(label):
        desc = f"a {type(label).__name__}" + (f" {tuple(label.shape)} {label.dtype}" if isinstance(label, torch.Tensor)
                                             else f" ({label!r:.40})")
        raise ValueError(f"{where}[1] (the label) is {desc}; labels must be integer class indices (int, numpy integer "
                         "or 0-d integer tensor). Float labels are refused, even integral ones such as 3.0: cast "
                         "them with int() in the dataset if they are class indices.")
    label = int(label)
    if num_classes is not None and not 0 <= label < num_classes:
        raise ValueError(f"{where}[1] (the label) is {label}, outside the checkpoint's classes 0..{num_classes - 1}")
    return image, label


def check_image_dataset(dataset: Any, image_size: int, num_classes: int | None = None) -> None:
    """Check that ``dataset[0]`` is ``(float tensor (3, S, S), int label)`` with ``S = image_size``, finite pixels
    and (when ``num_classes`` is given) a label in [0, num_classes); see :func:`check_sample`.

    Used for user datasets passed to the environment as ``dataset=``; the env's loader checks every later
    item's type, dtype and label, and the core checks each batch for NaN/inf.

    Raises:
        ValueError: the dataset is empty, or its first sample has the wrong structure, type, dtype, shape, label
            or NaN/inf pixels; the message says what was found and what is expected.
    """
    expected = (f"each sample must be (image, label) with image a float tensor of shape (3, {image_size}, "
                f"{image_size}) and label an int")
    try:
        n = len(dataset)
    except TypeError:
        raise ValueError(f"dataset {type(dataset).__name__} has no len(); {expected}") from None
    if n == 0:
        raise ValueError(f"dataset {type(dataset).__name__} is empty")
    sample = dataset[0]
    if not isinstance(sample, (tuple, list)) or len(sample) != 2:
        kind = f"a {type(sample).__name__}" + (f" of length {len(sample)}" if isinstance(sample, (tuple, list)) else "")
        raise ValueError(f"dataset[0] is {kind}; {expected}")
    check_sample(sample[0], sample[1], "dataset[0]", image_size, num_classes)


def check_int(value: Any, name: str, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an int if it is an integer within [minimum, maximum] (int, numpy integer or 0-d integer tensor).

    Bools, floats (even 2.0: an index or a count is never fractional) and strings such as ``"4"`` are refused.

    Raises:
        TypeError: not an integer; ValueError: out of range. Messages name ``name`` and add ``hint``.
    """
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r:.60} ({type(value).__name__}){hint}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be {bounds}, got {value}{hint}")
    return int(value)


def check_option_keys(options: Any, valid: tuple[str, ...], where: str = "reset") -> dict:
    """``options`` of ``reset`` as a dict (None → {}); unknown keys raise a ``ValueError`` naming the valid ones."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"{where}(options=...) must be a dict or None, got {type(options).__name__}")
    unknown = sorted(set(options) - set(valid), key=str)
    if unknown:
        import difflib

        close = [m for k in unknown for m in difflib.get_close_matches(str(k), valid, n=1)]
        raise ValueError(f"unknown {where} option(s) {unknown}; valid keys: {list(valid)}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    return options


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, or the host's MemAvailable (None when unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        return host_available_memory()
    except RuntimeError:
        return None


def check_buffer_memory(num_envs: int, per_env_bytes: int, device: torch.device, what: str) -> None:
    """Refuse ``num_envs`` when the buffers (``per_env_bytes`` each, described by ``what``) exceed free memory.

    Raises:
        ValueError: with the estimate, the free memory and the largest ``num_envs`` that fits.
    """
    free = available_memory(device)
    need = num_envs * per_env_bytes
    if free is not None and need > free:
        raise ValueError(
            f"num_envs={num_envs} needs about {_size(need)} for its per-episode buffers ({_size(per_env_bytes)} per "
            f"env: {what}), but only {_size(free)} is free on {device}. Use fewer envs (at most about "
            f"{max(1, free // per_env_bytes)}).")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_slots(slots, num_envs: int) -> np.ndarray:
    """``slots`` as distinct in-range int64 slot indices of a batch of ``num_envs`` (a ``ValueError`` naming the
    problem otherwise)."""
    idx = np.asarray(slots)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise ValueError(f"slots must be a non-empty 1-D array of slot indices, got {slots!r:.100}")
    idx = idx.astype(np.int64)
    if idx.min() < 0 or idx.max() >= num_envs or np.unique(idx).size != idx.size:
        raise ValueError(f"slots must be distinct indices in [0, {num_envs - 1}], got {idx.tolist()[:20]}")
    return idx
