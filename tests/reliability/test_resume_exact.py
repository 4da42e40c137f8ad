"""Issue 23, case 11: ``train-features --resume`` after Ctrl-C is exactly the uninterrupted run.

A Ctrl-C in the middle of a step used to save ``last.pth.tar`` from a model whose BatchNorm buffers the interrupted
forward pass had already updated (``num_batches_tracked`` +1, running statistics ~1e-3 off), with the random state
of after the step's draws, and the resumed epoch's ``train_loss`` counted only the batches after the resume. Now
Ctrl-C rolls back to the last complete step (buffers, random state and the epoch's sums; the optimiser update is
never cut in half), and the resumed run ends with every tensor of the final checkpoint (model, optimizer,
scheduler, random state) ``torch.equal`` to the uninterrupted run's, and the same per-epoch records. A resume with
other settings is refused naming them, unless ``--force-settings``, which applies and records them.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from torch.optim.optimizer import register_optimizer_step_pre_hook

from feature_nets.checkpoint import read_checkpoint_dict
from feature_nets.training import TrainConfig, train_stage1
from helpers import needs_fashion_mnist, run_cli, tiny_dataset, tiny_model

pytestmark = pytest.mark.reliability

#: 64 images in batches of 16: 4 steps per epoch, 2 epochs; dropout so that a step draws from the global generator.
EPOCHS, BATCH, N_TRAIN = 2, 16, 64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Every run of this module on one torch thread (the uninterrupted one included: a module fixture that would
    run before a function-scoped one): exactness is per thread count, as kernels may sum in another order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def config(model, **kw) -> TrainConfig:
    return TrainConfig.for_model(model, **{**dict(epochs=EPOCHS, batch_size=BATCH, progress=False, seed=3,
                                                  dropout=0.2), **kw})


def run(out: Path, resume: bool = False, **kw):
    model = tiny_model(seed=11 if resume else 0)  # a resumed run must take every weight from the checkpoint
    return train_stage1(model.train(), tiny_dataset(n=N_TRAIN), tiny_dataset(n=16, seed=2), config(model, **kw), out,
                        resume=resume)


def assert_same_tensors(a, b, where: str = "") -> None:
    """Every tensor of two (nested) checkpoint entries ``torch.equal``, every other value ``==``."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (where, sorted(a), sorted(b) if isinstance(b, dict) else b)
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, (where, a, b)


def without_seconds(history: list[dict]) -> list[dict]:
    """The per-epoch records but their wall-clock ``train_seconds``."""
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in history]


def assert_same_run(done: Path, reference: Path) -> None:
    a, b = read_checkpoint_dict(done / "last.pth.tar"), read_checkpoint_dict(reference / "last.pth.tar")
    for key in ("model_state_dict", "model_prime_state_dict", "fc", "policy", "optimizer", "scheduler", "rng"):
        assert_same_tensors(a[key], b[key], key)
    assert (a["epoch"], a["step_in_epoch"]) == (b["epoch"], b["step_in_epoch"]) == (EPOCHS, 0)
    assert without_seconds(a["history"]) == without_seconds(b["history"])
    assert a["best_top1"] == b["best_top1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    torch.manual_seed(0)
    run(out)
    return out


class Interrupt:
    """Ctrl-C at the ``at``-th call (0-based) of a BatchNorm layer's forward (training mode only; ``in_eval``:
    validation only), of its gradient, or of the optimiser's step; ``signal_`` sends a real SIGINT instead of
    raising (held back during the optimiser update, it arrives after it)."""

    def __init__(self, at: int, where: str, signal_: bool = False, in_eval: bool = False) -> None:
        self.at, self.where, self.signal, self.in_eval, self.calls, self.fired = at, where, signal_, in_eval, 0, False
        self.trained = False
        self.handles = []

    def fire(self, training: bool = True) -> None:
        self.trained = self.trained or training
        if self.fired or training == self.in_eval or not self.trained:  # (eval-mode calls before training: MACs)
            return
        if self.calls == self.at:
            self.fired = True
            if self.signal:
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt("simulated Ctrl-C")
        self.calls += 1

    def __enter__(self):
        if self.where == "optimizer-step":
            self.handles.append(register_optimizer_step_pre_hook(lambda *a: self.fire()))
        elif self.where == "backward":  # a gradient hook on each BatchNorm output: fires as the gradient passes
            def on_output(module, inputs, output):
                if isinstance(module, torch.nn.BatchNorm2d) and module.training and output.requires_grad:
                    output.register_hook(lambda grad: self.fire())

            self.handles.append(torch.nn.modules.module.register_module_forward_hook(on_output))
        else:  # after a BatchNorm layer's forward: its running statistics are already updated
            self.handles.append(torch.nn.modules.module.register_module_forward_hook(
                lambda m, i, o: self.fire(m.training) if isinstance(m, torch.nn.BatchNorm2d) else None))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


#: (name, Interrupt arguments). The tiny GFNet runs 3 BatchNorm layers per encoder call, 4 encoder calls per step
#: (the glance and 3 focus steps) in training mode: 12 BatchNorm forwards per step.
MOMENTS = [
    ("forward-epoch1-step1", dict(at=12 * 1 + 5, where="forward")),
    ("forward-epoch2-step2", dict(at=12 * 6 + 7, where="forward")),
    ("forward-first-step", dict(at=2, where="forward")),
    ("backward-epoch1-step3", dict(at=12 * 3 + 4, where="backward")),
    ("sigint-in-optimizer-step", dict(at=5, where="optimizer-step", signal_=True)),
    ("sigint-in-forward", dict(at=12 * 2 + 9, where="forward", signal_=True)),
    ("validation-epoch1", dict(at=1, where="forward", in_eval=True)),
]


@pytest.mark.parametrize("name, moment", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_ctrl_c_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted, name, moment):
    out = tmp_path / "run"
    torch.manual_seed(0)
    with Interrupt(**moment) as stop, pytest.raises(KeyboardInterrupt):
        run(out)
    assert stop.fired
    saved = read_checkpoint_dict(out / "last.pth.tar")
    assert saved["epoch"] * 4 + saved["step_in_epoch"] < EPOCHS * 4 or name.startswith("validation")
    torch.manual_seed(1234)  # the global generator in another state: the resume must restore it
    run(out, resume=True)
    assert_same_run(out, uninterrupted)


class FetchInterrupt(torch.utils.data.Dataset):
    """A dataset whose ``at``-th fetch raises KeyboardInterrupt: Ctrl-C while a batch is gathered, before any of
    its step has run."""

    def __init__(self, dataset, at: int) -> None:
        self.dataset, self.at, self.fetches = dataset, at, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        self.fetches += 1
        if self.fetches == self.at + 1:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return self.dataset[i]


def test_interrupted_checkpoint_holds_the_last_complete_step(tmp_path):
    """A Ctrl-C inside step 2's forward pass saves the state after step 1, buffers included: the checkpoint a Ctrl-C
    while step 2's batch is gathered (nothing of step 2 has run) saves, tensor for tensor."""
    torch.manual_seed(0)
    with Interrupt(at=12 * 2 + 5, where="forward"), pytest.raises(KeyboardInterrupt):
        run(tmp_path / "in_forward")
    torch.manual_seed(0)
    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        train_stage1(model.train(), FetchInterrupt(tiny_dataset(n=N_TRAIN), at=2 * BATCH), None, config(model),
                     tmp_path / "clean")
    a = read_checkpoint_dict(tmp_path / "in_forward" / "last.pth.tar")
    b = read_checkpoint_dict(tmp_path / "clean" / "last.pth.tar")
    assert a["step_in_epoch"] == b["step_in_epoch"] == 2 and a["epoch"] == b["epoch"] == 0
    for key in ("model_state_dict", "model_prime_state_dict", "fc", "optimizer", "scheduler", "rng"):
        assert_same_tensors(a[key], b[key], key)
    assert a["epoch_sums"]["seen"] == b["epoch_sums"]["seen"] == 2 * BATCH
    assert a["epoch_sums"]["loss"] == b["epoch_sums"]["loss"]
    assert torch.equal(a["epoch_sums"]["correct"], b["epoch_sums"]["correct"])


# --- the command line --------------------------------------------------------------------------------------------

CLI = ["train-features", "--model", "small_cnn", "--task", "cluttered-fashion-mnist", "--train-samples", "64",
       "--val-samples", "16", "--epochs", "2", "--batch-size", "16", "--pretrain-epochs", "0", "--small-widths",
       "8,16", "--small-feature-num", "16", "--no-progress", "--seed", "5", "--dropout", "0.1"]


@needs_fashion_mnist
def test_cli_ctrl_c_one_line_130_then_resume_is_exact(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run_cli([*CLI, "--out", str(full)], capsys)[0] == 0
    with Interrupt(at=12 * 5 + 3, where="forward"):  # inside the forward pass of epoch 2's second step
        code, text = run_cli([*CLI, "--out", str(part)], capsys)
    lines = [ln for ln in text.splitlines() if ln.startswith("gfnet ")]
    assert code == 130 and lines == [f"gfnet train-features: interrupted; progress saved in {part / 'last.pth.tar'} "
                                     "at the last complete step; continue with --resume"], text
    assert "Traceback" not in text
    code, text = run_cli([*CLI, "--out", str(part), "--resume"], capsys)
    assert code == 0, text
    assert_same_run(part, full)


@needs_fashion_mnist
def test_cli_resume_with_other_settings_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "run"
    with Interrupt(at=12 * 2 + 1, where="forward"):
        assert run_cli([*CLI, "--out", str(out)], capsys)[0] == 130
    before = (out / "last.pth.tar").read_bytes()
    code, text = run_cli([*CLI, "--out", str(out), "--resume", "--lr-backbone", "0.05", "--seed", "6"], capsys)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gfnet train-features: --resume with other settings")
    assert "lr_backbone: 0.1 saved, 0.05 now" in lines[0] and "seed: 5 saved, 6 now" in lines[0]
    assert "--force-settings" in lines[0]
    assert (out / "last.pth.tar").read_bytes() == before
    code, text = run_cli([*CLI, "--out", str(out), "--resume", "--train-samples", "96"], capsys)
    assert code == 2 and "train_samples: 64 saved, 96 now" in text
    # what does not change the numbers may differ
    code, text = run_cli([*CLI, "--out", str(out), "--resume", "--lr-backbone", "0.05", "--force-settings",
                          "--workers", "0", "--device", "cpu"], capsys)
    assert code == 0 and "--force-settings: from epoch 1, step 2 on, lr_backbone 0.1 -> 0.05" in text, text
    ckpt = read_checkpoint_dict(out / "last.pth.tar")
    assert ckpt["forced_settings"] == [{"epoch": 0, "step_in_epoch": 2, "changes": {"lr_backbone": [0.1, 0.05]}}]
    assert ckpt["train_config"]["lr_backbone"] == 0.05
    groups = {g["name"]: g for g in ckpt["optimizer"]["param_groups"]}
    assert groups["local_encoder"]["initial_lr"] == 0.05 and groups["classifier"]["initial_lr"] == 0.2
    assert ckpt["scheduler"]["base_lrs"][0] == 0.05
