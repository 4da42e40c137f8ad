"""Write the prepared evaluation cache of an ImageFolder split: its pixels after the model's deterministic
evaluation transform (Resize → CenterCrop), as uint8 (N, 3, S, S) in a memory-mapped .npy file with labels and a
fingerprint of the source files in a JSON sidecar (gfnet_env/data/prepared.py).

The env then reads the split from the cache (``data_root/<split>.gfnet-prepared.npy`` by default) instead of
decoding JPEGs, with bit-identical observations; it refuses a cache whose files or transform changed. Size on
disk: N × 3 × S² bytes (ImageNet val at S=224: 7.5 GB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._common import raw_formatter

EXAMPLE = """  gfnet prepare-data --data-root /data/imagenet --split val --model resnet50
  gfnet prepare-data --data-root /data/imagenet --split val --model runs/gfnet_r50.pth.tar --out /fast/val.npy"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    raw_formatter(parser, __doc__, EXAMPLE)
    parser.add_argument("--data-root", required=True, help="folder holding <split>/<class>/<images>")
    parser.add_argument("--split", default="val", choices=["val"],
                        help="the split (only val: the train split's augmentation is random)")
    parser.add_argument("--model", required=True,
                        help="a backbone name (resnet50, mobilenetv3_large_100, ...) or a GFNet checkpoint path; "
                             "it fixes the transform (resize, crop, interpolation) and the image size S")
    parser.add_argument("--image-size", type=int, default=None, help="override S (default: the model's)")
    parser.add_argument("--out", default=None, help="the .npy to write (default DATA_ROOT/<split>.gfnet-prepared.npy)")
    parser.add_argument("--threads", type=int, default=None, help="decoding threads (default: all CPUs)")
    parser.add_argument("--trusted-pickle", action="store_true", help="allow full unpickling of the checkpoint")


def _config(model: str, trusted_pickle: bool):
    from feature_nets.registry import BACKBONE_CONFIGS, get_config

    if model in BACKBONE_CONFIGS or not Path(model).exists():
        return get_config(model)
    from feature_nets.checkpoint import load_checkpoint

    return load_checkpoint(model, trusted_pickle=trusted_pickle).model.spec.config


def run(args: argparse.Namespace) -> int:
    from gfnet_env.data.image_folder import imagenet_split
    from gfnet_env.data.prepared import prepare_split

    config = _config(args.model, args.trusted_pickle)
    if args.image_size is not None:
        config = config.with_overrides(image_size=args.image_size)
    dataset = imagenet_split(args.data_root, args.split, config)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} images ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    out = prepare_split(dataset, args.out, threads=args.threads, progress=progress)
    s = config.image_size
    print(f"wrote {out} ({len(dataset)} images, uint8 3×{s}×{s}, {len(dataset) * 3 * s * s / 1e9:.2f} GB) and "
          f"{out.name}.json in {time.perf_counter() - start:.1f} s")
    return 0
