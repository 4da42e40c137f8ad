"""Grid-mode env steps per second with the feature cache against without, in one process.

Both envs step the same batch of B episodes over a fixed set of images with the same random grid actions.
The cached env computes every cell's local-encoder features once per image (the warm-up pass below, which
is what reusing an evaluation set across episodes and agents amounts to); a step is then a lookup plus one
classifier step. Reported rates exclude episode resets (the glance) for both. Last line: ``ratio=<cached/uncached>``.

Example::

    python benchmarks/cache_speedup.py                      # CPU setting: ResNet-50 P=96, 7×7 grid, batch 32
    python benchmarks/cache_speedup.py --model mobilenetv3_large_100 --batch 64 --images 64
    python benchmarks/cache_speedup.py --model small_cnn    # the embedded task's tiny encoder

The speed-up is bounded by (encoder + classifier) / classifier, so it depends on the backbone: measured on a
2-core CPU, 31× for ResNet-50 (GRU 2048 → 1024 classifier), 17× for MobileNet-V3 (its cascade heads, up to
3·1280 → 1000 at T=3, are large next to its encoder) and about 2× for the embedded task's tiny CNN.
    python benchmarks/cache_speedup.py --model resnet50 --patch-size 96 --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import TensorDataset

from feature_nets.devices import resolve_device
from feature_nets.gfnet import build_gfnet, build_small_gfnet
from gfnet_env.cache import GridFeatureCache
from gfnet_env.core import GFNetCore
from gfnet_env.settings import EnvSettings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50",
                   help="a released architecture or small_cnn (the embedded task's encoder)")
    p.add_argument("--patch-size", type=int, default=None, help="P (default 28 for small_cnn, else 96)")
    p.add_argument("--grid-size", type=int, default=7)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=32, help="size of the fixed image set episodes draw from")
    p.add_argument("--episodes", type=int, default=2, help="batched episodes timed per env")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args(argv)


def steps_per_second(core: GFNetCore, episodes: int, n_images: int, seed: int = 0) -> float:
    """Env steps per second of ``core.step`` alone over ``episodes`` batched episodes (resets not timed)."""
    rng = np.random.default_rng(seed)
    b, g2 = core.num_envs, core.settings.grid_size ** 2
    timed, steps = 0.0, 0
    for _ in range(episodes):
        core.reset_slots(np.arange(b), rng.integers(0, n_images, b).tolist())
        terminated = np.zeros(b, dtype=bool)
        while not terminated.any():
            acts = rng.integers(0, g2, b)
            t = time.perf_counter()
            _rewards, terminated, _info = core.step(acts)
            if core.device.type == "cuda":
                torch.cuda.synchronize()
            timed += time.perf_counter() - t
            steps += b
    return steps / timed


def main(argv=None) -> float:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "small_cnn":
        model = build_small_gfnet(patch_size=args.patch_size or 28, T=5, image_size=112)
    else:
        from feature_nets.registry import get_config

        T = 3 if get_config(args.model).family == "mobilenet" else 5  # the released T of each family
        model = build_gfnet(args.model, args.patch_size or 96, T)
    s = model.image_size
    data = TensorDataset(torch.randn(args.images, 3, s, s), torch.randint(0, model.num_classes, (args.images,)))
    settings = EnvSettings(action_mode="grid", grid_size=args.grid_size)
    device = resolve_device(args.device)
    cache = GridFeatureCache(max_images=args.images)
    with GFNetCore(model, data, args.batch, settings, device=device) as plain, \
            GFNetCore(model, data, args.batch, settings, device=device, feature_cache=cache) as cached:
        t = time.perf_counter()
        for start in range(0, args.images, args.batch):  # warm-up: every image's G² cells, in batches
            idx = list(range(start, min(start + args.batch, args.images)))
            idx += [idx[-1]] * (args.batch - len(idx))
            cached.reset_slots(np.arange(args.batch), idx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        fill = time.perf_counter() - t
        r_plain = steps_per_second(plain, args.episodes, args.images)
        r_cached = steps_per_second(cached, args.episodes, args.images)
    print(f"model {args.model} P={model.patch_size} grid {args.grid_size}x{args.grid_size} batch {args.batch} "
          f"device {device}; cache fill for {args.images} images: {fill:.2f} s "
          f"({args.images * args.grid_size ** 2} patches)")
    print(f"uncached: {r_plain:10.1f} env-steps/s")
    print(f"cached:   {r_cached:10.1f} env-steps/s")
    ratio = r_cached / r_plain
    print(f"ratio={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
