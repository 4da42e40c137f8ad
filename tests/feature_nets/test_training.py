"""Training stages (feature_nets.training): loss goes down, checkpoints, exact resume, DDP = one process.

Small CPU runs: a tiny small-CNN GFNet on a few hundred cluttered Fashion-MNIST canvases (skipped when the
IDX files are not installed), and a MobileNet-V3 GFNet on random tensors for the cascade classifier.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from feature_nets.checkpoint import load_checkpoint
from feature_nets.registry import BACKBONE_CONFIGS
from feature_nets.gfnet import build_gfnet, build_small_gfnet
from feature_nets.training import (
    FAMILY_DEFAULTS,
    StageLoss,
    TrainConfig,
    build_optimizer,
    build_schedule,
    prepare_trainable,
    evaluate_anytime,
    set_train_mode,
    train_stage1,
    train_stage3,
    train_step,
)
from helpers import fill_tensor
from helpers import needs_fashion_mnist

REPO = Path(__file__).resolve().parents[2]
TINY = dict(widths=(8, 16, 16), feature_num=16, gru_hidden=32, policy_hidden=16)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine more threads spin-wait and run many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)




def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_small_gfnet(**TINY)


def _canvases(split: str, n: int):
    from gfnet_env.data.cluttered_fashion_mnist import ClutteredFashionMNIST

    return ClutteredFashionMNIST(split, num_samples=n)


def _cfg(model, **kw):
    base = dict(epochs=2, batch_size=32, progress=False, seed=1)
    base.update(kw)
    return TrainConfig.for_model(model, **base)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


class _Interrupting(torch.utils.data.Dataset):
    """Wraps a dataset; raises KeyboardInterrupt at the given (epoch, fetch count) — as Ctrl-C would."""

    def __init__(self, dataset, epoch: int, after_fetches: int = 0) -> None:
        self.dataset, self.stop_epoch, self.after = dataset, epoch, after_fetches
        self.epoch, self.fetches, self.armed = 0, 0, True

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.epoch, self.fetches = epoch, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if self.armed and self.epoch == self.stop_epoch:
            if self.fetches >= self.after:
                self.armed = False
                raise KeyboardInterrupt("simulated Ctrl-C")
            self.fetches += 1
        return self.dataset[i]


# ------------------------------------------------------------------------------------------------ tests


@needs_fashion_mnist
def test_stage1_one_epoch_lowers_the_loss(tmp_path):
    train = _canvases("train", 256)
    model = _tiny_model()
    before = evaluate_anytime(model, train, batch_size=128, seed=5).mean_loss
    result = train_stage1(model, train, None, _cfg(model, epochs=1), tmp_path)
    after = evaluate_anytime(model, train, batch_size=128, seed=5).mean_loss
    assert after < before - 0.005, (before, after)
    assert len(result.history) == 1 and result.history[0]["train_loss"] > 0
    assert (tmp_path / "tensorboard").is_dir() and any((tmp_path / "tensorboard").iterdir())


@needs_fashion_mnist
def test_checkpoint_every_epoch_loads_with_load_checkpoint(tmp_path):
    model = _tiny_model()
    train_stage1(model, _canvases("train", 128), _canvases("val", 64), _cfg(model, keep_epoch_checkpoints=True),
                 tmp_path)
    for name, epoch in (("epoch_001.pth.tar", 1), ("epoch_002.pth.tar", 2), ("last.pth.tar", 2)):
        ckpt = load_checkpoint(tmp_path / name)  # weights_only=True
        assert ckpt.extra["epoch"] == epoch and ckpt.extra["stage"] == 1
        assert ckpt.extra["step_in_epoch"] == 0
        assert "optimizer" in ckpt.extra and "scheduler" in ckpt.extra and "rng" in ckpt.extra
        assert len(ckpt.anytime_classification) == model.T and len(ckpt.flops) == model.T
        assert ckpt.model.spec.encoder_kwargs == model.spec.encoder_kwargs
    assert (tmp_path / "best.pth.tar").exists()
    last = load_checkpoint(tmp_path / "last.pth.tar").model
    _same_weights(last.classifier, model.classifier)
    _same_weights(last.local_encoder, model.local_encoder)


@needs_fashion_mnist
@pytest.mark.parametrize("stop", [(1, 0), (1, 64 + 5)], ids=["after-epoch-1", "mid-epoch-2"])
def test_resume_continues_exactly(tmp_path, stop):
    """Stop (Ctrl-C) after epoch 1 or in the middle of epoch 2, resume: the same weights as one 2-epoch run."""
    full = _tiny_model()
    train_stage1(full, _canvases("train", 128), None, _cfg(full), tmp_path / "full")

    part = _tiny_model()
    interrupting = _Interrupting(_canvases("train", 128), epoch=stop[0], after_fetches=stop[1])
    with pytest.raises(KeyboardInterrupt):
        train_stage1(part, interrupting, None, _cfg(part), tmp_path / "part")
    saved = load_checkpoint(tmp_path / "part" / "last.pth.tar")
    assert saved.extra["epoch"] == 1 and saved.extra["step_in_epoch"] == stop[1] // 32

    resumed = _tiny_model(seed=123)  # fresh weights: everything must come from the checkpoint
    train_stage1(resumed, _canvases("train", 128), None, _cfg(resumed), tmp_path / "part", resume=True)
    _same_weights(resumed, full)


@needs_fashion_mnist
def test_stage3_trains_with_the_fixed_policy(tmp_path):
    model = _tiny_model()
    policy_before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    clf_before = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    cfg = TrainConfig.for_model(model, stage=3, epochs=1, batch_size=32, progress=False)
    assert cfg.lr_classifier == 0.01
    res = train_stage3(model, _canvases("train", 64), _canvases("val", 32), cfg, tmp_path)
    assert all(torch.equal(v, model.policy.state_dict()[k]) for k, v in policy_before.items())
    assert any(not torch.equal(v, model.classifier.state_dict()[k]) for k, v in clf_before.items())
    assert load_checkpoint(res.last_checkpoint).extra["stage"] == 3
    with pytest.raises(ValueError, match="stage"):
        train_stage1(model, _canvases("train", 64), None, cfg, tmp_path / "x")


def test_loss_is_defined_for_the_cascade_classifier():
    """MobileNet-V3: cascade classifier, step-0 logits from the (frozen) global encoder's head."""
    from feature_nets.gfnet import build_gfnet

    torch.manual_seed(0)
    model = build_gfnet("mobilenetv3_large_100", patch_size=32, T=3, num_classes=10)
    cfg = TrainConfig.for_model(model)
    assert cfg.freeze_global and cfg.dsn_ratio == 5 and cfg.lr_backbone == 0.005 and cfg.epochs == 90
    prepare_trainable(model, cfg)
    model.train()
    model.global_encoder.eval()
    images, labels = torch.randn(4, 3, 224, 224), torch.tensor([0, 1, 2, 3])
    loss, correct = StageLoss(model, 1, cfg.dsn_ratio)(images, labels, torch.rand(4, 2, 2))
    assert torch.isfinite(loss) and correct.shape == (3,)
    loss.backward()
    assert model.classifier.fc_2.weight.grad is not None and model.classifier.fc_3.weight.grad is not None
    assert model.classifier.fc_4.weight.grad is None and model.classifier.fc_5.weight.grad is None
    assert all(p.grad is None for p in model.global_encoder.parameters())
    assert next(model.local_encoder.parameters()).grad is not None


def test_schedule_steps_once_per_epoch_as_the_original():
    """lr_schedule "epoch" (the released families): ½(1 + cos(π·e/E)) of epoch e, constant inside the epoch;
    "iteration" (the small CNN's recipe, which the shipped weights were trained with): every step."""
    model = _tiny_model()
    assert TrainConfig.for_model(model).lr_schedule == "iteration"
    for name in BACKBONE_CONFIGS:
        assert FAMILY_DEFAULTS[BACKBONE_CONFIGS[name].family].lr_schedule == "epoch"
    lrs = {}
    for mode in ("epoch", "iteration"):
        cfg = TrainConfig(epochs=3, lr_backbone=0.01, lr_classifier=0.1, lr_schedule=mode)
        prepare_trainable(model, cfg)
        opt = build_optimizer(model, cfg)
        sched = build_schedule(opt, cfg, steps_per_epoch=4)
        lrs[mode] = []
        for _ in range(12):
            lrs[mode].append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step()
    expect = [lr * 0.5 * (1 + math.cos(math.pi * (i // 4) / 3)) for i in range(12) for lr in (0.01, 0.01, 0.1)]
    assert sum(lrs["epoch"], []) == pytest.approx(expect, rel=1e-12)
    assert lrs["iteration"][1][0] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi / 12)), rel=1e-12)


def test_glance_loss_term_uses_the_classifier_logits():
    """RegNet: the original trains the GRU's own step-0 logits (its inference glance logits are the encoder
    head); ``glance_logits="inference"`` trains the latter instead."""
    torch.manual_seed(0)
    model = build_gfnet("regnety_600m", patch_size=32, T=2, num_classes=10, with_policy=False).eval()
    images, labels, draws = torch.randn(2, 3, 224, 224), torch.tensor([3, 4]), torch.rand(2, 1, 2)
    with torch.no_grad():
        out = model.glance(images)
        clf = F.cross_entropy(model.glance(images, step0_head="classifier").logits, labels)
        head = F.cross_entropy(model.global_encoder.head(out.pooled), labels)
        assert torch.equal(out.logits, model.global_encoder.head(out.pooled))  # inference: the encoder head
        for mode, want in (("classifier", clf), ("inference", head)):
            loss = StageLoss(model, 1, 1.0, glance_logits=mode)
            loss(images, labels, draws)
            assert torch.allclose(loss.last_terms["cls"][0], want) and torch.allclose(loss.last_terms["dsn"][0], head)


def test_drop_connect_and_dropout_follow_the_original():
    """MobileNet-V3 / EfficientNet recipes: dropout on the pooled vector and drop-connect rate·i/n in block i."""
    from feature_nets.training.drop_connect import drop_connect_blocks, set_drop_connect

    torch.manual_seed(0)
    model = build_gfnet("mobilenetv3_large_100", patch_size=32, T=2, num_classes=10, with_policy=False)
    cfg = TrainConfig.for_model(model)
    assert (cfg.dropout, cfg.drop_connect) == (0.2, 0.2)
    prepare_trainable(model, cfg)
    blocks = drop_connect_blocks(model.local_encoder)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates[1:-1] == pytest.approx([0.2 * i / len(blocks) for i in range(1, len(blocks) - 1)])
    assert rates[0] == 0.0 and rates[-1] == 0.0  # the first block's rate is 0; the last (ConvBnAct) has none
    assert set_drop_connect(model, 0.0) == 0
    with pytest.raises(ValueError, match="drop_connect"):
        set_drop_connect(_tiny_model(), 0.2)
    set_train_mode(model, cfg)
    loss = StageLoss.from_config(model, cfg)
    images, labels, draws = torch.randn(2, 3, 224, 224), torch.tensor([0, 1]), torch.rand(2, 1, 2)
    torch.manual_seed(1)
    a = loss(images, labels, draws)[0]
    torch.manual_seed(2)
    assert not torch.equal(a, loss(images, labels, draws)[0])  # dropout draws differ
    model.eval()
    assert torch.equal(loss(images, labels, draws)[0], loss(images, labels, draws)[0])  # eval: no dropout


def test_resume_reads_the_former_two_group_optimiser_state():
    """Checkpoints written when both encoders shared one group (global encoder first) still resume."""
    from feature_nets.training.resume import _upgrade_two_groups

    model = _tiny_model()
    cfg = _cfg(model)
    prepare_trainable(model, cfg)
    glob, loc, clf = (list(m.parameters()) for m in (model.global_encoder, model.local_encoder, model.classifier))
    old = torch.optim.SGD([{"params": glob + loc, "lr": 0.1, "name": "encoders"},
                           {"params": clf, "lr": 0.2, "name": "classifier"}], lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    old.step()
    new = build_optimizer(model, cfg)
    state, _ = _upgrade_two_groups(model, new, old.state_dict(), {"base_lrs": [0.1, 0.2]})
    new.load_state_dict(state)
    assert [g["name"] for g in new.param_groups] == ["local_encoder", "global_encoder", "classifier"]
    for p in glob + loc + clf:
        assert torch.equal(new.state[p]["momentum_buffer"], old.state[p]["momentum_buffer"])


@pytest.mark.parametrize("name", sorted(BACKBONE_CONFIGS))
def test_stage1_step_every_backbone(name):
    """One stage-1 step of every released architecture with its family recipe (batch 2, P = 32, T = 2, weights by
    the conformance fill rule, so no zero-initialised layer blocks a gradient): the loss is finite, every trained
    parameter moves, a frozen global encoder does not. (The original training code cannot do this for DenseNet:
    it asks its encoders for a head named ``fc``.)"""
    torch.manual_seed(0)
    model = build_gfnet(name, patch_size=32, T=2, num_classes=10, with_policy=False)
    for component, module in (("model", model.local_encoder), ("model_prime", model.global_encoder),
                              ("fc", model.classifier)):
        module.load_state_dict({k: fill_tensor(component, k, list(v.shape), str(v.dtype), seed=0)
                                for k, v in module.state_dict().items()})
    cfg = TrainConfig.for_model(model, stage=1, batch_size=2, progress=False)
    prepare_trainable(model, cfg)
    optimizer = build_optimizer(model, cfg)
    expected = ["local_encoder", "global_encoder", "classifier"]
    if cfg.freeze_global:
        expected.remove("global_encoder")
    assert [g["name"] for g in optimizer.param_groups] == expected
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    before = [p.detach().clone() for p in trained]
    frozen = {k: v.clone() for k, v in model.global_encoder.state_dict().items()} if cfg.freeze_global else None
    set_train_mode(model, cfg)
    s = model.image_size
    images, labels = torch.randn(2, 3, s, s), torch.tensor([1, 7])
    loss, correct = train_step(StageLoss.from_config(model, cfg), images, labels, torch.rand(2, 1, 2), optimizer,
                               build_schedule(optimizer, cfg, steps_per_epoch=1))
    assert torch.isfinite(loss) and correct.shape == (2,)
    moved = [not torch.equal(b, p.detach()) for b, p in zip(before, trained)]
    assert all(moved), f"{moved.count(False)} of {len(trained)} trained parameters did not change"
    if frozen is not None:
        assert all(torch.equal(v, model.global_encoder.state_dict()[k]) for k, v in frozen.items())


@needs_fashion_mnist
def test_torchrun_two_processes_equal_one_process(tmp_path):
    """Stage 1 under ``torchrun --nproc_per_node=2`` (gloo, CPU) gives the one-process weights within 1e-5.

    The global batch (32) is split 16 + 16 across the ranks by a DistributedSampler whose permutation does not
    depend on the number of ranks, the random patch locations are drawn per global batch, DDP averages the
    gradients, and BatchNorm statistics are synchronised (CPUSyncBatchNorm: torch's SyncBatchNorm does not run
    on CPU). Without the synchronisation the BatchNorm statistics of 16 instead of 32 samples make the runs
    differ by about 3e-2; with it, only the floating-point summation order differs.
    """
    script = Path(__file__).parent / "ddp_stage1_script.py"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path / "ddp")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    sys.path.insert(0, str(Path(__file__).parent))
    import ddp_stage1_script

    ddp_stage1_script.main(str(tmp_path / "single"))
    a = torch.load(tmp_path / "single" / "final_state.pt")
    b = torch.load(tmp_path / "ddp" / "final_state.pt")
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    assert not torch.equal(a["classifier.fc.weight"], _tiny_model().state_dict()["classifier.fc.weight"])


@needs_fashion_mnist
def test_train_features_cli(tmp_path):
    from gfnet_cli.commands.train_features import main

    rc = main(["--model", "small_cnn", "--task", "cluttered-fashion-mnist", "--train-samples", "128",
               "--val-samples", "32", "--epochs", "1", "--batch-size", "32", "--pretrain-epochs", "0",
               "--small-widths", "8,16", "--small-feature-num", "16", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    ckpt = load_checkpoint(tmp_path / "best.pth.tar")
    assert ckpt.model.spec.encoder_kwargs["widths"] == [8, 16] and ckpt.extra["epoch"] == 1
    assert ckpt.extra["train_config"]["lr_schedule"] == "iteration"  # small_cnn's recipe
    # the recipe's training options can be set from the command line
    rc = main(["--model", "small_cnn", "--task", "cluttered-fashion-mnist", "--train-samples", "64",
               "--val-samples", "32", "--epochs", "1", "--batch-size", "32", "--pretrain-epochs", "0",
               "--small-widths", "8,16", "--small-feature-num", "16", "--out", str(tmp_path / "opts"), "--no-progress",
               "--lr-schedule", "epoch", "--dropout", "0.1", "--glance-logits", "inference"])
    assert rc == 0
    stored = load_checkpoint(tmp_path / "opts" / "last.pth.tar").extra["train_config"]
    assert (stored["lr_schedule"], stored["dropout"], stored["glance_logits"]) == ("epoch", 0.1, "inference")
    with pytest.raises(ValueError, match="needs MobileNet-V3 / EfficientNet blocks"):  # small_cnn has none
        main(["--model", "small_cnn", "--task", "cluttered-fashion-mnist", "--train-samples", "64", "--epochs", "1",
              "--pretrain-epochs", "0", "--out", str(tmp_path / "dc"), "--no-progress", "--drop-connect", "0.05"])
    rc = main(["--stage", "3", "--init", str(tmp_path / "best.pth.tar"), "--policy-checkpoint",
               str(tmp_path / "best.pth.tar"), "--task", "cluttered-fashion-mnist", "--train-samples", "64",
               "--val-samples", "32", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "s3"),
               "--no-progress"])
    assert rc == 0 and load_checkpoint(tmp_path / "s3" / "last.pth.tar").extra["stage"] == 3
    assert main(["--model", "resnet50", "--out", str(tmp_path / "r")]) == 2  # no --data-root: a clear error
