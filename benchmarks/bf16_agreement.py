"""How often bf16 autocast gives the same top-1 prediction as fp32, over the conformance images' steps.

For each of the 14 released configurations (weights by the conformance fill rule, the fixture images, the
policy's mean actions), the whole GFNet loop is run in fp32 and under bf16 autocast on the chosen device,
and the step-by-step top-1 predictions are compared. The target is ≥ 99 % agreement. Last line:
``ratio=<agreeing steps / all steps>``.

Example::

    python benchmarks/bf16_agreement.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conformance_utils import config_names, load_config, write_official_checkpoint  # noqa: E402

from feature_nets.checkpoint import load_checkpoint  # noqa: E402
from feature_nets.devices import resolve_device  # noqa: E402


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available; the default)")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    agree = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in config_names():
            meta, data = load_config(name)
            path = Path(tmp) / f"{name}.pth.tar"
            write_official_checkpoint(meta, path)
            model = load_checkpoint(path).model.to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            images = data["images"].float().to(device)
            ref, _ = model.run(images)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                low, _ = model.run(images)
            same = [(a.logits.argmax(-1) == b.logits.argmax(-1)).sum().item() for a, b in zip(ref, low)]
            n = sum(len(o.logits) for o in ref)
            agree += sum(same)
            total += n
            # how close the fp32 top-2 were where the two disagree (random-weight fixtures have tiny margins)
            margins = [f"{(top2[:, 0] - top2[:, 1])[a.logits.argmax(-1) != b.logits.argmax(-1)].tolist()}"
                       for a, b in zip(ref, low) for top2 in [a.logits.float().topk(2, -1).values]
                       if (a.logits.argmax(-1) != b.logits.argmax(-1)).any()]
            spread = torch.stack([o.logits.float().std() for o in ref]).mean().item()
            print(f"{name:34s} {sum(same)}/{n} steps agree"
                  + (f"; fp32 top-1 margins where they differ: {', '.join(margins)} (logit std {spread:.2f})"
                     if margins else ""))
            path.unlink()
    ratio = agree / total
    print(f"device {device}: {agree}/{total} steps with the same top-1 prediction")
    print(f"ratio={ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
