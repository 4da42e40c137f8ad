"""Batched JPEG decoding with ``torchvision.io.decode_jpeg`` (on the GPU when asked), PIL as the fallback.

PIL decodes and resizes an ImageNet JPEG in several milliseconds per core; ``torchvision.io.decode_jpeg`` takes
a list of encoded files and decodes them as one batch — with ``device="cuda"`` on the GPU (nvJPEG) — and the
resize and centre crop then run where the pixels are. This module does that for the evaluation transform
(Resize(R) → CenterCrop(S) → ToTensor → Normalize):

* :func:`decode_jpegs`: encoded bytes → list of uint8 (3, H, W) tensors on ``device`` (None where the decoder
  rejects a file: progressive/CMYK/corrupt/not a JPEG); a failing batch is retried file by file.
* :func:`resize_crop`: uint8 (3, H, W) → uint8 (3, S, S), antialiased tensor resize of the shorter side to R then
  the centre S × S crop (torchvision's tensor kernels; the same code on CPU and GPU).
* :func:`normalize_uint8`: uint8 (..., 3, S, S) → float32, as ``ToTensor`` + ``Normalize`` do it.
* :class:`JpegDecoder`: all three for a list of files, with PIL (the transform itself) for files the decoder
  rejects.
* :func:`split_normalize`, :func:`pil_pixels`, :class:`FolderRawItems`: a transform ``Compose([PIL steps…,
  ToTensor(), Normalize])`` taken apart so an image's uint8 pixels can be handed out and normalised later, in a
  batch on the env's device (the raw item protocol of :mod:`gfnet_env.data.loading`).
  ``ImageFolderDataset(..., decoder="torchvision")`` decodes per item on the CPU this way; the env's
  ``jpeg_decoder="torchvision"`` decodes a whole reset's files at once on its device (:mod:`gfnet_env.data.loading`).

The decoders are not bit-identical: libjpeg-turbo (PIL) and torchvision's libjpeg / nvJPEG may differ in IDCT
and chroma upsampling, and the tensor resize is not PIL's. tests/gfnet_env/test_decoding.py states the measured difference.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torchvision import io as tvio
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F2

__all__ = ["FolderRawItems", "JpegDecoder", "decode_jpegs", "decode_resize_crop", "eval_geometry", "normalize_uint8",
           "pil_pixels", "read_bytes", "resize_crop", "split_normalize"]


def read_bytes(path: str | os.PathLike) -> torch.Tensor:
    """The file's bytes as a uint8 1-D tensor (what ``decode_jpeg`` takes)."""
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def decode_jpegs(data: Sequence[torch.Tensor], device: str | torch.device = "cpu") -> list[torch.Tensor | None]:
    """Decode encoded JPEGs (uint8 1-D tensors) to RGB uint8 (3, H, W) tensors on ``device``, in one batch.

    Returns None for each file the decoder rejects (the caller falls back to PIL)."""
    device = torch.device(device)
    if not data:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(tvio.decode_jpeg(list(data), mode=tvio.ImageReadMode.RGB, device=device))
        except (RuntimeError, ValueError):
            out: list[torch.Tensor | None] = []
            for d in data:  # find which file broke the batch
                try:
                    out.append(tvio.decode_jpeg(d, mode=tvio.ImageReadMode.RGB, device=device))
                except (RuntimeError, ValueError):
                    out.append(None)
            return out


def decode_resize_crop(data: torch.Tensor, resize: int, crop: int, interpolation: InterpolationMode,
                       device: str | torch.device = "cpu") -> torch.Tensor | None:
    """One encoded JPEG → uint8 (3, crop, crop) on ``device`` (:func:`decode_jpegs`, then :func:`resize_crop`), or
    None when the decoder rejects the file."""
    image = decode_jpegs([data], device)[0]
    return None if image is None else resize_crop(image, resize, crop, interpolation)


def resize_crop(image: torch.Tensor, resize: int, crop: int, interpolation: InterpolationMode) -> torch.Tensor:
    """uint8 (3, H, W) → uint8 (3, crop, crop): shorter side to ``resize`` (antialiased), then the centre crop."""
    image = F2.resize(image, [resize], interpolation=interpolation, antialias=True)
    return F2.center_crop(image, [crop, crop])


def normalize_uint8(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (..., 3, S, S) → float32 ``(x / 255 − mean) / std``, the same float32 operations, in the same order,
    as ``ToTensor`` followed by ``Normalize`` (so results are bit-identical to them on the CPU)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=pixels.device)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32, device=pixels.device)[:, None, None]
    return pixels.to(torch.float32).div(255).sub_(m).div_(s)


def eval_geometry(transform: Any) -> tuple[int, int, InterpolationMode, tuple, tuple] | None:
    """(R, S, interpolation, mean, std) of ``Compose([Resize(R), CenterCrop(S), ToTensor(), Normalize(mean, std)])``,
    or None when the transform has another form (then only PIL can apply it)."""
    steps = list(getattr(transform, "transforms", []))
    kinds = (transforms.Resize, transforms.CenterCrop, transforms.ToTensor, transforms.Normalize)
    if len(steps) != 4 or not all(isinstance(s, k) for s, k in zip(steps, kinds)):
        return None
    resize, crop, _, norm = steps
    r = resize.size if isinstance(resize.size, int) else (resize.size[0] if len(resize.size) == 1 else None)
    c = crop.size[0] if isinstance(crop.size, (tuple, list)) else crop.size
    if r is None or resize.max_size is not None:
        return None
    return int(r), int(c), resize.interpolation, tuple(norm.mean), tuple(norm.std)


def split_normalize(transform: Any) -> tuple[Callable, tuple[float, ...], tuple[float, ...]] | None:
    """``Compose([*steps, ToTensor(), Normalize(mean, std)])`` → (``Compose(steps)``: PIL image → PIL image, mean,
    std), with mean and std as per-channel float tuples; None for a transform of another form."""
    steps = list(getattr(transform, "transforms", []))
    if (len(steps) < 2 or not isinstance(steps[-2], transforms.ToTensor)
            or not isinstance(steps[-1], transforms.Normalize)):
        return None
    norm = steps[-1]
    mean = tuple(float(x) for x in torch.as_tensor(norm.mean).reshape(-1))
    std = tuple(float(x) for x in torch.as_tensor(norm.std).reshape(-1))
    return transforms.Compose(steps[:-2]), mean, std


def pil_pixels(image: Any) -> torch.Tensor:
    """A PIL RGB image (H×W) → uint8 (3, H, W) tensor: the pixels ``ToTensor`` would divide by 255.

    The result is a channels-first *view* of the (H, W, 3) array: the loader threads call this, and a torch op
    there (``.contiguous()``) would give each thread its own OpenMP team, which measurably slowed the networks in
    the same process afterwards. ``torch.stack`` of a reset's items makes the copy, in the caller."""
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)


class FolderRawItems:
    """The uint8 half of the env's raw item protocol (:mod:`gfnet_env.data.loading`) for ``ImageFolderDataset``, which
    mixes it in: it reads the dataset's ``transform``, ``decoder``, ``samples`` and ``load_image``."""

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) when the transform ends in ``ToTensor(), Normalize`` (then :meth:`uint8_item` works)."""
        split = split_normalize(self.transform)
        return None if split is None else (split[1], split[2])

    @property
    def jpeg_geometry(self) -> tuple[int, int, InterpolationMode] | None:
        """(R, S, interpolation) of an evaluation transform (the env may decode ``encoded_item``), else None."""
        geometry = eval_geometry(self.transform)
        return None if geometry is None else geometry[:3]

    def uint8_item(self, index: int) -> tuple[torch.Tensor, int]:
        """(uint8 (3, S, S) pixels before the transform's ``ToTensor`` + ``Normalize``, label).

        With ``decoder == "torchvision"`` and the evaluation transform the file is decoded by torchvision's CPU
        decoder and resized with tensor kernels (≤ 1 uint8 level from PIL); otherwise, and for files that decoder
        rejects, PIL runs the transform's steps before ``ToTensor`` (bit-identical to the transform).

        Raises:
            ValueError: the transform does not end in ``ToTensor(), Normalize(...)``.
            CorruptImageError: (from ``load_image``) PIL cannot decode the file either.
        """
        split = split_normalize(self.transform)
        if split is None:
            raise ValueError(f"uint8 items need a transform Compose([..., ToTensor(), Normalize(...)]); got "
                             f"{self.transform!r}")
        path, label = self.samples[index]
        geometry = self.jpeg_geometry
        if self.decoder == "torchvision" and geometry is not None:
            try:
                pixels = decode_resize_crop(read_bytes(path), *geometry)
            except OSError:  # unreadable file: PIL's path below names it as CorruptImageError
                pixels = None
            if pixels is not None:
                return pixels, label
        return pil_pixels(split[0](self.load_image(index))), label


class JpegDecoder:
    """The evaluation transform of many JPEG files at once with torchvision's decoder, PIL where it fails.

    Args:
        transform: ``Compose([Resize(R), CenterCrop(S), ToTensor(), Normalize])`` (``eval_transform``'s form).
        pil_fallback: ``path -> float32 (3, S, S)``, the PIL path for files the decoder rejects (needed by
            :meth:`__call__` only; :meth:`pixels` returns None for them).
        device: where to decode, resize and normalise (``"cuda"``: nvJPEG on the GPU).

    Raises:
        ValueError: the transform is not of that form.
    """

    def __init__(self, transform: Any, pil_fallback: Callable[[str], torch.Tensor] | None = None,
                 device: str | torch.device = "cpu"):
        geometry = eval_geometry(transform)
        if geometry is None:
            raise ValueError("the torchvision decoder supports Compose([Resize(R), CenterCrop(S), ToTensor(), "
                             f"Normalize]) (the evaluation transform) only; got {transform!r}")
        self.resize, self.size, self.interpolation, self.mean, self.std = geometry
        self.pil_fallback = pil_fallback
        self.device = torch.device(device)
        self.fallbacks = 0  #: files decoded by PIL because torchvision's decoder rejected them

    def pixels(self, paths: Sequence[str]) -> list[torch.Tensor | None]:
        """uint8 (3, S, S) per file on the decoder's device; None where the JPEG decoder rejected the file."""
        data = [read_bytes(p) for p in paths]
        return [None if img is None else resize_crop(img, self.resize, self.size, self.interpolation)
                for img in decode_jpegs(data, self.device)]

    def __call__(self, paths: Sequence[str]) -> torch.Tensor:
        """float32 (B, 3, S, S) normalised images of ``paths`` on the decoder's device."""
        out = []
        for path, px in zip(paths, self.pixels(paths)):
            if px is None:
                if self.pil_fallback is None:
                    raise ValueError(f"torchvision's decoder rejected {path} and no PIL fallback was given")
                self.fallbacks += 1
                out.append(self.pil_fallback(path).to(self.device))
            else:
                out.append(normalize_uint8(px, self.mean, self.std))
        return torch.stack(out)
