"""Compare patch-selection agents on the same images: anytime top-1, mean return, budgeted curve, multiply-adds, time.

Every agent sees the same N evaluation images (spread evenly over the split) in the same order and acts deterministically; random is run over
--seeds seeds, trained agents over their training seeds (several --agent-dir entries, or seed sub-folders of one).
Budgeted-batch thresholds are fitted on held-out images. The oracle reads the label and is listed apart as an
upper bound. Writes results.json, results.csv, results.md, PNG plots, per_image.npz and report.html (one
self-contained page: tables, curves, looks, failure gallery; `gfnet report` redraws it) to --out and prints the
table; --tensorboard DIR also writes TensorBoard logs.

--out is checked before any work (a folder this process can write, not used by another benchmark: a .lock file
inside it); the results replace the previous ones all at once at the end, results.json last. Trained SB3 agents are
loaded without running code from their files; --trust-agent allows full unpickling of agent files you trust.

Past one process (docs/scaling.md): under torchrun (torchrun --nproc-per-node N $(which gfnet) benchmark ...) the
ranks share the images, each on its own device, and rank 0 writes the one-process results; --shard K/N runs one
part of the images into its own --out (e.g. one Slurm array job each), and gfnet merge joins the N folders.
"""

from __future__ import annotations

import argparse
import os

from ._common import (
    add_agent_dir,
    add_env_kwarg,
    add_import,
    import_user_modules,
    parse_agent_dirs,
    parse_env_kwargs,
    raw_formatter,
)

EXAMPLE = """  gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 \\
      --agents random,center,raster,saliency,oracle,paper-ppo,sb3-ppo \\
      --episodes 500 --seeds 3 --out results/fmnist
  gfnet benchmark --env GFNet-ImageNet-v0 --env-kwarg checkpoint=resnet50_patch_size_96_T5.pth.tar \\
      --env-kwarg data_root=/data/imagenet --agents random,center,paper-ppo,sb3-ppo --agent-dir sb3-ppo=runs/sb3_ppo \\
      --episodes 50000 --out results/imagenet
  torchrun --nproc-per-node 4 $(which gfnet) benchmark --env GFNet-ClutteredFashionMNIST-v0 \\
      --agents random,paper-ppo --episodes 10000 --out results/fmnist_4gpu
  gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 --agents random,paper-ppo --shard 0/2 --out results/s0
  gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 --agents random,paper-ppo --shard 1/2 --out results/s1
  gfnet merge results/s0 results/s1 --out results/fmnist
  gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 --import my_agents.py \\
      --agents random,my-agent,sb3-a2c:gamma1,sb3-a2c:gamma099 --agent-dir sb3-a2c:gamma1=runs/a2c_g1 \\
      --agent-dir sb3-a2c:gamma099=runs/a2c_g099 --out results/mine"""


#: Episodes per batch without --batch-size, by the device the networks run on. CPU: measured on the embedded task
#: against smaller and larger batches (benchmarks/RESULTS.md, "The benchmark's default batch size"). GPU: not
#: measured; larger batches keep a GPU busy, and this size keeps a ResNet-50 env's images and activations well
#: inside the memory of a 16 GB card.
CPU_BATCH_SIZE = 250
CUDA_BATCH_SIZE = 512


def default_batch_size(device: str) -> int:
    """The benchmark's episodes per batch for ``device`` (``"auto"`` resolved as the benchmark resolves it)."""
    from feature_nets.devices import resolve_device

    return CUDA_BATCH_SIZE if resolve_device(device).type == "cuda" else CPU_BATCH_SIZE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--env", required=True, help="env id")
    parser.add_argument("--agents", required=True,
                        help="comma-separated agent names; BASE:LABEL is a named variant of agent BASE "
                             "(e.g. sb3-a2c:gamma1, with --agent-dir sb3-a2c:gamma1=DIR)")
    add_agent_dir(parser)
    add_import(parser)
    parser.add_argument("--episodes", type=int, default=500, help="evaluation images, spread evenly over the split (default 500)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the random agent (default 3)")
    parser.add_argument("--out", required=True, help="output folder")
    add_env_kwarg(parser)
    parser.add_argument("--fit-split", default=None,
                        help="split on which budgeted thresholds are fitted (default: val for the cluttered task, "
                             "else held-out images of the evaluation split, disjoint from the evaluated ones)")
    parser.add_argument("--fit-episodes", type=int, default=None, help="images used to fit thresholds (default N)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"episodes per batch (default: {CPU_BATCH_SIZE} on the CPU, {CUDA_BATCH_SIZE} on a GPU)")
    parser.add_argument("--device", default="auto", help="torch device (default: CUDA when available)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--reference", default="auto",
                        help="agent the others are compared with on the same images (default: paper-ppo when "
                             "benchmarked; 'none' for no comparison)")
    parser.add_argument("--margin", type=float, default=None, metavar="M",
                        help="equivalence margin in top-1 points: the table says 'equivalent within ±M' when the "
                             "last-step difference's paired 95%% interval lies inside ±M, 'not worse than −M' when "
                             "only its lower end is above −M (default: no verdict)")
    parser.add_argument("--thresholds", choices=("fit", "checkpoint"), default="fit",
                        help="budgeted thresholds: 'fit' (default: each agent's fitted on its own fit-split outputs) "
                             "or 'checkpoint' (paper-ppo with the checkpoint's policy uses the checkpoint's stored "
                             "dynamic_threshold; the other agents keep fitted ones)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also write TensorBoard logs of the results into DIR (e.g. OUT/tensorboard): per agent "
                             "top-1 after each look, the budgeted curve, its looks on a few images (needs the train "
                             "extra)")
    add_trust_agent(parser)
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="run only part K of N of the evaluation images (batch k goes to part k mod N) into --out, "
                             "one job per part; join the parts with gfnet merge (not with torchrun, whose ranks "
                             "share the images themselves)")


def add_trust_agent(parser: argparse.ArgumentParser) -> None:
    """``--trust-agent``: let agent files be unpickled fully (shared by benchmark, show and train-agent)."""
    parser.add_argument("--trust-agent", action="store_true",
                        help="load agent files with full unpickling, which can run code: only for files you trust "
                             "(by default only known-safe data types are read from them)")


def run(args: argparse.Namespace) -> int:
    import_user_modules(args.imports)  # before any agent lookup: the user's code registers its agents
    from agents.benchmark.run import run_benchmark

    names = [a.strip() for a in args.agents.split(",") if a.strip()]
    # bad input raises; gfnet_cli.main prints it as one line and exits with 2
    run_benchmark(args.env, names, args.out, episodes=args.episodes, seeds=args.seeds,
                  agent_dirs=parse_agent_dirs(args.agent_dir), env_kwargs=parse_env_kwargs(args.env_kwarg),
                  fit_split=args.fit_split, fit_episodes=args.fit_episodes,
                  batch_size=args.batch_size if args.batch_size is not None else default_batch_size(args.device),
                  device=args.device, seed=args.seed, trust_agent=args.trust_agent,
                  reference=None if args.reference.lower() == "none" else args.reference, margin=args.margin,
                  thresholds=args.thresholds, tensorboard=args.tensorboard, shard=args.shard)
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: rank 0 wrote them
        print(f"results in {args.out}: results.json, results.csv, results.md, *.png, report.html (open it in a "
              "browser)" + (f"; TensorBoard logs in {args.tensorboard}" if args.tensorboard else ""))
    return 0
