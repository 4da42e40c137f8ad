"""A folder of images of your own → `gfnet train-features` → `gym.make` → a benchmark of two agents.

What it does, top to bottom:

1. writes a small ImageFolder (``ROOT/train/<class>/*.png`` and ``ROOT/val/<class>/*.png``) of three classes into a
   temporary folder, cut from the embedded task's cluttered Fashion-MNIST canvases, so that it runs anywhere —
   replace :func:`write_image_folder` by your own folder of images;
2. trains GFNet's networks on it (stage 1: encoders and classifier on random patches) with
   ``gfnet train-features --model small_cnn --data-root ROOT ...``;
3. registers the folder and the new checkpoint as a task (``MyImages-v0``) and plays one episode through
   ``gym.make("MyImages-v0")``;
4. benchmarks ``saliency`` against ``random`` patches on the held-out ``val`` images (the checkpoint's policy is
   untrained after stage 1: train it with ``gfnet train-policy`` to benchmark ``paper-ppo`` too).

It prints, in this order, lines starting with:

* ``image folder:`` — where the images are and how many of each split;
* ``$ gfnet train-features`` — the command it runs (its own output follows), then ``checkpoint:`` — the file it wrote;
* ``gym.make:`` — the env's spaces and the episode's return;
* ``verdict:`` — saliency's last-step top-1 minus random's, in points, with its paired 95 % interval.

Run ``python examples/your_own_images.py`` (real settings: 3 classes × 600 training images, 5 epochs) or with
``--tiny`` (a handful of images, one short epoch: seconds on a CPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
from PIL import Image

import gfnet_env  # noqa: F401  (registers the GFNet env ids)
from agents.benchmark import run_benchmark
from gfnet_env.data.cluttered_fashion_mnist import FASHION_MNIST_CLASSES, ClutteredFashionMNIST
from gfnet_env.tasks import Task, image_folder_split, load_model, register_task

#: The three Fashion-MNIST classes of the example folder (indices into FASHION_MNIST_CLASSES).
CLASSES = (1, 7, 8)  # Trouser, Sneaker, Bag


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> None:
    """``root/<split>/<class name>/<i>.png``: ``per_class[split]`` canvases (112×112 grey PNGs) of each class in
    :data:`CLASSES`, the first ones of the embedded task's split of that name."""
    for split, wanted in per_class.items():
        canvases = ClutteredFashionMNIST(split, seed=seed)
        counts = {c: 0 for c in CLASSES}
        for i in range(len(canvases)):
            if all(n >= wanted for n in counts.values()):
                break
            pixels, label, _ = canvases.render(i)  # (112, 112) uint8, class index, item position
            if label not in counts or counts[label] >= wanted:
                continue
            folder = root / split / FASHION_MNIST_CLASSES[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).convert("RGB").save(folder / f"{i:05d}.png")
            counts[label] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few images, one short epoch (seconds on a CPU)")
    parser.add_argument("--out", default=None, help="folder for the images, the run and the results (default: temp)")
    args = parser.parse_args()
    train_n, val_n, epochs, episodes = (8, 6, 1, 12) if args.tiny else (600, 100, 5, 300)

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gfnet_own_images_"))
    root = work / "images"
    write_image_folder(root, {"train": train_n, "val": val_n})
    print(f"image folder: {root} ({train_n} train and {val_n} val images of each of "
          f"{', '.join(FASHION_MNIST_CLASSES[c] for c in CLASSES)})", flush=True)

    # 2. GFNet's networks for these images (stage 1), with the command line as a user would type it
    run_dir = work / "run"
    cmd = ["train-features", "--model", "small_cnn", "--data-root", str(root), "--stage", "1", "--epochs",
           str(epochs), "--batch-size", "16" if args.tiny else "64", "--out", str(run_dir), "--overwrite"]
    if args.tiny:
        cmd += ["--max-steps-per-epoch", "2", "--no-progress"]
    print("$ gfnet " + " ".join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "gfnet_cli", *cmd], check=True)
    checkpoint = run_dir / "best.pth.tar"
    print(f"checkpoint: {checkpoint}", flush=True)

    # 3. the folder and the checkpoint as an env id of their own
    def load(checkpoint=checkpoint, split="val", trusted_pickle=False):
        model = load_model(checkpoint, trusted_pickle)
        return model, image_folder_split(root, split, model)

    register_task(Task("MyImages-v0", "my_images", load, num_classes=len(CLASSES)), replace=True)
    with gym.make("MyImages-v0") as env:
        obs, info = env.reset(seed=0)
        episode_return, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            episode_return += float(reward)
            done = terminated or truncated
        print(f"gym.make: MyImages-v0, observation {env.observation_space.shape}, action {env.action_space}, "
              f"one random episode's return {episode_return:+.3f}", flush=True)

    # 4. two agents on the same held-out images
    results = run_benchmark("MyImages-v0", ["random", "saliency"], work / "results", episodes=episodes, seeds=2,
                            reference="random", batch_size=min(episodes, 250), verbose=not args.tiny)
    vs = results["agents"]["saliency"]["vs_reference"]
    lo, hi = vs["top1_difference_ci"][-1]
    print(f"verdict: saliency − random at the last step: {vs['top1_difference'][-1]:+.1f} points, paired 95 % "
          f"interval [{lo:+.1f}, {hi:+.1f}] on {results['episodes']} images (results in {work / 'results'})")


if __name__ == "__main__":
    main()
