"""Raw items normalised in batches on the env's device (gfnet_env/data/loading.py): uint8 pixels from the prepared
cache and from image folders, JPEG bytes decoded as a batch (``jpeg_decoder="torchvision"``), and the default
number of decoding threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from gfnet_env.core import GFNetCore
from gfnet_env.data.image_folder import IMAGENET_STD, ImageFolderDataset, eval_transform, imagenet_split, train_transform
from gfnet_env.factory import make_core
from gfnet_env.data.loading import SlotImageLoader, default_decode_threads, default_loading, item_kind
from gfnet_env.data.prepared import PreparedDataset, prepare_split
from gfnet_env.settings import EnvSettings
from helpers import MAX_LEVELS, MEAN_LEVELS
from helpers import write_jpegs
from helpers import tiny_dataset, tiny_model

CPU = torch.device("cpu")


@pytest.fixture()
def data_root(tmp_path):
    write_jpegs(tmp_path / "val", classes=3, per_class=4, size=(83, 61))
    return tmp_path


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a − b| of normalised images in uint8 levels."""
    return (a - b).abs() * torch.tensor(IMAGENET_STD)[:, None, None] * 255


def _episodes(core: GFNetCore, indices: list[int]) -> tuple[list, np.ndarray, np.ndarray]:
    """Observations after the glance and each step, rewards and targets of one batch of fixed images."""
    core.reset_slots(np.arange(len(indices)), indices)
    obs, rewards, rng = [core.observe()], [], np.random.default_rng(0)
    for _ in range(core.max_steps):
        r, _term, info = core.step(rng.random((len(indices), 2), dtype=np.float32))
        obs.append(core.observe())
        rewards.append(r)
    return obs, np.stack(rewards), info["target"]


def test_batched_uint8_normalisation_equals_the_per_item_float_path_exactly(data_root):
    """The prepared cache's and the image folder's uint8 items, normalised as one batch, are the per-item float
    items bit for bit (CPU, float32), and env episodes from them equal episodes from the float tensors in memory."""
    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    cache = PreparedDataset(prepare_split(folder))
    indices = [0, 3, 5, 7, 9, 11]
    per_item = torch.stack([cache[i][0] for i in indices])  # the old path: float per item on the host
    assert per_item.dtype == torch.float32
    assert torch.equal(per_item, torch.stack([folder[i][0] for i in indices]))  # PIL transform, float items
    for ds in (cache, folder):
        loader = SlotImageLoader(ds, len(indices), 0, image_size=model.image_size)
        assert loader.kind == "uint8"
        batch, labels, used = loader.load_batch(np.arange(len(indices)), indices, CPU)
        assert batch.dtype == torch.float32 and torch.equal(batch, per_item), type(ds).__name__
        assert labels == [cache.targets[i] for i in indices] and used == indices
    memory = TensorDataset(torch.stack([cache[i][0] for i in range(len(cache))]), torch.as_tensor(cache.targets))
    assert item_kind(memory) == "float"
    results = []
    for ds in (memory, cache, folder):
        with GFNetCore(model, ds, len(indices), EnvSettings(loader_threads=0), device="cpu") as core:
            results.append(_episodes(core, indices))
    for obs, rewards, targets in results[1:]:
        assert np.array_equal(targets, results[0][2]) and np.array_equal(rewards, results[0][1])
        for a, b in zip(obs, results[0][0]):
            assert np.array_equal(a, b)


def test_torchvision_batch_decoding_matches_pil_within_one_level(data_root):
    """``jpeg_decoder="torchvision"`` on the CPU: the batch path (bytes read per item, one decode_jpeg call,
    tensor resize/crop) against PIL: same labels and indices, pixels ≤ 1 uint8 level apart (mean ≤ 0.05); a
    grayscale JPEG decodes within the same tolerance, a PNG named .jpg falls back to PIL (exact), a corrupt
    .jpg is skipped to the same next image as on the PIL path."""
    (data_root / "val" / "c1" / "gray.jpg").parent.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8), mode="L").save(data_root / "val" / "c1" / "gray.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(data_root / "val" / "c2" / "png.jpg",
                                                                            format="PNG")
    (data_root / "val" / "c0" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    names = [p.rsplit("/", 1)[1] for p, _ in folder.samples]
    n = len(folder)
    pil = SlotImageLoader(folder, n, 0, image_size=model.image_size)
    tv = SlotImageLoader(folder, n, 2, image_size=model.image_size, jpeg_decoder="torchvision")
    # told that the batches go to the CPU, the loader decodes each file as it loads it (in its threads when it has
    # any; none here, so that no background prefetch adds to the fallbacks counted)
    per_item = SlotImageLoader(folder, n, 0, image_size=model.image_size, jpeg_decoder="torchvision", device="cpu")
    assert (pil.kind, tv.kind, per_item.kind) == ("uint8", "encoded", "encoded")
    assert (tv.decodes_items, per_item.decodes_items) == (False, True)
    try:
        with pytest.warns(UserWarning, match="skipping corrupt image"):
            a, la, ua = pil.load_batch(np.arange(n), list(range(n)), CPU)
        with pytest.warns(UserWarning, match="skipping corrupt image"):
            b, lb, ub = tv.load_batch(np.arange(n), list(range(n)), CPU)
        with pytest.warns(UserWarning, match="skipping corrupt image"):
            c, lc, uc = per_item.load_batch(np.arange(n), list(range(n)), CPU)
        per_item_fallbacks = per_item.fallbacks
        image, _label, _used = per_item.load_one(names.index("img0.JPEG"))
        assert image.dtype == torch.uint8 and image.shape == (3, 48, 48)  # decoded where it was loaded
    finally:
        tv.close()
        per_item.close()
    assert la == lb == lc and ua == ub == uc
    # the same decoding per item as per batch, except after the corrupt file: the batch path's PIL fallback moves
    # on to the next image with PIL, the per-item path with torchvision's decoder again
    bad = names.index("bad.jpg")
    others = [k for k in range(n) if k != bad]
    assert torch.equal(b[others], c[others]) and tv.fallbacks == per_item_fallbacks
    assert float(_levels(b[bad], c[bad]).max()) <= MAX_LEVELS
    assert ua[bad] == bad + 1  # the corrupt file moved on to the next image on both paths
    assert b.dtype == torch.float32 and b.shape == a.shape == (n, 3, 48, 48)
    levels = _levels(a, b)
    assert float(levels.max()) <= MAX_LEVELS and float(levels.flatten(1).mean(1).max()) <= MEAN_LEVELS
    assert float(levels.max()) > 0, "the decoders agreed exactly: is the torchvision path used at all?"
    assert torch.equal(a[names.index("png.jpg")], b[names.index("png.jpg")])  # PIL on both paths
    assert float(levels[names.index("gray.jpg")].max()) <= MAX_LEVELS
    assert tv.fallbacks >= 2  # the PNG and the corrupt file (and the grayscale one where the decoder refuses it)


def test_env_option_jpeg_decoder(data_root):
    model = tiny_model()
    kwargs = dict(checkpoint=model, data_root=data_root, prepared=False, loader_threads=1)
    runs = {}
    for decoder in ("pil", "torchvision"):
        with make_core("imagenet", 4, device="cpu", jpeg_decoder=decoder, **kwargs) as core:
            for slot in range(4):
                core.seed_slot(slot, 10 + slot)
            obs, rewards, targets = [], [], []
            for _ in range(3):  # random draws with prefetch: same images on both paths
                o, r, t = _episodes(core, [None] * 4)
                obs.append(o[-1]), rewards.append(r), targets.append(t)
            runs[decoder] = (np.stack(obs), np.stack(rewards), np.stack(targets), core.decoder_fallbacks)
    (oa, ra, ta, fa), (ob, rb, tb, fb) = runs["pil"], runs["torchvision"]
    assert np.array_equal(ta, tb) and fa == fb == 0
    assert np.abs(oa - ob).max() < 0.1 and np.abs(ra - rb).max() < 0.05  # ≤ 1 level of pixels moves little
    with pytest.raises(ValueError, match="jpeg_decoder 'nvjpeg'.*choose 'pil'"):
        make_core("imagenet", 2, device="cpu", jpeg_decoder="nvjpeg", **kwargs)
    with pytest.raises(ValueError, match="evaluation transform.*jpeg_decoder='pil'"):
        GFNetCore(model, ImageFolderDataset(data_root / "val", train_transform(model.spec.config)), 2,
                  EnvSettings(jpeg_decoder="torchvision"), device="cpu")
    # datasets that decode no files ignore it: the prepared cache hands out uint8, in-memory data floats
    cache = PreparedDataset(prepare_split(imagenet_split(data_root, "val", model.spec.config)))
    assert item_kind(cache, "torchvision") == "uint8" and item_kind(tiny_dataset(), "torchvision") == "float"


def test_a_reset_loads_the_images_no_thread_has_started_itself(data_root):
    """With every loader thread busy, a reset does not wait for them: it loads its images in the calling thread
    (the same items: same pixels, labels and indices as a loader without threads)."""
    import threading

    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    loaded_in: list[str] = []
    uint8_item = folder.uint8_item

    def recording_uint8_item(index):
        loaded_in.append(threading.current_thread().name)
        return uint8_item(index)

    folder.uint8_item = recording_uint8_item
    loader = SlotImageLoader(folder, 3, 1, image_size=model.image_size)
    release = threading.Event()
    safety = threading.Timer(30, release.set)  # frees the thread even if the test fails
    safety.start()
    try:
        loader._pool.submit(release.wait)  # the only loader thread is busy until released
        batch, labels, used = loader.load_batch(np.arange(3), [1, 4, 7], CPU)
        assert loaded_in == [threading.current_thread().name] * 3
    finally:
        release.set()
        safety.cancel()
        loader.close()
    reference = SlotImageLoader(folder, 3, 0, image_size=model.image_size).load_batch(np.arange(3), [1, 4, 7], CPU)
    assert torch.equal(batch, reference[0]) and labels == reference[1] and used == reference[2] == [1, 4, 7]


def test_loader_threads_run_torch_on_one_thread(data_root):
    """Items load in the threads with torch set to one thread there (a multi-threaded op in a loader thread gives
    it an OpenMP team that slows the networks); the caller's thread count is left as it was."""
    import threading

    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    seen: list[tuple[str, int]] = []
    uint8_item = folder.uint8_item

    def recording_uint8_item(index):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return uint8_item(index)

    folder.uint8_item = recording_uint8_item
    original = torch.get_num_threads()
    torch.set_num_threads(max(2, original))  # so that "one thread" is not simply the machine's default
    try:
        with GFNetCore(model, folder, 4, EnvSettings(loader_threads=2), device="cpu") as core:
            for _ in range(3):
                core.reset_slots(np.arange(4))
        assert torch.get_num_threads() == max(2, original)
    finally:
        torch.set_num_threads(original)
    in_threads = [n for name, n in seen if name.startswith("gfnet-load")]
    assert in_threads and set(in_threads) == {1}


def test_raw_items_are_checked(data_root):
    class Wrong:
        normalization = ((0.5,) * 3, (0.5,) * 3)

        def __len__(self):
            return 4

        def uint8_item(self, index):
            return torch.zeros(3, 48, 48), index  # float, not uint8

    loader = SlotImageLoader(Wrong(), 1, 0, image_size=48)
    with pytest.raises(ValueError, match=r"uint8_item\(0\)\[0\] is torch.float32 .*uint8 tensor \(3, 48, 48\)"):
        loader.load_batch(np.arange(1), [0], CPU)


def test_default_loading_follows_the_cores_torch_leaves(data_root, monkeypatch):
    """Decoding threads and prefetch by machine: prefetch where decoding has cores of its own (spare cores, or the
    networks on a GPU); where torch's threads fill every core a reset decodes its images itself, with every core."""
    model = tiny_model()
    folder = ImageFolderDataset(data_root / "val", eval_transform(model.spec.config))
    cases = ((2, 2, 0, (1, False)), (1, 1, 0, (1, False)), (16, 16, 0, (8, False)), (16, 8, 8, (8, True)),
             (6, 2, 4, (4, True)), (64, 4, 8, (8, True)))
    for cpus, torch_threads, spare, expected in cases:
        monkeypatch.setattr("os.cpu_count", lambda cpus=cpus: cpus)
        monkeypatch.setattr(torch, "get_num_threads", lambda t=torch_threads: t)
        assert default_decode_threads() == max(1, min(8, spare))
        assert default_loading("cpu") == expected
        with GFNetCore(model, folder, 2, EnvSettings(), device="cpu") as core:
            assert (core.loader_threads, core.loader_prefetch) == expected
        with GFNetCore(model, tiny_dataset(), 2, EnvSettings(), device="cpu") as core:
            assert core.loader_threads == 0  # in-memory data loads in the caller
    assert default_loading("cuda", cpus=16) == (8, True) and default_loading("cuda", cpus=2) == (1, True)
    with GFNetCore(model, folder, 2, EnvSettings(loader_threads=3, prefetch=True), device="cpu") as core:
        assert (core.loader_threads, core.loader_prefetch) == (3, True)  # explicit values win
    with pytest.raises(TypeError, match="prefetch must be True, False or None"):
        GFNetCore(model, folder, 2, EnvSettings(prefetch="yes"), device="cpu")


def test_prefetch_or_not_the_episodes_are_the_same(data_root):
    model = tiny_model()
    folder = imagenet_split(data_root, "val", model.spec.config)
    runs = []
    for prefetch in (True, False):
        with GFNetCore(model, folder, 4, EnvSettings(loader_threads=2, prefetch=prefetch), device="cpu") as core:
            for slot in range(4):
                core.seed_slot(slot, 30 + slot)
            runs.append([_episodes(core, [None] * 4) for _ in range(3)])  # random draws, each slot 3 episodes
    for (obs_a, rew_a, tgt_a), (obs_b, rew_b, tgt_b) in zip(*runs):
        assert np.array_equal(tgt_a, tgt_b) and np.array_equal(rew_a, rew_b)
        assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b))


def test_train_split_uint8_items_repeat_the_seeded_augmentation_exactly(data_root):
    """The train transform's random crop and flip draw the same numbers on the uint8 path, so a seeded load gives
    the float item bit for bit."""
    from gfnet_env.data.decoding import normalize_uint8
    from gfnet_env.data.seeded import seeded_randomness

    folder = ImageFolderDataset(data_root / "val", train_transform(tiny_model().spec.config))
    assert folder.seeded_augmentation and folder.jpeg_geometry is None and folder.normalization is not None
    for i, seed in ((0, 5), (7, 11), (11, 2**40)):
        with seeded_randomness(seed):
            ref, label = folder[i]
        with seeded_randomness(seed):
            px, label2 = folder.uint8_item(i)
        assert label == label2 and torch.equal(normalize_uint8(px, *folder.normalization), ref)
