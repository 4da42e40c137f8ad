"""SB3 PPO training throughput: the batched GFNet adapter against a SubprocVecEnv of single envs.

Both train ``PPO("MlpPolicy")`` for the same number of environment steps with the same N envs, the same
networks and the same images; the only difference is how the N envs are stepped: one batched call on one
device (``gfnet_env.make_sb3_vec_env``) or N worker processes each stepping one ``GFNetEnv``
(``SubprocVecEnv``, what SB3 users do for slow envs). Last line: ``ratio=<batched/subproc>``.

Example::

    python benchmarks/sb3_throughput.py                     # CPU setting: small CNN, 16 envs
    python benchmarks/sb3_throughput.py --n-envs 8 --steps 4096
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import SubprocVecEnv
from torch.utils.data import TensorDataset

import gfnet_env
from feature_nets.checkpoint import save_checkpoint
from feature_nets.gfnet import build_small_gfnet


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=2048, help="environment steps of PPO training per variant")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--start-method", default="forkserver", help="multiprocessing start method of SubprocVecEnv")
    return p.parse_args(argv)


def _single_env(checkpoint: str, dataset_path: str, seed: int):
    images, labels = torch.load(dataset_path, weights_only=True)
    torch.set_num_threads(1)  # N workers share the cores; one thread each avoids oversubscription
    env = gfnet_env.GFNetEnv(checkpoint=checkpoint, dataset=TensorDataset(images, labels), device="cpu")
    env.reset(seed=seed)
    return env  # SubprocVecEnv.close() closes it in its worker


def train_rate(vec_env, steps: int, n_envs: int) -> float:
    model = PPO("MlpPolicy", vec_env, n_steps=max(8, 256 // n_envs), batch_size=64, n_epochs=1, seed=0,
                device="cpu", verbose=0)
    model.learn(n_envs * 8)  # warm-up (process start, first allocations)
    t = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t)


def main(argv=None) -> float:
    args = parse_args(argv)
    torch.manual_seed(0)
    model = build_small_gfnet(patch_size=28, T=5, image_size=112)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(save_checkpoint(model, Path(tmp) / "small.pth.tar"))
        images = torch.randn(args.images, 3, 112, 112)
        labels = torch.randint(0, 10, (args.images,))
        data_path = str(Path(tmp) / "data.pt")
        torch.save((images, labels), data_path)

        with gfnet_env.make_sb3_vec_env("GFNet-ImageNet-v0", n_envs=args.n_envs, checkpoint=ckpt,
                                        dataset=TensorDataset(images, labels), device="cpu", seed=0) as batched:
            r_batched = train_rate(batched, args.steps, args.n_envs)
        sub = SubprocVecEnv([partial(_single_env, ckpt, data_path, i) for i in range(args.n_envs)],
                            start_method=args.start_method)
        try:
            r_sub = train_rate(sub, args.steps, args.n_envs)
        finally:
            sub.close()
    print(f"PPO MlpPolicy, {args.n_envs} envs, {args.steps} env steps, small CNN P=28 on 112x112, "
          f"CPU ({torch.get_num_threads()} threads)")
    print(f"batched adapter: {r_batched:8.1f} env-steps/s")
    print(f"SubprocVecEnv:   {r_sub:8.1f} env-steps/s")
    ratio = r_batched / r_sub
    print(f"ratio={ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()
