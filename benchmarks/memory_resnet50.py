"""Peak memory of a 256-env batched ResNet-50 GFNet env on CPU (P=96, T=5, 224×224 images).

Runs one full batched episode through :func:`gfnet_env.rollout.rollout` (reset = glance on 256 images, then
4 focus steps with random actions, an observation after each) and prints this process's peak resident set
size. Measure it from outside as the issue asks::

    /usr/bin/time -v .venv/bin/python benchmarks/memory_resnet50.py 2>&1 | grep -E "Maximum resident|ratio="

The last line is ``ratio=<peak RSS / 6 GiB budget>`` (below 1 means within budget).
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
import torch
from torch.utils.data import TensorDataset

from feature_nets.gfnet import build_gfnet
from gfnet_env.core import GFNetCore
from gfnet_env.rollout import rollout
from gfnet_env.settings import EnvSettings

BUDGET_GIB = 6.0


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--patch-size", type=int, default=96)
    p.add_argument("--obs-mode", default="gru")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = build_gfnet(args.model, args.patch_size, 5)
    s = model.image_size
    data = TensorDataset(torch.randn(args.num_envs, 3, s, s), torch.randint(0, 1000, (args.num_envs,)))
    rng = np.random.default_rng(0)
    seen = {}

    def random_policy(obs):
        seen["obs"] = obs
        return rng.random((args.num_envs, 2), dtype=np.float32)

    with GFNetCore(model, data, args.num_envs, EnvSettings(obs_mode=args.obs_mode), device="cpu") as core:
        result = rollout(core, random_policy, range(args.num_envs))
    obs = seen["obs"]
    elapsed = result.seconds
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    print(f"{args.model} P={args.patch_size} T=5, {args.num_envs} envs on CPU: one episode in {elapsed:.1f} s; "
          f"obs {getattr(obs, 'shape', None)}; peak RSS {peak_gib:.2f} GiB")
    ratio = peak_gib / BUDGET_GIB
    print(f"ratio={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
