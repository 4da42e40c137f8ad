"""Helper of tests/feature_nets/test_training.py (not a test): a tiny stage-1 run, under torchrun or in one process.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/feature_nets/ddp_stage1_script.py OUT_DIR
    python tests/feature_nets/ddp_stage1_script.py OUT_DIR

Trains a tiny small-CNN GFNet for a few steps of stage 1 on cluttered Fashion-MNIST canvases (global batch 32,
128 canvases, 2 epochs) and writes the final weights (model.state_dict(), BatchNorm buffers included) to
OUT_DIR/final_state.pt (rank 0).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from feature_nets.gfnet import build_small_gfnet  # noqa: E402
from feature_nets.training import TrainConfig, train_stage1  # noqa: E402
from gfnet_env.data.cluttered_fashion_mnist import ClutteredFashionMNIST  # noqa: E402

TINY = dict(widths=(8, 16, 16), feature_num=16, gru_hidden=32, policy_hidden=16)


def main(out: str, sync_bn: bool = True) -> None:
    torch.manual_seed(0)  # the same initial weights on every rank
    model = build_small_gfnet(**TINY)
    train = ClutteredFashionMNIST("train", num_samples=128, canvas_size=112)
    cfg = TrainConfig.for_model(model, epochs=2, batch_size=32, progress=False, seed=3, sync_batchnorm=sync_bn)
    train_stage1(model, train, None, cfg, out)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(out) / "final_state.pt")


if __name__ == "__main__":
    main(sys.argv[1], sync_bn="--no-sync-bn" not in sys.argv)
