"""Write report.html into a benchmark folder: one self-contained page (open it in any browser, send it as one
file: no server, no network, images inside) with the results tables (click a header to sort), the accuracy-compute
and anytime curves, each agent's looks on the same images side by side (class names, looks coloured by
p(true class)) and the failure gallery: the images where one agent answered wrongly and another rightly.

Every benchmark (and `gfnet compare --out`) writes it already; run this to draw the gallery for another pair
(--wrong A --right B; default: the best agent against the reference) or to redraw an older folder. Nothing is
run again: the looks come from the folder's per_image.npz, the images from the benchmarked dataset.
"""

from __future__ import annotations

import argparse

from ._common import raw_formatter

EXAMPLE = """  gfnet report results/fmnist
  gfnet report results/fmnist --wrong random --right paper-ppo --gallery-images 12"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("results_dir", help="a `gfnet benchmark --out` (or `gfnet compare --out`) folder")
    parser.add_argument("--wrong", default=None, metavar="AGENT",
                        help="the gallery's chosen agent: images where it is wrong and --right is right, and the "
                             "reverse (default: the best agent)")
    parser.add_argument("--right", default=None, metavar="AGENT",
                        help="the agent it is compared with (default: the benchmark's reference)")
    parser.add_argument("--gallery-images", type=int, default=8, help="images per side of the gallery (default 8)")


def run(args: argparse.Namespace) -> int:
    from agents.benchmark.report import report_folder

    path = report_folder(args.results_dir, wrong=args.wrong, right=args.right, gallery_images=args.gallery_images)
    print(f"wrote {path}")
    return 0
