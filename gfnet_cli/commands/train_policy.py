"""Stage 2 of GFNet training: the paper's PPO for the patch policy on the frozen networks of a checkpoint.

Trains `paper-ppo` (as `gfnet train-agent --agent paper-ppo` does, on the env's train split unless
--env-kwarg split=... says otherwise) with the checkpoint's encoders and classifier frozen, then writes a copy
of the checkpoint in the official format with the learned policy in its `policy` entry:
OUT/<checkpoint name>_stage2.pth.tar (results measured with the old policy are dropped from the copy).
TensorBoard logs, progress.csv and the resumable agent are in OUT too.

--out is locked for the run (a second run on it is refused); a folder that holds a run is continued with
--resume or replaced with --overwrite (its files are deleted once the inputs are checked), never started over.

On N processes: torchrun --nproc-per-node N $(which gfnet) train-policy ... (each rank rolls out batch-size / N
images of every batch on its own device, gradients averaged; rank 0 writes OUT; docs/training.md, "Stage 2 on N
processes": --batch-size is the global batch, a multiple of N).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import add_env_kwarg, parse_env_kwargs, raw_formatter

EXAMPLE = """  gfnet train-policy --checkpoint stage1.pth.tar --env GFNet-ImageNet-v0 \\
      --env-kwarg data_root=/data/imagenet \\
      --steps 4000000 --out runs/stage2
  gfnet train-policy --checkpoint runs/fmnist/cluttered_fmnist_gfnet_stage1.pth.tar \\
      --env GFNet-ClutteredFashionMNIST-v0 --steps 400000 --out runs/fmnist_stage2
  torchrun --nproc-per-node 8 $(which gfnet) train-policy --checkpoint stage1.pth.tar --env GFNet-ImageNet-v0 \\
      --env-kwarg data_root=/data/imagenet --steps 4000000 --batch-size 512 --out runs/stage2_8gpu"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--checkpoint", required=True, help="GFNet checkpoint (*.pth.tar) whose networks are frozen")
    parser.add_argument("--env", required=True, help="env id whose images are used (GFNet-ImageNet-v0, ...)")
    add_env_kwarg(parser)
    parser.add_argument("--steps", type=int, required=True, help="env steps (B·(T-1) per PPO update)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64, help="images per PPO update (default 64)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4, the paper's)")
    parser.add_argument("--init", choices=["fresh", "checkpoint"], default="fresh",
                        help="start from a fresh policy (the paper's stage 2, default) or the checkpoint's policy")
    parser.add_argument("--device", default="auto", help="torch device")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run that --out holds: its files are deleted once the inputs are checked "
                            "(without --resume or --overwrite such a folder is refused)")
    parser.add_argument("--force-settings", action="store_true",
                        help="with --resume: accept settings that differ from the saved run's (recorded)")
    parser.add_argument("--trusted-pickle", action="store_true",
                        help="allow full unpickling of a legacy checkpoint you trust")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def stage2_checkpoint_path(checkpoint: str | Path, out_dir: str | Path) -> Path:
    name = Path(checkpoint).name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(out_dir) / f"{name}_stage2.pth.tar"


def run(args: argparse.Namespace) -> int:
    from feature_nets.folders import OutputFolder

    if _rank() > 0:  # torchrun: rank 0 holds the folder's lock and writes; the others only train
        return _run(args)
    with OutputFolder(args.out, "train-policy").claim():  # one writer per folder, before any work
        return _run(args)


def _rank() -> int:
    """This process's torchrun rank (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def _existing_run(args: argparse.Namespace) -> list[str]:
    """The files of an earlier run in --out (empty: none)."""
    from agents.paper_ppo.files import AGENT_FILE, LATEST_FILE
    from agents.trained import AGENT_JSON

    names = (AGENT_JSON, AGENT_FILE, LATEST_FILE, stage2_checkpoint_path(args.checkpoint, args.out).name)
    return [n for n in names if (Path(args.out) / n).exists()]


def _run(args: argparse.Namespace) -> int:
    from agents.paper_ppo import save_policy_into_checkpoint, train_paper_ppo
    from agents.trained import clear_run
    from feature_nets.checkpoint import load_checkpoint, read_checkpoint_dict

    existing = _existing_run(args)
    if existing and not (args.resume or args.overwrite):
        raise ValueError(f"--out {args.out} holds a run ({', '.join(existing)}); continue it with --resume, replace "
                         "it with --overwrite, or choose another --out")
    env_kwargs = parse_env_kwargs(args.env_kwarg)
    if "checkpoint" in env_kwargs:
        raise ValueError("pass the checkpoint with --checkpoint, not --env-kwarg checkpoint=...")
    if "trusted_pickle" in env_kwargs:
        raise ValueError("pass --trusted-pickle (for a checkpoint you trust), not --env-kwarg trusted_pickle=...")
    # a CheckpointError (missing, refused or broken file) is printed in one line by gfnet_cli.main
    has_policy = "policy" in read_checkpoint_dict(args.checkpoint, trusted_pickle=args.trusted_pickle)
    model = load_checkpoint(args.checkpoint, trusted_pickle=args.trusted_pickle, with_policy=has_policy).model
    if args.init == "checkpoint" and model.policy is None:
        raise ValueError("--init checkpoint, but the checkpoint stores no policy; use --init fresh")
    agent = train_paper_ppo(args.env, args.steps, args.out, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                            init_policy=model.policy if args.init == "checkpoint" else None, resume=args.resume,
                            force_settings=args.force_settings, device=args.device,
                            progress=not args.no_progress, checkpoint=model,
                            on_start=(lambda: clear_run(args.out, inputs=[args.checkpoint, *env_kwargs.values()]))
                            if existing and args.overwrite else None,
                            **env_kwargs)
    if _rank() > 0:
        return 0
    dst = save_policy_into_checkpoint(agent.policy.cpu(), args.checkpoint,
                                      stage2_checkpoint_path(args.checkpoint, args.out),
                                      trusted_pickle=args.trusted_pickle, stage=2)
    print(f"wrote {dst} (the checkpoint with the learned policy)")
    return 0
