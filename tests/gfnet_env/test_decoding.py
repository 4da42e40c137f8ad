"""torchvision's batched JPEG decoder against the PIL path: same labels, pixels within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gfnet_env.data.image_folder import IMAGENET_STD, ImageFolderDataset, eval_transform, train_transform
from gfnet_env.data.decoding import JpegDecoder, decode_jpegs, eval_geometry, normalize_uint8, read_bytes
from helpers import MAX_LEVELS, MEAN_LEVELS, write_jpegs
from helpers import tiny_model


@pytest.fixture()
def folder(tmp_path):
    write_jpegs(tmp_path / "val", classes=2, per_class=5, size=(83, 61))
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(tmp_path / "val" / "c1" / "zz.png")  # not a JPEG
    return tmp_path / "val"


def test_torchvision_decoder_matches_pil_within_tolerance(folder):
    cfg = tiny_model().spec.config
    pil = ImageFolderDataset(folder, eval_transform(cfg))
    tv = ImageFolderDataset(folder, eval_transform(cfg), decoder="torchvision")
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    worst, means = 0.0, []
    for i in range(len(pil)):
        a, ya = pil[i]
        b, yb = tv[i]
        assert ya == yb and b.dtype == torch.float32 and b.shape == a.shape == (3, 48, 48)
        levels = ((a - b).abs() * std * 255)  # back to uint8 levels
        worst, means = max(worst, float(levels.max())), means + [float(levels.mean())]
        if pil.samples[i][0].endswith(".png"):
            assert torch.equal(a, b)  # the PNG went through PIL on both paths
    assert worst <= MAX_LEVELS and max(means) <= MEAN_LEVELS, (worst, max(means))
    assert worst > 0, "the two decoders agreed exactly: is the torchvision path being used at all?"


def test_batched_decoder_and_fallback(folder):
    cfg = tiny_model().spec.config
    tf = eval_transform(cfg)
    pil = ImageFolderDataset(folder, tf)
    paths = [p for p, _ in pil.samples]
    dec = JpegDecoder(tf, pil_fallback=lambda p: pil[paths.index(p)][0])
    batch = dec(paths)
    assert batch.shape == (len(paths), 3, 48, 48) and dec.fallbacks == 1  # the PNG
    one = ImageFolderDataset(folder, tf, decoder="torchvision")
    assert torch.equal(batch[3], one[3][0])  # a batch decodes each file as the per-item path does
    raw = decode_jpegs([read_bytes(paths[0]), torch.tensor([1, 2, 3], dtype=torch.uint8)])
    assert raw[0].shape == (3, 61, 83) and raw[1] is None


def test_normalize_uint8_is_totensor_normalize_bit_for_bit():
    px = torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8)
    tf = eval_transform(tiny_model().spec.config).transforms
    ref = tf[3](tf[2](Image.fromarray(px.permute(1, 2, 0).numpy())))
    assert torch.equal(normalize_uint8(px, tf[3].mean, tf[3].std), ref)


def test_other_transforms_use_pil():
    cfg = tiny_model().spec.config
    assert eval_geometry(train_transform(cfg)) is None
    assert eval_geometry(eval_transform(cfg))[:2] == (48, 48)
    with pytest.raises(ValueError, match="decoder must be"):
        ImageFolderDataset(".", decoder="nvjpeg")
