"""Steps per second of the batched GFNet env against the bare networks it runs, in one process.

For one batch of B images the script times, on the same device and precision:

- ``env``: ``GFNetCore.step`` with random continuous actions (crop + local encoder + classifier + reward
  + info, with the step's one device-to-host copy), episodes reset outside the timed region; the observation
  (``GFNetCore.observe``, a copy of the classifier state) is not part of the timed step;
- ``bare``: the local encoder + one classifier step on an already cropped batch (the ceiling), run on the
  script's own model and images (the same objects it hands the env), never on the env's buffers;
- ``original``: the original loop's per-sample Python crop followed by the same networks.

Each step of the env processes B patches, so steps/s here counts env-steps (B per batched step).
The last line is ``ratio=<env/bare>``.

Example::

    python benchmarks/env_throughput.py                                  # CPU setting: MobileNet-V3, P=96, batch 64
    python benchmarks/env_throughput.py --model small_cnn --T 5          # the embedded task's tiny encoder
    python benchmarks/env_throughput.py --keep-freed-memory              # glibc's malloc tuned, as by gfnet
    python benchmarks/env_throughput.py --model resnet50 --patch-size 96 --batch 256 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import TensorDataset

from feature_nets.crop import crop_corners, crop_patches, crop_patches_reference
from feature_nets.devices import resolve_device
from feature_nets.gfnet import build_gfnet, build_small_gfnet
from gfnet_env.core import GFNetCore
from gfnet_env.data.host_memory import keep_freed_memory
from gfnet_env.settings import EnvSettings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenetv3_large_100",
                   help="a released architecture (e.g. resnet50) or small_cnn (the embedded task's encoder)")
    p.add_argument("--patch-size", type=int, default=None, help="P (default: 28 for small_cnn, 96 otherwise)")
    p.add_argument("--T", type=int, default=3, help="steps per episode (glance + T-1 focus steps)")
    p.add_argument("--batch", type=int, default=64, help="B, images stepped together")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="tune glibc's malloc first, as the gfnet command does (gfnet_env/data/host_memory.py)")
    return p.parse_args(argv)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after warm-up)."""
    for _ in range(3):
        fn()
    _sync(device)
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        if n % 5 == 0:
            _sync(device)
            if time.perf_counter() - start > seconds:
                break
    _sync(device)
    return n / (time.perf_counter() - start)


def build(args):
    if args.model == "small_cnn":
        p = args.patch_size or 28
        model = build_small_gfnet(patch_size=p, T=args.T, image_size=112)
    else:
        p = args.patch_size or 96
        model = build_gfnet(args.model, p, args.T)
    return model


def prepare(model, device: torch.device, channels_last: bool):
    """The bare networks as the env runs them: on ``device``, eval mode, no gradients (channels-last if asked)."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def main(argv=None) -> float:
    args = parse_args(argv)
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    m = prepare(build(args), device, args.channels_last)
    s, b = m.image_size, args.batch
    # The script's own images: the env draws its episodes from them, the bare networks crop them directly.
    images = torch.randn(b, 3, s, s)
    data = TensorDataset(images, torch.randint(0, m.num_classes, (b,)))
    settings = EnvSettings(precision=args.precision, channels_last=args.channels_last)
    rng = np.random.default_rng(0)
    slots = np.arange(b)

    with GFNetCore(m, data, b, settings, device=device) as core:

        def env_rate_measure(seconds: float) -> float:
            """Batched steps per second of ``core.step`` alone (each call timed; resets are not a step's cost)."""
            timed, n = 0.0, 0
            while timed < seconds or n < 5:
                core.reset_slots(slots, list(range(b)))
                terminated = np.zeros(b, dtype=bool)
                while not terminated.any():
                    actions = rng.random((b, 2), dtype=np.float32)
                    _sync(device)
                    t = time.perf_counter()
                    _rewards, terminated, _info = core.step(actions)
                    _sync(device)
                    timed += time.perf_counter() - t
                    n += 1
            return n / timed

        env_rate_measure(0.2)  # warm-up
        env_rate = env_rate_measure(args.seconds)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    images = images.to(device)
    with torch.inference_mode(), autocast:  # the classifier state after the glance, as the env's first step sees it
        state = m.glance(images).state.float()
    # The bare networks get fresh crops every call, cycling through distinct batches like the env's steps
    # (one batch reused over and over would sit in cache and flatter the ceiling).
    crop_sets = []
    for _ in range(16):
        c = crop_corners(torch.rand(b, 2, device=device), s, m.patch_size)
        p = crop_patches(images, c, m.patch_size)
        crop_sets.append((c, p.contiguous(memory_format=torch.channels_last) if args.channels_last else p))
    corners = crop_sets[0][0]
    turn = iter(range(1 << 62))

    @torch.inference_mode()
    def bare():
        with autocast:
            pooled, _ = m.local_encoder(crop_sets[next(turn) % len(crop_sets)][1])
            m.classifier.step(pooled, state, 1)

    @torch.inference_mode()
    def original():
        with autocast:
            crops = crop_patches_reference(images, crop_sets[next(turn) % len(crop_sets)][0], m.patch_size)
            pooled, _ = m.local_encoder(crops)
            m.classifier.step(pooled, state, 1)

    bare_rate = timeit(bare, device, args.seconds)
    orig_rate = timeit(original, device, args.seconds)
    crop_ms = 1000 / timeit(lambda: crop_patches(images, corners, m.patch_size), device, 0.5)
    loop_crop_ms = 1000 / timeit(lambda: crop_patches_reference(images, corners, m.patch_size), device, 0.5)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; model {args.model} P={m.patch_size} S={s} batch {b} {args.precision}"
          f"{' channels_last' if args.channels_last else ''}")
    print(f"batched crop: {crop_ms:.3f} ms/batch; original per-sample crop: {loop_crop_ms:.3f} ms/batch")
    print(f"env:      {env_rate * b:10.1f} env-steps/s ({env_rate:.2f} batched steps/s)")
    print(f"bare:     {bare_rate * b:10.1f} patches/s (local encoder + classifier)")
    print(f"original: {orig_rate * b:10.1f} patches/s (per-sample crop + same networks)")
    print(f"env/original={env_rate / orig_rate:.3f}")
    ratio = env_rate / bare_rate
    print(f"ratio={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
