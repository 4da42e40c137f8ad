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
  rejects. ``ImageFolderDataset(..., decoder="torchvision")`` uses it per item on the CPU.

The decoders are not bit-identical: libjpeg-turbo (PIL) and torchvision's libjpeg / nvJPEG may differ in IDCT
and chroma upsampling, and the tensor resize is not PIL's. tests/test_decoding.py states the measured difference.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence

import torch
from torchvision import io as tvio
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F2

__all__ = ["JpegDecoder", "decode_jpegs", "eval_geometry", "normalize_uint8", "read_bytes", "resize_crop"]


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
