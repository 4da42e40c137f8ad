"""Item 7: paper-ppo resumes exactly after Ctrl-C, progress.csv holds whole rows only, a full disk is reported
as such and leaves no temporary file."""

from __future__ import annotations

import csv
import errno
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import agents.paper_ppo.files as policy_files
import agents.paper_ppo.train as train_module
import feature_nets.files as files
from agents.paper_ppo.files import LATEST_FILE
from feature_nets.files import atomic_save
from helpers import train_tiny_paper_ppo

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
BATCHES = 4  # 72 env steps / (6 images × 3 focus steps)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train_tiny_paper_ppo(tmp_path_factory.mktemp("straight"), 72)


def interrupt_on_call(monkeypatch, module, name: str, call: int, before: bool = False) -> None:
    """SIGINT (as Ctrl-C) inside the ``call``-th call of ``module.name`` (before or after its work)."""
    real, count = getattr(module, name), [0]

    def wrapped(*args, **kwargs):
        count[0] += 1
        if before and count[0] == call:
            signal.raise_signal(signal.SIGINT)
        out = real(*args, **kwargs)
        if not before and count[0] == call:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(module, name, wrapped)


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("where", ["after_update", "mid_rollout"])
def test_sigint_then_resume_gives_the_same_weights(straight, tmp_path, monkeypatch, where):
    out = tmp_path / "run"
    if where == "after_update":  # weights and Adam moved, the batch not yet recorded
        interrupt_on_call(monkeypatch, train_module, "ppo_update", 3)
    else:  # the noise generator moved
        interrupt_on_call(monkeypatch, train_module, "collect_rollout", 3, before=False)
    with pytest.raises(KeyboardInterrupt):
        train_tiny_paper_ppo(out, 72)
    monkeypatch.undo()
    assert torch.load(out / LATEST_FILE, weights_only=True)["batches_done"] == 2
    resumed = train_tiny_paper_ppo(out, 72, resume=True)
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k
    table = rows(out / "progress.csv")
    assert [r[0] for r in table[1:]] == [str(b) for b in range(1, BATCHES + 1)]
    assert all(len(r) == len(table[0]) for r in table)


def test_resume_drops_torn_and_extra_rows_of_progress_csv(straight, tmp_path):
    out = tmp_path / "run"
    train_tiny_paper_ppo(out, 36)  # 2 batches, latest file at batch 2
    path = out / "progress.csv"
    text = path.read_text()
    last = text.splitlines()[-1].split(",")
    # a row for batch 3 that was logged but not saved, then a row torn by a full disk (no newline)
    path.write_text(text + ",".join(["3"] + last[1:]) + "\r\n" + "4,72,0.01")
    train_tiny_paper_ppo(out, 72, resume=True)
    table = rows(path)
    assert [r[0] for r in table[1:]] == ["1", "2", "3", "4"]
    assert all(len(r) == len(table[0]) for r in table)


def test_disk_full_during_a_save_is_reported_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = atomic_save({"x": torch.zeros(3)}, tmp_path / LATEST_FILE)

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="no space left on device while writing .*previous file.* unchanged") as info:
        files.atomic_write(path, full)
    assert info.value.errno == errno.ENOSPC
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST_FILE]


@pytest.mark.parametrize("chained", [True, False])
def test_torch_writer_error_on_a_full_disk_says_no_space(tmp_path, monkeypatch, chained):
    """torch reports a full disk as "unexpected pos" (the ENOSPC chained, or, without it, a nearly full disk)."""
    monkeypatch.setattr(files, "_free_bytes", lambda folder: 4096)

    def torch_failure(f):
        f.write(b"partial")
        try:
            if chained:
                raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(OSError, match="no space left on device") as info:
        files.atomic_write(tmp_path / "x.pt", torch_failure)
    assert info.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())


def test_a_real_failing_torch_write_leaves_no_temp_file(tmp_path):
    """RLIMIT_FSIZE makes the write itself fail inside torch's zip writer (as a full disk does)."""
    script = textwrap.dedent(f"""
        import resource, signal, torch
        from feature_nets.files import atomic_save
        path = {str(tmp_path / LATEST_FILE)!r}
        atomic_save({{"x": torch.zeros(10)}}, path)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        try:
            atomic_save({{"x": torch.zeros(1_000_000)}}, path)
        except OSError as e:
            print("OSError", e)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("OSError") and "could not write" in proc.stdout, proc.stdout + proc.stderr
    assert "File too large" in proc.stdout  # the errno torch's "unexpected pos" hides
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST_FILE]
    assert torch.load(tmp_path / LATEST_FILE, weights_only=True)["x"].shape == (10,)


def test_disk_full_mid_training_then_resume_is_exact(straight, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, calls = policy_files.atomic_save, [0]

    def full_after_first(obj, path):
        calls[0] += 1
        if calls[0] >= 2:  # the disk fills after the first save of the latest file
            def partial(f):
                f.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")

            return files.atomic_write(path, partial)
        return real(obj, path)

    monkeypatch.setattr(policy_files, "atomic_save", full_after_first)
    with pytest.raises(OSError, match="no space left on device"):
        train_tiny_paper_ppo(out, 72, save_every=2)
    monkeypatch.undo()
    assert not list(out.glob("*.tmp"))
    assert torch.load(out / LATEST_FILE, weights_only=True)["batches_done"] == 2
    resumed = train_tiny_paper_ppo(out, 72, resume=True)
    for k, v in straight.policy.state_dict().items():
        assert torch.equal(v, resumed.policy.state_dict()[k]), k
    assert [r[0] for r in rows(out / "progress.csv")[1:]] == ["1", "2", "3", "4"]
