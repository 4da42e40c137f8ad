"""Datasets: ImageFolder scanning, transforms, clear errors, user-dataset checks, denormalisation, loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from feature_nets.registry import get_config
from gfnet_env.data.image_folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    ImageFolderDataset,
    check_image_dataset,
    denormalizer_for,
    eval_transform,
    imagenet_split,
    train_transform,
)

S = 32
CFG = get_config("resnet50").with_overrides(image_size=S)


def _write_image(path: Path, seed: int, size=(40, 40), fmt=None) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def _make_folder(root: Path, classes=("cat", "ant"), n=3) -> Path:
    exts = [".jpg", ".PNG", ".jpeg"]
    for ci, c in enumerate(classes):
        for i in range(n):
            ext = exts[i % len(exts)]
            _write_image(root / c / f"img{i}{ext}", seed=10 * ci + i, fmt="JPEG" if "jp" in ext.lower() else "PNG")
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return _make_folder(tmp_path / "data")


def test_imagefolder_classes_labels_shapes(folder):
    ds = ImageFolderDataset(folder, transform=eval_transform(CFG))
    assert ds.classes == ["ant", "cat"]  # sorted, like torchvision's ImageFolder
    assert ds.class_to_idx == {"ant": 0, "cat": 1}
    assert len(ds) == 6
    assert [label for _, label in ds.samples] == [0, 0, 0, 1, 1, 1]
    assert ds.targets == [0, 0, 0, 1, 1, 1]
    assert all(Path(p).parent.name == ds.classes[label] for p, label in ds.samples)
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD
    for i in (0, 5):
        x, y = ds[i]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, S, S)
        assert isinstance(y, int) and y == ds.samples[i][1]
    check_image_dataset(ds, S)


def test_imagefolder_matches_torchvision_order(folder):
    from torchvision.datasets import ImageFolder

    ours = ImageFolderDataset(folder)
    theirs = ImageFolder(str(folder))
    assert ours.classes == theirs.classes
    assert [(Path(p), y) for p, y in ours.samples] == [(Path(p), y) for p, y in theirs.samples]


def test_ignores_other_files_and_hidden_entries(folder):
    (folder / "cat" / "notes.txt").write_text("not an image")
    (folder / ".ipynb_checkpoints").mkdir()
    _write_image(folder / "cat" / ".hidden.jpg", seed=1, fmt="JPEG")
    _write_image(folder / "cat" / "sub" / "deep.jpg", seed=2, fmt="JPEG")  # nested files count
    ds = ImageFolderDataset(folder)
    assert ds.classes == ["ant", "cat"]
    assert len(ds) == 7
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and label == 0


def test_eval_transform_matches_reference_pipeline():
    # Resize(int(S / crop_pct)) → CenterCrop(S) → ToTensor → Normalize, checked by hand on a non-square image.
    from torchvision.transforms import functional as TF

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8))
    got = eval_transform(CFG)(img)
    resized = img.resize((int(70 * 36 / 50), 36), Image.BILINEAR)  # int(32 / 0.875) = 36 on the shorter side
    want = TF.normalize(TF.to_tensor(TF.center_crop(resized, S)), IMAGENET_MEAN, IMAGENET_STD)
    assert got.shape == (3, S, S)
    assert torch.allclose(got, want, atol=1e-5)


def test_transforms_use_backbone_interpolation():
    from torchvision.transforms import InterpolationMode

    effnet = get_config("efficientnet_b3").with_overrides(image_size=S)
    assert eval_transform(effnet).transforms[0].interpolation == InterpolationMode.BICUBIC
    assert eval_transform(effnet).transforms[0].size == int(S / 0.904)
    assert eval_transform(CFG).transforms[0].interpolation == InterpolationMode.BILINEAR
    t = train_transform(effnet)
    # training crops resize bilinearly for every backbone, as GFNet's training code does
    assert t.transforms[0].interpolation == InterpolationMode.BILINEAR
    assert train_transform(effnet, interpolation="dataset").transforms[0].interpolation == InterpolationMode.BICUBIC
    with pytest.raises(ValueError, match="bilinear"):
        train_transform(effnet, interpolation="bicubic")
    x = t(Image.new("RGB", (40, 30)))
    assert x.shape == (3, S, S)


def test_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as e:
        ImageFolderDataset(missing)
    assert str(missing) in str(e.value) and "root/<class>/<image files>" in str(e.value)


def test_root_is_a_file(tmp_path):
    f = tmp_path / "file.jpg"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        ImageFolderDataset(f)


def test_no_class_folders(tmp_path):
    root = tmp_path / "flat"
    _write_image(root / "a.jpg", seed=0, fmt="JPEG")
    with pytest.raises(FileNotFoundError, match="no class sub-folders") as e:
        ImageFolderDataset(root)
    assert "1 image files directly" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty")


def test_empty_class_folder_is_named(folder):
    (folder / "zebra").mkdir()
    (folder / "zebra" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="'zebra'"):
        ImageFolderDataset(folder)


def test_no_images_at_all(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        ImageFolderDataset(tmp_path / "d")


def test_custom_extensions(folder):
    ds = ImageFolderDataset(folder, extensions=("png",))
    assert len(ds) == 2 and all(p.lower().endswith(".png") for p, _ in ds.samples)


def test_corrupt_image_raises_naming_the_file(folder):
    bad = folder / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage, not a jpeg" * 4)
    truncated = folder / "ant" / "truncated.jpg"
    good = (folder / "ant" / "img0.jpg").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    ds = ImageFolderDataset(folder, transform=eval_transform(CFG))
    for path in (bad, truncated):
        i = [Path(p) for p, _ in ds.samples].index(path)
        with pytest.raises(CorruptImageError) as e:
            ds[i]
        assert str(path) in str(e.value)
        assert e.value.path == str(path)
        assert isinstance(e.value, OSError)
    # Other samples still load: the dataset does not skip, and does not break either.
    x, _ = ds[0]
    assert x.shape == (3, S, S)


def test_corrupt_image_error_pickles():
    err = CorruptImageError.for_file("/x/y.jpg", "bad header")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, CorruptImageError) and back.path == "/x/y.jpg" and str(back) == str(err)


def test_imagenet_split(tmp_path):
    root = tmp_path / "imagenet"
    _make_folder(root / "train", classes=("n01", "n02"), n=2)
    _make_folder(root / "val", classes=("n01", "n02"), n=1)
    val = imagenet_split(root, "val", CFG)
    train = imagenet_split(str(root), "train", CFG)
    assert len(val) == 2 and len(train) == 4 and val.classes == train.classes == ["n01", "n02"]
    assert val[0][0].shape == (3, S, S) and train[0][0].shape == (3, S, S)
    assert type(val.transform.transforms[0]).__name__ == "Resize"
    assert type(train.transform.transforms[0]).__name__ == "RandomResizedCrop"
    with pytest.raises(ValueError, match="'train' or 'val'"):
        imagenet_split(root, "test", CFG)


def test_imagenet_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected ImageNet in ImageFolder layout") as e:
        imagenet_split(tmp_path / "missing", "val", CFG)
    assert str(tmp_path / "missing") in str(e.value)
    root = tmp_path / "imagenet"
    _make_folder(root / "train", classes=("n01",), n=1)
    with pytest.raises(FileNotFoundError, match=r"/val/<wnid>/\*\.JPEG"):
        imagenet_split(root, "val", CFG)
    _write_image(root / "val" / "ILSVRC2012_val_00000001.JPEG", seed=0, fmt="JPEG")  # flat, unsorted val
    with pytest.raises(FileNotFoundError, match="one folder per wnid"):
        imagenet_split(root, "val", CFG)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, sample):
        self.sample = sample

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.sample


@pytest.mark.parametrize(
    "sample, match",
    [
        ((torch.zeros(3, S + 1, S), 0), "shape"),
        ((torch.zeros(1, S, S), 0), "shape"),
        ((torch.zeros(S, S, 3), 0), "shape"),
        ((torch.zeros(3, S, S, dtype=torch.uint8), 0), "dtype"),
        ((np.zeros((3, S, S), np.float32), 0), "not a torch.Tensor"),
        ((torch.zeros(3, S, S), 0.5), "label"),
        ((torch.zeros(3, S, S), True), "label"),
        ((torch.zeros(3, S, S), torch.tensor([1, 2])), "label"),
        ((torch.zeros(3, S, S),), "length 1"),
        (torch.zeros(3, S, S), "Tensor"),
    ],
)
def test_check_image_dataset_rejects(sample, match):
    with pytest.raises(ValueError, match=match):
        check_image_dataset(_ListDataset(sample), S)


def test_check_image_dataset_accepts_and_rejects_empty():
    check_image_dataset(_ListDataset((torch.zeros(3, S, S), 3)), S)
    check_image_dataset(_ListDataset((torch.zeros(3, S, S), np.int64(3))), S)
    check_image_dataset(TensorDataset(torch.zeros(2, 3, S, S), torch.tensor([0, 1])), S)
    with pytest.raises(ValueError, match="empty"):
        check_image_dataset(TensorDataset(torch.zeros(0, 3, S, S), torch.zeros(0, dtype=torch.long)), S)


def test_denormalizer_inverts_eval_transform(folder):
    ds = ImageFolderDataset(folder, transform=eval_transform(CFG))
    x, _ = ds[0]
    raw = ds.load_image(0)
    want = np.asarray(eval_transform(CFG).transforms[1](eval_transform(CFG).transforms[0](raw)))
    for d in (ds, Subset(ds, [0, 1])):
        rgb = denormalizer_for(d)(x)
        assert rgb.dtype == np.uint8 and rgb.shape == (S, S, 3)
        assert np.abs(rgb.astype(int) - want.astype(int)).max() <= 1


def test_denormalizer_uses_dataset_stats_or_min_max():
    class WithStats(_ListDataset):
        mean, std = 0.5, 0.25

    x = torch.full((1, 4, 4), 2.0)  # 2 * 0.25 + 0.5 = 1.0 → 255, one channel repeated to RGB
    rgb = denormalizer_for(WithStats(None))(x)
    assert rgb.shape == (4, 4, 3) and (rgb == 255).all()

    x = torch.linspace(-3, 5, 3 * 4 * 4).reshape(3, 4, 4)
    rgb = denormalizer_for(TensorDataset(torch.zeros(1)))(x)
    assert rgb.min() == 0 and rgb.max() == 255
    assert (denormalizer_for(None)(torch.zeros(3, 2, 2)) == 0).all()  # a constant image does not divide by zero
