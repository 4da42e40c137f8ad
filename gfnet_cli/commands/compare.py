"""Merge benchmark outputs of the same protocol into one table.

Each folder is a `gfnet benchmark --out` folder. They must share the protocol fingerprint in results.json (same
env, weights, images, reward, max_steps and grid); otherwise the command says which fields differ and stops.
Prints the merged table; --out writes results.json / results.md of the merge. Every paired comparison is
recomputed from the folders' per_image.npz against one reference: the first folder's, or --reference NAME (one
folder is then enough: e.g. a benchmark re-read against random instead of paper-ppo); folders benchmarked with
different references are never shown under one "Δ vs" heading with their own numbers.
"""

from __future__ import annotations

import argparse
import json
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


def run(args: argparse.Namespace) -> int:
    from agents.benchmark.merge import merge_results
    from agents.benchmark.tables import markdown_table
    from feature_nets.files import atomic_write_text

    merged = merge_results(args.folders, reference=args.reference, margin=args.margin)  # a ValueError naming the differing protocol fields otherwise
    table = markdown_table(merged)
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        atomic_write_text(out / "results.md", table)
        atomic_write_text(out / "results.json", json.dumps(merged, indent=2))
    print(table)
    return 0
