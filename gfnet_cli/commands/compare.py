"""Merge benchmark outputs of the same protocol into one table.

Each folder is a `gfnet benchmark --out` folder. They must share the protocol fingerprint in results.json (same
env, weights, images, reward, max_steps and grid); otherwise the command says which fields differ and stops.
Prints the merged table; --out writes results.json / results.md of the merge. Every paired comparison is
recomputed from the folders' per_image.npz against one reference: the first folder's, or --reference NAME (one
folder is then enough: e.g. a benchmark re-read against random instead of paper-ppo); folders benchmarked with
different references are never shown under one "Δ vs" heading with their own numbers.

--out is written as the benchmark writes its folder: locked for the run (a folder in use by another run is
refused), every file (results.md, results.csv, the plots, per_image.npz, report.html, then results.json) staged and
moved into place at once, so that it holds the old results or the new merge, never a mix (the merge can be
compared again).
It cannot be one of the compared folders, and a compared folder in use by a running benchmark is refused (its
results may change while they are read).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import raw_formatter

EXAMPLE = """  gfnet compare results/baselines results/sb3_seeds --out results/all
  gfnet compare results/all --reference random"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("folders", nargs="+", help="benchmark output folders (two or more; one with --reference)")
    parser.add_argument("--out", default=None, help="folder for the merged results.json and results.md")
    parser.add_argument("--reference", default=None,
                        help="the agent every other one is compared with, recomputed from per_image.npz (default: "
                             "the first folder's reference; an agent of a later folder whose name was taken is "
                             "NAME@FOLDER; none: no comparison)")
    parser.add_argument("--margin", type=float, default=None, metavar="M",
                        help="equivalence margin (top-1 points) of the recomputed comparison (default: the first "
                             "folder's)")


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def refuse_busy_or_overlapping(folders: list[str], out: str | None) -> None:
    """Refuse folders a running benchmark still writes (their results may change while they are read), and an
    ``--out`` that is one of them (shared by ``gfnet compare`` and ``gfnet merge``)."""
    from feature_nets.folders import LOCK_FILE, lock_holder

    for folder in folders:
        holder = lock_holder(Path(folder) / LOCK_FILE)
        if holder is not None:
            who = f"gfnet {holder.get('command') or 'benchmark'}, pid {holder.get('pid')} on {holder.get('host')}" \
                if holder else "another process"
            raise ValueError(f"{folder} is in use by a running benchmark ({who}): its results may change while they "
                             f"are read; wait for it to finish (or delete {Path(folder) / LOCK_FILE} if no run uses it)")
    if out is not None:
        for folder in folders:
            if _same_folder(Path(out), Path(folder)):
                raise ValueError(f"--out {out} is one of the compared folders ({folder}): the merge would replace "
                                 "its results with another run's; choose another --out")


def run(args: argparse.Namespace) -> int:
    from agents.benchmark.merge import merge_folders
    from agents.benchmark.results import ResultsFolder
    from agents.benchmark.tables import markdown_table

    refuse_busy_or_overlapping(args.folders, args.out)
    out = None
    if args.out is not None:
        out = ResultsFolder(args.out, "compare").claim()  # the benchmark's lock, before any work
    try:
        # a ValueError naming the differing protocol fields otherwise
        merged, arrays = merge_folders(args.folders, reference=args.reference, margin=args.margin)
        table = markdown_table(merged)
        if out is not None:
            out.write(merged, arrays)  # staged, all files at once (results.json last), as the benchmark's
    finally:
        if out is not None:
            out.release()
    print(table)
    return 0
