"""``gfnet train-default-task``: the embedded default task's whole GFNet pipeline, from nothing, on a CPU.

Stages (each resumable): ``pretrain`` (the small-CNN encoder on clean items), ``stage1`` (encoders + classifier
with random patches), ``stage2`` (the paper's PPO for the policy), ``stage3`` (fine-tuning with the learned
policy's patches), ``sb3`` (a Stable-Baselines3 PPO agent on the shipped networks). ``--ship`` picks the
networks of ``OUT/cluttered_fmnist_gfnet.pth.tar``; ``--install`` makes them (and the SB3 agent) the env's
defaults in ``gfnet_env/weights/``. Per-step test top-1 after every network stage and the time of every stage
go to ``OUT/pipeline.json``. The pipeline itself is :mod:`gfnet_cli.default_task`; this file parses the options.

Example::

    nice gfnet train-default-task --out runs/default_task                     # every stage
    gfnet train-default-task --out runs/default_task --stop-after stage1       # the stage-1 model only
    gfnet train-default-task --out runs/default_task --resume                  # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gfnet_cli.default_task import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gfnet train-default-task``."""
    parser.description = __doc__.split("\n\n")[0]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("example:\n  nice gfnet train-default-task --out runs/default_task\n"
                     "  gfnet train-default-task --out runs/default_task --stop-after stage1 --install")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--stop-after", choices=STAGES, default="sb3", help="last stage to run (default: all)")
    parser.add_argument("--pretrain-epochs", type=int, default=2, help="encoder pretraining epochs on clean items")
    parser.add_argument("--epochs", type=int, default=None,
                        help="stage-1 epochs, fresh clutter each (default: the small_cnn recipe's, 16)")
    parser.add_argument("--batch-size", type=int, default=None, help="stage-1/3 batch size (default: the recipe's, 64)")
    parser.add_argument("--ppo-steps", type=int, default=440_000,
                        help="stage-2 env steps (4 focus steps per canvas: 440k = 2 passes over the train canvases)")
    parser.add_argument("--ppo-batch-size", type=int, default=256, help="stage-2 images per PPO update")
    parser.add_argument("--stage3-epochs", type=int, default=3, help="stage-3 epochs")
    parser.add_argument("--sb3-steps", type=int, default=300_000, help="SB3 PPO env steps")
    parser.add_argument("--ship", choices=("stage2", "stage3"), default="stage2",
                        help="which networks become the final/installed checkpoint (default: stage2, see "
                             "gfnet_cli/default_task.py)")
    parser.add_argument("--train-samples", type=int, default=None, help="use only this many training canvases")
    parser.add_argument("--eval-samples", type=int, default=None, help="use only this many test canvases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 is best on 2 cores)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine more threads spin-wait "
                             "against other processes and run many times slower; use 2 on an idle machine)")
    parser.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files (default: search)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run that --out holds: everything in it is deleted first (without --resume "
                            "or --overwrite such a folder is refused)")
    parser.add_argument("--force-settings", action="store_true",
                        help="with --resume: continue the interrupted stage even if its settings differ from the saved "
                             "run's (they apply from the resumed step on, and the checkpoint records it)")
    parser.add_argument("--install", action="store_true",
                        help="copy the final checkpoint to gfnet_env/weights/ (the env's default weights)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--evaluate", metavar="CHECKPOINT", default=None,
                        help="only evaluate CHECKPOINT on the test canvases (per-step top-1 per patch choice), "
                             "write OUT/eval.json and exit")
    parser.add_argument("--store-results", metavar="CHECKPOINT", default=None,
                        help="only measure paper-ppo (CHECKPOINT's policy) with the benchmark's protocol on all test "
                             "canvases (--eval-samples: fewer), thresholds fitted on the val split, and write "
                             "anytime_classification, budgeted_batch_classification and dynamic_threshold into "
                             "CHECKPOINT (every other entry kept bit for bit); the benchmark's results go to "
                             "OUT/stored_results.json")
    parser.add_argument("--oracle", action="store_true",
                        help="also measure the greedy 7×7 label oracle (an upper bound; a few minutes)")


#: Files of a pipeline run in --out (the report, the first stage's output): a folder holding one holds a run.
RUN_FILES = ("pipeline.json", "pretrained_encoder.pt")


def run(args: argparse.Namespace) -> int:
    from feature_nets.folders import OutputFolder

    with OutputFolder(args.out, "train-default-task").claim():  # one writer per folder, before any work
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    from gfnet_cli.default_task import PipelineConfig, evaluate_checkpoint, store_results, train_default_task

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.store_results:
        stored = store_results(args.store_results, args.out, eval_samples=args.eval_samples, data_root=args.data_root,
                               progress=not args.no_progress)
        print(json.dumps(stored, indent=1))
        return 0
    if args.evaluate:
        ev = evaluate_checkpoint(args.evaluate, args.out, eval_samples=args.eval_samples, data_root=args.data_root,
                                 oracle=args.oracle)
        print(json.dumps(ev, indent=1))
        return 0
    if args.force_settings and not args.resume:
        raise ValueError("--force-settings only applies to a resumed run: add --resume (or drop --force-settings)")
    existing = [n for n in RUN_FILES if (Path(args.out) / n).exists()]
    if existing and not (args.resume or args.overwrite):
        raise ValueError(f"--out {args.out} holds a run ({', '.join(existing)}); continue it with --resume, replace it "
                         "with --overwrite, or choose another --out")
    if existing and args.overwrite:
        from agents.trained import clear_run

        clear_run(args.out, inputs=[args.data_root])  # no stage of the replaced run is ever resumed
    cfg = PipelineConfig(out=args.out, stop_after=args.stop_after, pretrain_epochs=args.pretrain_epochs,
                         epochs=args.epochs, batch_size=args.batch_size, ppo_steps=args.ppo_steps,
                         ppo_batch_size=args.ppo_batch_size, stage3_epochs=args.stage3_epochs,
                         sb3_steps=args.sb3_steps, ship=args.ship, train_samples=args.train_samples,
                         eval_samples=args.eval_samples, seed=args.seed, workers=args.workers,
                         data_root=args.data_root, resume=args.resume, force_settings=args.force_settings,
                         install=args.install,
                         progress=not args.no_progress)
    train_default_task(cfg, command="gfnet train-default-task " + " ".join(_argv(args)))
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The options as given on the command line (recorded in ``pipeline.json``)."""
    out = []
    for k, v in vars(args).items():
        if k.startswith("_") or k in ("func", "command") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [flag, str(v)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gfnet train-default-task")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
