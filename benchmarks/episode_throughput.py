"""Whole episodes per second — image loading, the glance, T−1 focus steps and each observation to the host —
from JPEGs, from the prepared cache and from memory, against the bare networks, in one process.

For B env slots and one model the script times, on the same device and precision:

- ``jpeg``: an ImageFolder of JPEGs through the evaluation transform (PIL, the env's default), episodes drawn
  at random, the env's own loading: its decoding threads, with per-slot prefetch where the env turns it on
  (``--loader-threads``, ``--prefetch``; default: the env's choice, gfnet_env/data/loading.py ``default_loading``);
- ``cache``: the same split from its prepared cache (gfnet_env/data/prepared.py), written first into a temp folder;
- ``memory``: the same images already transformed, as an in-memory TensorDataset;
- ``bare``: the networks alone on pre-loaded tensors on the device: glance + T−1 ``focus_at`` per batch;

and with ``--decoders torchvision``, in place of ``jpeg`` and ``cache``:

- ``jpeg-tv``: the same files with ``ImageFolderDataset(decoder="torchvision")`` (gfnet_env/data/decoding.py): decoded
  per item by torchvision's CPU decoder in the loader threads;
- ``jpeg-dev``: the same files with the env's ``jpeg_decoder="torchvision"``: on a GPU the loader threads read the
  bytes and the reset's batch is decoded by ``torchvision.io.decode_jpeg`` (nvJPEG) and resized/cropped/
  normalised there; on the CPU the loader threads decode each file with the same functions
  (gfnet_env/data/loading.py).

The two groups run in separate processes: the torchvision settings run torch ops in the loader threads, and
before those threads ran torch on one thread (gfnet_env/data/loading.py) each of them got its own OpenMP team, which
slowed the networks of the settings measured after them in the same process by up to 25 % (in-memory episodes
250–275 instead of 340 images/s on 2 cores), so the ratios over ``memory`` came out too high. Separate
processes keep any such effect out of the ratios.

An env episode batch is ``reset_slots`` (load + glance) + ``observe`` + (T−1) × (``step`` + ``observe``), with
random continuous actions, through the env's public API. The JPEG and cache settings hand the env uint8 pixels,
normalised on its device per batch (the raw item protocol of gfnet_env/data/loading.py). Rates are images (= episodes)
per second. The settings are measured in interleaved rounds (each measurement after one untimed batch; every other
round in reverse order) and each reports its median; each ratio is the median of the per-round ratios (the two rates
of a round measured seconds apart), so slow drift of a shared machine's load cancels. Without ``--data`` the script
writes ``--images`` random 500×375 JPEGs (ImageNet's typical size; ~56 kB each, about half an ImageNet file) into a
temp folder.

On the CPU the script also times one image's loading on one thread (``c`` seconds) and prints the ratio that
cost allows when the networks keep all ``n`` cores busy, ``1 / (1 + c · memory rate / n)``: decoding cannot hide
behind networks that leave no core idle. The last two lines are ``ratio_cache=<cache/memory>`` and
``ratio_jpeg=<jpeg/memory>`` (with ``--decoders torchvision``: ``ratio_jpeg_tv=`` and ``ratio_jpeg_dev=``).

On the CPU the networks' activations are allocated and freed every forward pass; with glibc's default malloc
settings a third of the CPU time goes to page faults (gfnet_env/data/host_memory.py). ``--keep-freed-memory``
measures with malloc tuned as the ``gfnet`` command tunes it: every setting gets faster, in-memory episodes the
most, so the ratios over memory fall.

Example::

    python benchmarks/episode_throughput.py                        # CPU: MobileNet-V3, P=96, T=3, 64 envs
    python benchmarks/episode_throughput.py --keep-freed-memory    # the same with malloc tuned
    python benchmarks/episode_throughput.py --decoders torchvision # torchvision's decoder, per item and batched
    python benchmarks/episode_throughput.py --model resnet50 --T 5 --batch 256 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from feature_nets.crop import crop_corners
from feature_nets.devices import resolve_device
from feature_nets.gfnet import build_gfnet
from gfnet_env.core import GFNetCore
from gfnet_env.data.image_folder import ImageFolderDataset, eval_transform
from gfnet_env.data.host_memory import keep_freed_memory, malloc_tuned
from gfnet_env.data.loading import SlotImageLoader, default_decode_threads, torch_on_one_thread
from gfnet_env.data.prepared import PreparedDataset, prepare_split
from gfnet_env.settings import EnvSettings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenetv3_large_100", help="a released architecture (random weights)")
    p.add_argument("--patch-size", type=int, default=96, help="P")
    p.add_argument("--T", type=int, default=3, help="looks per episode (glance + T-1 focus steps)")
    p.add_argument("--batch", type=int, default=64, help="B, env slots stepped together")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--data", default=None, help="an ImageFolder root (root/<class>/*.JPEG); default: make JPEGs")
    p.add_argument("--images", type=int, default=256, help="JPEGs to make when --data is not given")
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement (each round)")
    p.add_argument("--rounds", type=int, default=7,
                   help="interleaved rounds; each setting reports its median, each ratio the median of the "
                        "per-round ratios")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--loader-threads", type=int, default=None,
                   help="env decoding threads for the JPEG settings (default: the env's own choice)")
    p.add_argument("--prefetch", choices=["auto", "on", "off"], default="auto",
                   help="decode each env's next image ahead (on), at its reset (off), or as the env decides (auto)")
    p.add_argument("--cache-threads", type=int, default=None,
                   help="env loading threads for the cache setting (default: the env's choice for the dataset)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="tune glibc's malloc first, as the gfnet command does (gfnet_env/data/host_memory.py); "
                        "default: glibc's own settings, as in a plain Python script")
    p.add_argument("--decoders", choices=["pil", "torchvision"], default="pil",
                   help="pil: the JPEG (PIL) and cache settings; torchvision: jpeg-tv and jpeg-dev instead (a "
                        "separate run: torch ops in loader threads slow later settings of the same process)")
    return p.parse_args(argv)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_jpegs(root: Path, n: int, classes: int = 8, seed: int = 0) -> Path:
    """``n`` random 500×375 RGB JPEGs (quality 90) in ``root/c<k>/`` — smooth noise, so they compress like
    photos (~40–80 kB) rather than like white noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BILINEAR)
        img.save(folder / f"img{i:05d}.JPEG", quality=90)
    return root


def load_seconds(dataset, image_size: int, jpeg_decoder: str, n: int = 32) -> float:
    """Seconds one thread (torch on one thread too) takes to load one image as the env's CPU loader does."""
    loader = SlotImageLoader(dataset, 1, 0, image_size=image_size, jpeg_decoder=jpeg_decoder, device="cpu")
    with torch_on_one_thread():
        loader.load_one(0)
        start = time.perf_counter()
        for i in range(n):
            loader.load_one(i % len(dataset))
        return (time.perf_counter() - start) / n


def episodes(core: GFNetCore, rng: np.random.Generator, device) -> None:
    """One batch of complete episodes: reset (load + glance), then step to the end; every observation to host."""
    slots = np.arange(core.num_envs)
    core.reset_slots(slots)
    core.observe()
    terminated = np.zeros(core.num_envs, dtype=bool)
    while not terminated.all():
        _r, terminated, _info = core.step(rng.random((core.num_envs, 2), dtype=np.float32))
        core.observe()
    _sync(device)


def rate(fn, device, seconds: float, per_call: int) -> float:
    """Items per second of ``fn`` (``per_call`` items per call) over at least ``seconds`` and 2 calls, after one
    untimed call: it absorbs the background prefetch a JPEG core did while the other settings ran (a gift a
    real run never gets) and the tail of the previous setting's prefetch (a tax it never pays)."""
    fn()
    _sync(device)
    n, start = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    _sync(device)
    return n * per_call / (time.perf_counter() - start)


def main(argv=None) -> dict:
    args = parse_args(argv)
    tuned = keep_freed_memory() if args.keep_freed_memory else malloc_tuned() is not None
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    model = build_gfnet(args.model, patch_size=args.patch_size, T=args.T).eval()
    b, s = args.batch, model.image_size
    tf = eval_transform(model.spec.config)

    with tempfile.TemporaryDirectory(prefix="gfnet-episodes-") as tmp:
        tmp = Path(tmp)
        root = Path(args.data) if args.data else make_jpegs(tmp / "val", args.images)
        folder = ImageFolderDataset(root, tf)
        t0 = time.perf_counter()
        cache = PreparedDataset(prepare_split(folder, tmp / "prepared.npy"))
        prep_s = time.perf_counter() - t0
        images = torch.stack([cache[i][0] for i in range(len(cache))])  # exactly the JPEG path's tensors
        memory = TensorDataset(images, torch.as_tensor(cache.targets))
        if args.decoders == "pil":
            datasets = {"jpeg": folder, "cache": cache, "memory": memory}
        else:
            datasets = {"jpeg-tv": ImageFolderDataset(root, tf, decoder="torchvision"), "jpeg-dev": folder,
                        "memory": memory}
        cores = {}
        for name, ds in datasets.items():
            lt = args.loader_threads if name.startswith("jpeg") else args.cache_threads if name == "cache" else None
            settings = EnvSettings(precision=args.precision, channels_last=args.channels_last, loader_threads=lt,
                                   jpeg_decoder="torchvision" if name == "jpeg-dev" else "pil",
                                   prefetch={"auto": None, "on": True, "off": False}[args.prefetch])
            cores[name] = GFNetCore(model, ds, b, settings, device=device)
            for slot in range(b):
                cores[name].seed_slot(slot, slot)
        m = cores["memory"].model  # the env's frozen networks (on the device, eval, no gradients)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
        batches = [images[i:i + b] for i in range(0, len(images) - b + 1, b)] or [images[:b]]
        batches = [x.to(device).contiguous(memory_format=torch.channels_last) if args.channels_last else x.to(device)
                   for x in batches]
        turn = iter(range(1 << 62))
        gen = torch.Generator(device=device).manual_seed(0)

        @torch.inference_mode()
        def bare():
            x = batches[next(turn) % len(batches)]
            with autocast:
                out = m.glance(x)
                for _ in range(m.T - 1):
                    c = crop_corners(torch.rand(x.shape[0], 2, device=device, generator=gen), s, m.patch_size)
                    out = m.focus_at(x, c, out)
            out.state.float().cpu()

        rng = np.random.default_rng(0)
        fns = {name: (lambda core=core: episodes(core, rng, device)) for name, core in cores.items()}
        fns["bare"] = bare
        results: dict[str, list[float]] = {k: [] for k in fns}
        try:
            for fn in fns.values():  # warm-up (and the first prefetch)
                fn()
            for r in range(args.rounds):  # every other round in reverse order: drift within a round cancels
                for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                    results[name].append(rate(fns[name], device, args.seconds, b))
            skipped = sum(core.skipped_images for core in cores.values())
            fallbacks = cores["jpeg-dev"].decoder_fallbacks if "jpeg-dev" in cores else 0
            jpeg_core = cores["jpeg" if "jpeg" in cores else "jpeg-tv"]
            threads_used, prefetching = jpeg_core.loader_threads, jpeg_core.loader_prefetch
        finally:
            for core in cores.values():
                core.close()
        med = {k: statistics.median(v) for k, v in results.items()}
        # each ratio is the median over rounds of that round's own ratio: the two settings were measured
        # seconds apart, so a shared machine's slow changes of load cancel in each pair
        ratios = {k: [a / m for a, m in zip(results[k], results["memory"])] for k in results if k != "memory"}
        # what one image's loading costs a core, and so the ratio a CPU whose cores the networks fill can reach
        cost = {k: load_seconds(datasets[k], s, "torchvision" if k == "jpeg-dev" else "pil")
                for k in datasets if k.startswith("jpeg")} if device.type == "cpu" else {}

    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} torch threads)")
    lt = args.loader_threads if args.loader_threads is not None else f"env default = {threads_used}"
    print(f"device: {name}; model {args.model} P={m.patch_size} S={s} T={m.T} batch {b} {args.precision}"
          f"{' channels_last' if args.channels_last else ''}; {len(folder)} images; decoders {args.decoders}; "
          f"loader threads {lt}, prefetch {'on' if prefetching else 'off'} "
          f"(default_decode_threads() = {default_decode_threads()}); cache written in {prep_s:.1f} s; "
          f"malloc {'tuned (keep_freed_memory)' if tuned else 'glibc defaults'}")
    for k, v in med.items():
        spread = f"[{min(results[k]):.1f}..{max(results[k]):.1f}]"
        print(f"{k:9s} {v:10.1f} images/s (whole episodes) median of {len(results[k])} {spread}")
    cpus = os.cpu_count() or 1
    if cost and torch.get_num_threads() >= cpus:
        # the in-memory episodes keep all cores busy: cpus / rate core-seconds per image, plus the loading
        print("loading cost per image (1 thread) and the ratio it allows when the networks fill all "
              f"{cpus} cores: " + ", ".join(
                  f"{k} {1e3 * c:.2f} ms -> {1 / (1 + c * med['memory'] / cpus):.2f}" for k, c in cost.items()))
    if skipped:
        print(f"skipped {skipped} corrupt images")
    print(f"memory/bare={med['memory'] / med['bare']:.3f}")
    if fallbacks:
        print(f"jpeg-dev: {fallbacks} files rejected by torchvision's decoder went through PIL")
    shown = [k for k in ("jpeg-tv", "jpeg-dev", "cache", "jpeg") if k in ratios]
    print("per-round ratios over memory: " + ", ".join(
        f"{k} {min(ratios[k]):.3f}..{max(ratios[k]):.3f}" for k in shown))
    for k in shown:  # the last two lines: ratio_cache, ratio_jpeg (ratio_jpeg_tv, ratio_jpeg_dev)
        print(f"ratio_{k.replace('-', '_')}={statistics.median(ratios[k]):.3f}")
    return {**med, **{f"ratio_{k.replace('-', '_')}": statistics.median(v) for k, v in ratios.items()}}


if __name__ == "__main__":
    main()
