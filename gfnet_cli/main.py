"""The ``gfnet`` console script: one sub-command per module of :mod:`gfnet_cli.commands`.

Each module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file assembles them, checks the
numeric arguments every command shares (:data:`MINIMUMS`) before any work, and turns a command's input error
(``ValueError``, ``TypeError``, ``KeyError``, ``OSError``, ``CheckpointError``) into one line on stderr,
``gfnet <command>: <message>``, with exit status 2. Ctrl-C (``KeyboardInterrupt``) in any command is one line too,
``gfnet <command>: interrupted; <what is kept>``, with exit status 130 (128 + SIGINT, as a shell reports it); a
command that keeps something says what in the interrupt's message, else :data:`INTERRUPTED` does.
``--device`` is checked before any work (:func:`feature_nets.devices.check_device`: ``cuda`` on a machine without a
GPU is refused in one line). ``GFNET_DEBUG=1`` shows the traceback instead. A command
that needs an optional part of the install (:data:`COMMAND_EXTRAS`) checks for it before any work, and a missing
one is such a line too, naming the extra to install (``pip install 'gfnet-gym[benchmark]'``). Before any command
it tunes glibc's malloc for the networks' CPU tensors (:mod:`gfnet_env.data.host_memory`; ``GFNET_TUNE_MALLOC=0``
turns that off).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from feature_nets.extras import check_extra
from gfnet_env.data.host_memory import keep_freed_memory_unless_disabled

#: (sub-command, module, one-line help)
COMMANDS: list[tuple[str, str, str]] = [
    ("train-agent", "gfnet_cli.commands.train_agent", "train an agent (paper-ppo, sb3-*) on a GFNet env"),
    ("benchmark", "gfnet_cli.commands.benchmark", "compare agents on the same images: tables, CSV, JSON, plots"),
    ("compare", "gfnet_cli.commands.compare", "merge benchmark outputs of the same protocol into one table"),
    ("merge", "gfnet_cli.commands.merge", "join the folders of a benchmark's --shard K/N runs into its one result"),
    ("report", "gfnet_cli.commands.report",
     "write a benchmark folder's report.html: tables, curves, looks, failure gallery (one self-contained page)"),
    ("show", "gfnet_cli.commands.show", "draw the patches agents choose (PNG or GIF)"),
    ("train-policy", "gfnet_cli.commands.train_policy",
     "stage 2: train the paper's policy on a checkpoint's frozen networks and write it back"),
    ("train-features", "gfnet_cli.commands.train_features", "stages 1 and 3: train the encoders and classifier"),
    ("train-default-task", "gfnet_cli.commands.train_default_task",
     "train the embedded default task's GFNet from scratch (CPU)"),
    ("prepare-data", "gfnet_cli.commands.prepare_data", "write a split's exact prepared evaluation cache"),
]

#: What a command needs beyond the core install: (extra, top-level import names), checked before it starts.
#: Agents check their own needs when they are made (an SB3 agent: the ``sb3`` extra).
COMMAND_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "benchmark": ("benchmark", ("matplotlib", "tqdm")),
    "show": ("benchmark", ("matplotlib",)),
    "train-agent": ("train", ("tensorboard", "tqdm")),
    "train-policy": ("train", ("tensorboard", "tqdm")),
    "train-features": ("train", ("tensorboard", "tqdm")),
    "train-default-task": ("train", ("tensorboard", "tqdm", "stable_baselines3")),
}

#: Smallest valid value of numeric options, by destination (``--fit-episodes`` → ``fit_episodes``), for the
#: commands that have them; None values (option left at its default) are not checked.
MINIMUMS: dict[str, dict[str, float]] = {
    "train-agent": {"steps": 1, "seeds": 1, "n_envs": 1, "grid_size": 1, "eval_episodes": 1, "batch_size": 1},
    "train-policy": {"steps": 1, "batch_size": 1},
    "show": {"n": 1, "start": 0, "duration_ms": 1},
    "report": {"gallery_images": 1},
    "benchmark": {"episodes": 1, "seeds": 1, "fit_episodes": 1, "batch_size": 1},
    "train-features": {"patch_size": 1, "T": 1, "image_size": 1, "small_feature_num": 1, "epochs": 1,
                       "batch_size": 1, "train_samples": 1, "val_samples": 1, "max_steps_per_epoch": 1,
                       "pretrain_epochs": 0, "workers": 0, "threads": 1},
    "train-default-task": {"pretrain_epochs": 0, "epochs": 1, "batch_size": 1, "ppo_steps": 0, "ppo_batch_size": 1,
                           "stage3_epochs": 0, "sb3_steps": 0, "train_samples": 1, "eval_samples": 1, "workers": 0,
                           "threads": 1},
}
#: What an interrupted command leaves, for the one line of Ctrl-C (a command's own ``KeyboardInterrupt`` message,
#: where it has one, says it more precisely).
INTERRUPTED: dict[str, str] = {
    "train-agent": "what was saved so far is kept in --out; continue it with --resume",
    "train-policy": "the last complete batch is kept in --out; continue with --resume",
    "train-features": "the last complete step is kept in --out/last.pth.tar; continue with --resume",
    "train-default-task": "the finished stages and the last saved state are kept in --out; continue with --resume",
    "benchmark": "--out holds complete results only (the previous ones, unless the new ones were already being "
                 "moved into place); run it again to finish",
    "compare": "nothing was written: --out holds its previous results, unchanged",
    "prepare-data": "nothing was written: the previous cache is unchanged",
    "show": "nothing was written",
}
#: The commands that run as N processes under torchrun (docs/scaling.md); the others refuse a WORLD_SIZE > 1, since
#: every rank would do the whole job and write the same --out.
TORCHRUN_COMMANDS = ("benchmark", "train-policy", "train-features")
#: Exit status of an interrupted command: 128 + SIGINT.
EXIT_INTERRUPTED = 130
#: Options that must be > 0 (learning rates), in every command that has them.
POSITIVE = ("lr", "lr_backbone", "lr_classifier")
#: Error types that mean bad input (a bug shows its traceback). CheckpointError and MissingExtraError (an
#: optional dependency not installed) are matched by name, so that the CLI need not import torch before a
#: command does.
INPUT_ERRORS = (ValueError, TypeError, KeyError, OSError)

EXAMPLE = """Example:
  gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 --agents random,center,saliency,oracle,paper-ppo --out results/
  gfnet train-agent --agent sb3-ppo --env GFNet-ClutteredFashionMNIST-v0 --steps 200000 --out runs/sb3_ppo
  gfnet show --env GFNet-ClutteredFashionMNIST-v0 --agent paper-ppo --n 8 --out looks.png
  gfnet COMMAND --help    (each sub-command's options and examples)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gfnet",
        description="GFNet (Glance and Focus Networks) as a research instrument: train patch-selection agents, "
                    "benchmark them fairly, draw where they look, and train GFNet's own networks.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module, help_text in COMMANDS:
        mod = importlib.import_module(module)
        p = sub.add_parser(command, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse numeric options below their minimum (:data:`MINIMUMS`, :data:`POSITIVE`) with a ``ValueError``."""
    for dest, minimum in MINIMUMS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None and value < minimum:
            raise ValueError(f"--{dest.replace('_', '-')} must be >= {minimum}, got {value}")
    for dest in POSITIVE:
        value = getattr(args, dest, None)
        if value is not None and not value > 0:
            raise ValueError(f"--{dest.replace('_', '-')} must be > 0, got {value}")
    world = os.environ.get("WORLD_SIZE", "1")
    if args.command not in TORCHRUN_COMMANDS and world.strip() not in ("", "0", "1"):
        raise ValueError(f"gfnet {args.command} runs in one process, but this is one of WORLD_SIZE={world} processes "
                         "(torchrun): run it without torchrun. Under torchrun run "
                         f"{', '.join(TORCHRUN_COMMANDS)} (docs/scaling.md: the paper's PPO with train-policy, "
                         "other RL libraries through TorchRL's collectors)")
    device = getattr(args, "device", None)
    if isinstance(device, str) and device not in ("auto", "cpu"):
        from feature_nets.devices import check_device

        check_device(device, "--device")


def is_input_error(error: BaseException) -> bool:
    """Whether ``error`` reports bad input (printed in one line) rather than a bug (shown with its traceback)."""
    return isinstance(error, INPUT_ERRORS) or any(c.__name__ in ("CheckpointError", "MissingExtraError")
                                                  for c in type(error).__mro__)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without its quotes, or saying what a bare key is; an OSError's
    text and file, not its errno)."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    elif isinstance(error, KeyError) and error.args and not (isinstance(error.args[0], str)
                                                              and len(error.args[0].split()) > 1):
        # a bare key ("gfnet compare: center"): a lookup the input validators missed; say what it is
        text = (f"an entry named {error.args[0]!r} is missing from an input (a file or a setting it expects); "
                "check the file written for this command, or set GFNET_DEBUG=1 to see where it was read")
    else:
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(str(text).split())
    return text or type(error).__name__


def interrupted_line(command: str, error: KeyboardInterrupt) -> str:
    """The one line of an interrupted command: what it keeps (the interrupt's message, else :data:`INTERRUPTED`)."""
    kept = one_line(error) if error.args and str(error.args[0]).strip() else INTERRUPTED.get(command, "")
    return f"gfnet {command}: interrupted" + (f"; {kept}" if kept else "")


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        parser = build_parser()  # imports every command (torch among them): Ctrl-C may come here already
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 1
        return _run(args)
    except KeyboardInterrupt as e:  # Ctrl-C, in any command: one line and 130, what was computed stays as it says
        if os.environ.get("GFNET_DEBUG", "") not in ("", "0"):
            raise
        if args is None:  # still starting: nothing was done yet
            words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
            command = words[0] if words and words[0] in {c for c, _, _ in COMMANDS} else None
            print(f"gfnet{' ' + command if command else ''}: interrupted while starting; nothing was done",
                  file=sys.stderr)
        else:
            print(interrupted_line(args.command, e), file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    # the networks' CPU activations come and go every forward pass: keep freed memory mapped for the next one
    # rather than page-faulting it in again (gfnet_env/data/host_memory.py; GFNET_TUNE_MALLOC=0 leaves malloc alone)
    keep_freed_memory_unless_disabled()
    try:
        check_arguments(args)
        if args.command in COMMAND_EXTRAS:
            extra, modules = COMMAND_EXTRAS[args.command]
            check_extra(modules, extra, "this command")
        return int(args._run(args) or 0)
    except Exception as e:  # noqa: BLE001 - input errors become one line; anything else is re-raised
        if not is_input_error(e) or os.environ.get("GFNET_DEBUG", "") not in ("", "0"):
            raise
        print(f"gfnet {args.command}: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
