"""The README's plain Stable-Baselines3 path, with progress: DQN on the embedded task, then a benchmark against
random patches.

``make_sb3_vec_env`` gives an SB3 ``VecEnv`` (in a ``VecMonitor``) over the batched env; the DQN settings are the
``sb3-dqn`` recipe's (feature-map observations, a 7×7 grid of patch locations, the exported
``FeatureMapExtractor``). Training draws a progress bar of env steps (on stderr); the trained model is saved as a zip and
benchmarked with ``agents.benchmark.run_benchmark`` (what ``gfnet benchmark --agent-dir sb3-dqn=dqn_fmnist.zip``
runs) against random patches on the same test canvases.

It prints lines starting with:

* ``training:`` — the env steps trained, and the mean return of the last episodes;
* ``saved:`` — the model's zip;
* ``verdict:`` — sb3-dqn's last-step top-1 minus random's, in points, with its paired 95 % interval.

Needs the ``sb3`` and ``benchmark`` extras (``pip install -e ".[sb3,benchmark]"``). Run
``python examples/sb3_quickstart.py`` (real settings: the README's 30k steps, 10,000 test canvases) or with
``--tiny`` (a few hundred steps, 40 canvases: seconds on a CPU; the agent has barely learned anything).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from stable_baselines3 import DQN

from agents.benchmark import run_benchmark
from agents.sb3.callbacks import progress_callback
from gfnet_env.sb3 import FeatureMapExtractor, make_sb3_vec_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few hundred steps, 40 canvases (seconds on a CPU)")
    parser.add_argument("--out", default=None, help="folder for the model and the results (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="gfnet_sb3_"))
    steps, n_envs, episodes = (320, 4, 40) if args.tiny else (30_000, 16, 10_000)

    vec_env = make_sb3_vec_env("GFNet-ClutteredFashionMNIST-v0", n_envs=n_envs, split="train", seed=0,
                               obs_mode="feature_map", action_mode="grid", grid_size=7)   # in a VecMonitor
    model = DQN("MlpPolicy", vec_env, buffer_size=20_000, learning_starts=100 if args.tiny else 1_000,
                batch_size=128, learning_rate=3e-4, gamma=1.0, train_freq=1, gradient_steps=2,
                target_update_interval=1_000, exploration_fraction=0.3, exploration_final_eps=0.05, seed=0,
                policy_kwargs={"features_extractor_class": FeatureMapExtractor, "net_arch": [64, 64]})
    model.learn(steps, callback=progress_callback(steps))  # a tqdm bar of env steps (SB3's own bar needs rich)
    returns = [episode["r"] for episode in model.ep_info_buffer]  # the VecMonitor's last episodes
    print(f"training: {steps} env steps, mean return of the last {len(returns)} episodes "
          f"{sum(returns) / len(returns):+.3f}", flush=True)
    path = out / "dqn_fmnist.zip"
    model.save(path)
    vec_env.close()
    print(f"saved: {path}", flush=True)

    results = run_benchmark("GFNet-ClutteredFashionMNIST-v0", ["random", "sb3-dqn"], out / "results",
                            agent_dirs={"sb3-dqn": path}, reference="random", episodes=episodes,
                            batch_size=min(episodes, 250), verbose=not args.tiny)
    vs = results["agents"]["sb3-dqn"]["vs_reference"]
    lo, hi = vs["top1_difference_ci"][-1]
    print(f"verdict: sb3-dqn − random at the last step: {vs['top1_difference'][-1]:+.1f} points, paired 95 % "
          f"interval [{lo:+.1f}, {hi:+.1f}] on {results['episodes']} images (results in {out / 'results'})")


if __name__ == "__main__":
    main()
