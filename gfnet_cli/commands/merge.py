"""Join the folders of one benchmark run as --shard K/N jobs into the folder the one-process run writes.

Each folder is the --out of `gfnet benchmark ... --shard K/N` (every K of 0 … N−1 once, same command otherwise).
The per-image records are put back in the one-process order and every number of the table is recomputed from
them: per_image.npz and the table are those of the same benchmark run in one process (seconds are summed over
the shards). Writes --out as the benchmark writes its folder (locked, every file staged and moved into place at
once, results.json last) and prints the table. To put whole benchmarks side by side, use gfnet compare.
"""

from __future__ import annotations

import argparse

from ._common import raw_formatter

EXAMPLE = """  gfnet merge results/shard0 results/shard1 results/shard2 results/shard3 --out results/all
  gfnet merge results/shard* --out results/all"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("folders", nargs="+", help="the --out folders of the benchmark's --shard K/N runs")
    parser.add_argument("--out", required=True, help="folder for the merged results (one benchmark's folder)")


def run(args: argparse.Namespace) -> int:
    from agents.benchmark.shards import merge_shards
    from agents.benchmark.results import ResultsFolder
    from agents.benchmark.tables import markdown_table

    from .compare import refuse_busy_or_overlapping

    refuse_busy_or_overlapping(args.folders, args.out)
    out = ResultsFolder(args.out, "merge").claim()  # the benchmark's lock, before any work
    try:
        merged, arrays = merge_shards(args.folders)
        out.write(merged, arrays)
    finally:
        out.release()
    print(markdown_table(merged))
    return 0
