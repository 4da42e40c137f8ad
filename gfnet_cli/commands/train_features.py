"""Stages 1 and 3 of GFNet training: the encoders and the classifier (see docs/training.md).

Stage 1 trains with uniformly random patch locations; stage 3 fine-tunes with locations sampled from a
learned policy (from stage 2, `gfnet train-policy`). Data: any ImageFolder (--data-root with train/ and
val/, transforms of the backbone), or the training data of a registered task (--task cluttered-fashion-mnist,
the default, with --model small_cnn; --task imagenet; a task's name or env id). Defaults per backbone family follow the paper (learning rates, weight decay, dsn ratio,
epochs, frozen global encoder for MobileNet-V3 / EfficientNet); every option below overrides them.
Writes OUT/last.pth.tar every epoch, OUT/best.pth.tar (best last-step val top-1), OUT/history.json and
TensorBoard logs in OUT/tensorboard; --resume continues exactly where a run stopped (Ctrl-C saves its last
complete step first); with other settings only with --force-settings.
Under torchrun the same command trains on N processes (--batch-size is the global batch).
--out is locked for the run (a second run on it is refused); a folder that holds a run (last.pth.tar,
best.pth.tar, history.json) is continued with --resume or replaced with --overwrite, never started over.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXAMPLE = """  gfnet train-features --model small_cnn --task cluttered-fashion-mnist --stage 1 --out runs/fmnist_s1
  gfnet train-features --model resnet50 --patch-size 96 --T 5 --data-root /data/imagenet --stage 1 \\
      --backbone-weights resnet50_imagenet.pth --out runs/r50_s1
  torchrun --nproc_per_node=8 -m gfnet_cli.commands.train_features --model resnet50 --patch-size 96 --T 5 \\
      --data-root /data/imagenet --stage 1 --backbone-weights resnet50_imagenet.pth --workers 8 --out runs/r50_s1
  gfnet train-features --stage 3 --init runs/r50_s1/best.pth.tar --policy-checkpoint runs/r50_s2/best_stage2.pth.tar \\
      --data-root /data/imagenet --out runs/r50_s3"""

#: The task trained on without --task or --data-root: the embedded default task.
DEFAULT_TASK = "cluttered-fashion-mnist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gfnet train-features``."""
    parser.description = __doc__.strip().split("\n\n")[0] + "\n\n" + __doc__.strip().split("\n\n")[1]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "Example:\n" + EXAMPLE
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="a released architecture (resnet50, densenet121, regnety_600m, mobilenetv3_large_100, "
                        "efficientnet_b2, ...) or small_cnn; not needed with --init")
    g.add_argument("--patch-size", type=int, default=None, help="patch side P (default 96; 28 for small_cnn)")
    g.add_argument("--T", type=int, default=None, help="steps: glance + T-1 focus steps (default 5)")
    g.add_argument("--init", default=None,
                   help="start from this GFNet checkpoint (architecture, P and T are taken from it), e.g. the "
                        "stage-1 result for stage 3")
    g.add_argument("--backbone-weights", default=None,
                   help="state dict of a pretrained plain backbone (torchvision/timm key names; pycls for RegNet) "
                        "loaded into both encoders, as the paper starts stage 1 from ImageNet-pretrained backbones")
    g.add_argument("--policy-checkpoint", default=None,
                   help="stage 3: GFNet checkpoint (or policy state dict) whose policy chooses the patches")
    g.add_argument("--small-widths", default="32,64,128", help="small_cnn: channels of each stride-2 stage")
    g.add_argument("--small-feature-num", type=int, default=128, help="small_cnn: pooled vector length")
    g.add_argument("--image-size", type=int, default=None,
                   help="small_cnn on an ImageFolder: side S of the images (default 112)")
    g = parser.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--data-root", default=None, help="ImageFolder root with train/ and val/ (e.g. ImageNet)")
    src.add_argument("--task", default=None,
                     help="a registered task's name or env id instead of an ImageFolder (default: "
                          f"{DEFAULT_TASK}, the embedded task, with --model small_cnn)")
    g.add_argument("--task-root", "--fmnist-root", dest="task_root", default=None,
                   help="the task's own data folder (the embedded task: the Fashion-MNIST IDX files, default: "
                        "search; imagenet: the ImageNet root, default GFNET_IMAGENET)")
    g.add_argument("--train-samples", type=int, default=None,
                   help="use only N training samples, spread evenly over the split (every class in proportion)")
    g.add_argument("--val-samples", type=int, default=None,
                   help="use only N validation samples, spread evenly over the split (every class in proportion, "
                        "as the benchmark's images)")
    g = parser.add_argument_group("training (defaults: the paper's recipe for the backbone family)")
    g.add_argument("--stage", type=int, choices=[1, 3], default=1, help="1: random patches; 3: the policy's patches")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="global batch size (default 256; 64 for small_cnn)")
    g.add_argument("--lr-backbone", type=float, default=None, help="encoder learning rate")
    g.add_argument("--lr-classifier", type=float, default=None, help="classifier learning rate")
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--dsn-ratio", type=float, default=None, help="weight of the encoders' own-head loss")
    g.add_argument("--freeze-global", choices=["yes", "no"], default=None,
                   help="keep the global encoder fixed (default: yes for MobileNet-V3/EfficientNet)")
    g.add_argument("--glance-interpolation", choices=["bicubic", "bilinear", "model"], default=None,
                   help="glance resize while training (default bicubic as the paper; small_cnn: its own mode)")
    g.add_argument("--lr-schedule", choices=["epoch", "iteration"], default=None,
                   help="cosine learning rate set once per epoch (the original; default) or every step "
                        "(small_cnn's recipe)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout on each look's pooled features in training (default: the recipe's; the original "
                        "uses 0.2 for MobileNet-V3, 0.3 for EfficientNet, 0 otherwise)")
    g.add_argument("--drop-connect", type=float, default=None,
                   help="largest stochastic-depth rate of MobileNet-V3 / EfficientNet blocks (default: the "
                        "recipe's, 0.2 for them as the original)")
    g.add_argument("--glance-logits", choices=["classifier", "inference"], default=None,
                   help="logits of the glance's loss term: the classifier's own step-0 output (the original; "
                        "default) or the inference path's (RegNet's GRU step-0 logits, the project's earlier way)")
    g.add_argument("--train-crop-interpolation", choices=["bilinear", "dataset"], default="bilinear",
                   help="resize of the training RandomResizedCrop: bilinear for every backbone as the original "
                        "(default), or the backbone's evaluation interpolation")
    g.add_argument("--pretrain-epochs", type=int, default=None,
                   help="stage 1 from scratch on a task with pretraining items (the default task): pretrain the "
                        "encoder on clean items for this many epochs first (default 2; 0 to skip)")
    g.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap optimiser steps per epoch (quick runs)")
    g.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers per process (default: 0 on the default task, whose canvases are made in "
                        "memory; else 8, but never more than the CPU cores this process may use)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the GPU if there is one)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process (on a shared CPU machine 1 avoids spin-wait slowdowns)")
    g.add_argument("--keep-epoch-checkpoints", action="store_true", help="also keep OUT/epoch_XXX.pth.tar")
    g.add_argument("--out", required=True, help="output folder")
    again = g.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/last.pth.tar")
    again.add_argument("--overwrite", action="store_true",
                       help="replace the run that --out holds: its checkpoints, history.json and TensorBoard logs "
                            "are deleted once the inputs are checked (without --resume or --overwrite such a "
                            "folder is refused)")
    g.add_argument("--force-settings", action="store_true",
                   help="with --resume: continue even where the settings differ from the saved run's (they apply "
                        "from the resumed step on and are recorded in the checkpoints' forced_settings)")
    g.add_argument("--trusted-pickle", action="store_true", help="allow full unpickling of --init files you trust")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _fail(msg: str) -> int:
    print(f"gfnet train-features: error: {msg}", file=sys.stderr)
    return 2


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _task(args):
    """The :class:`~gfnet_env.tasks.Task` trained on (None: the --data-root ImageFolder)."""
    from gfnet_env.tasks import get_task

    if args.data_root:
        return None
    task = get_task(args.task or DEFAULT_TASK)
    if task.training_sets is None:
        raise ValueError(f"the task {task.cli_name} ({task.env_id}) has no training data (its Task sets no "
                         "training_sets); give --data-root ROOT with train/ and val/ instead")
    return task


def _families(task) -> str:
    return " or ".join(f"--model {f}" for f in task.model_families)


def _model(args, task):
    """The GFNet to train: from --init, or built from --model for the task / the ImageFolder."""
    from feature_nets.training import build_model, load_model

    if args.init:
        model = load_model(args.init, trusted_pickle=args.trusted_pickle)
        for name, val, have in (("--patch-size", args.patch_size, model.patch_size), ("--T", args.T, model.T)):
            if val is not None and val != have:
                print(f"note: {name} {val} ignored; {args.init} has {have}", file=sys.stderr)
        if args.model and args.model != model.spec.config.model_name:
            raise ValueError(f"--model {args.model} but --init {args.init} holds a {model.spec.config.model_name}")
        return model
    if not args.model:
        raise ValueError("give --model NAME (or --init CHECKPOINT)")
    encoder_kwargs = dict(widths=[int(w) for w in args.small_widths.split(",") if w.strip()],
                          feature_num=args.small_feature_num)
    common = dict(T=args.T or 5, patch_size=args.patch_size, encoder_kwargs=encoder_kwargs)
    if args.data_root:
        from gfnet_env.data.image_folder import ImageFolderDataset

        n_classes = len(ImageFolderDataset(Path(args.data_root) / "train").classes)
        return build_model(args.model, n_classes, image_size=args.image_size, **common)
    if task.model_families and args.model not in task.model_families:
        raise ValueError(f"--model {args.model} does not fit the task {task.cli_name} (it is for "
                         f"{_families(task)}); to train on an ImageFolder give --data-root")
    if task.num_classes is None:
        raise ValueError(f"the task {task.cli_name} does not say its number of classes (Task.num_classes); "
                         "start from --init CHECKPOINT")
    return build_model(args.model, task.num_classes, image_size=task.image_size or args.image_size, **common)


def _training_options(args):
    from gfnet_env.tasks import TrainingOptions

    return TrainingOptions(data_root=args.task_root, train_samples=args.train_samples, val_samples=args.val_samples,
                           seed=args.seed, train_crop_interpolation=args.train_crop_interpolation)


def _datasets(args, model, task):
    """(train, val) of the task's training data or of the ImageFolder, prepared for the model."""
    from gfnet_env.tasks import image_folder_training_sets

    if task is None:
        return image_folder_training_sets(args.data_root, model, _training_options(args))
    if task.model_families and model.spec.config.family not in task.model_families:
        size = f"{task.image_size}×{task.image_size} images, " if task.image_size else ""
        raise ValueError(f"--task {task.cli_name} needs {_families(task)} ({size}{task.num_classes} classes)")
    return task.training_sets(model, _training_options(args))


#: DataLoader workers on an ImageFolder without --workers, before the cap by the cores present.
IMAGE_FOLDER_WORKERS = 8


def _workers(args, task) -> int:
    """--workers, else the task's default (:attr:`~gfnet_env.tasks.Task.training_workers`; an ImageFolder:
    :data:`IMAGE_FOLDER_WORKERS`) capped by the cores present (:func:`feature_nets.devices.default_workers`)."""
    from feature_nets.devices import default_workers

    if args.workers is not None:
        if args.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {args.workers}")
        return args.workers
    return default_workers(task.training_workers if task is not None else IMAGE_FOLDER_WORKERS)


def _train_config(args, model, task):
    from feature_nets.training import TrainConfig

    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, lr_backbone=args.lr_backbone,
                     lr_classifier=args.lr_classifier, weight_decay=args.weight_decay, dsn_ratio=args.dsn_ratio,
                     seed=args.seed, max_steps_per_epoch=args.max_steps_per_epoch, device=args.device,
                     keep_epoch_checkpoints=args.keep_epoch_checkpoints, progress=not args.no_progress,
                     workers=_workers(args, task))
    if args.freeze_global is not None:
        overrides["freeze_global"] = args.freeze_global == "yes"
    for key in ("lr_schedule", "dropout", "drop_connect", "glance_logits"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = TrainConfig.for_model(model, stage=args.stage, **overrides)
    if args.glance_interpolation is not None:
        cfg.glance_interpolation = None if args.glance_interpolation == "model" else args.glance_interpolation
    return cfg


#: What a training stage writes into --out (feature_nets/training/loop.py): a folder holding one of the first three
#: holds a run; --overwrite deletes all of them.
RUN_FILES = ("last.pth.tar", "best.pth.tar", "history.json")
RUN_OUTPUTS = RUN_FILES + ("tensorboard",)


def _existing_run(out: Path) -> list[str]:
    """The files of an earlier training run in ``out`` (empty: none)."""
    names = [n for n in RUN_FILES if (out / n).exists()]
    return names + sorted(p.name for p in out.glob("epoch_*.pth.tar"))


def _clear_run(out: Path) -> None:
    """Delete the outputs of the run that --overwrite replaces (nothing else in the folder)."""
    import shutil

    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for path in out.glob("epoch_*.pth.tar"):
        path.unlink()


def run(args: argparse.Namespace) -> int:
    from feature_nets.folders import OutputFolder

    if _rank() != 0:  # under torchrun, rank 0 holds the folder (the others write nothing there)
        return _run(args)
    with OutputFolder(args.out, "train-features").claim():  # one writer per folder, before any work
        existing = _existing_run(Path(args.out))
        if existing and not (args.resume or args.overwrite):
            return _fail(f"--out {args.out} holds a training run ({', '.join(existing)}); continue it with --resume, "
                         "replace it with --overwrite, or choose another --out")
        return _run(args, clear=bool(existing) and args.overwrite)


def _run(args: argparse.Namespace, clear: bool = False) -> int:
    import torch

    from feature_nets.training import ensure_policy, load_backbone_weights, pretrain_into, train_stage
    from feature_nets.training.rng import reseed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    reseed_everything(args.seed)  # before anything random is built: the model's initial weights repeat with --seed
    try:
        task = _task(args)
        model = _model(args, task)
        train, val = _datasets(args, model, task)
        if args.stage == 3:
            ensure_policy(model, args.policy_checkpoint, args.trusted_pickle)
        if args.backbone_weights:
            load_backbone_weights(model, args.backbone_weights, args.trusted_pickle)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        return _fail(str(e))
    cfg = _train_config(args, model, task)
    if clear:  # the inputs are checked: the replaced run goes now (never mixed with the new one's files)
        _clear_run(Path(args.out))

    fresh = not args.init and not args.resume and not args.backbone_weights
    pre_epochs = args.pretrain_epochs if args.pretrain_epochs is not None else 2
    pretraining = task.pretraining_set if task is not None else None
    if fresh and args.stage == 1 and pretraining is None and _rank() == 0:
        print("warning: stage 1 from randomly initialised encoders; the paper starts from pretrained backbones "
              "(--backbone-weights FILE)", file=sys.stderr)
    if fresh and args.stage == 1 and pretraining is not None and pre_epochs > 0:
        pretrain_into(model, pretraining(_training_options(args)), epochs=pre_epochs, seed=args.seed,
                      device=cfg.device or "cpu", progress=cfg.progress and _rank() == 0,
                      log=(lambda m: print(m, flush=True)) if _rank() == 0 else None)
    try:
        result = train_stage(model, train, val, cfg, args.out, resume=args.resume, force_settings=args.force_settings)
    except KeyboardInterrupt:  # gfnet_cli/main.py prints it in one line, exit status 130
        raise KeyboardInterrupt(f"progress saved in {Path(args.out) / 'last.pth.tar'} at the last complete step; "
                                "continue with --resume") from None
    except FileNotFoundError as e:
        return _fail(str(e))
    if _rank() == 0:
        summary = {"out": str(args.out), "best_top1_last_step": result.best_top1,
                   "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
                   "last_epoch": result.history[-1] if result.history else None}
        print(json.dumps(summary, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gfnet train-features")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt as e:  # under torchrun (``python -m gfnet_cli.commands.train_features``)
        from gfnet_cli.main import EXIT_INTERRUPTED, interrupted_line

        if _rank() == 0:
            print(interrupted_line("train-features", e), file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
