"""Issue 23, case 7 (the lock): one writer per ``--out`` folder.

Training commands took no lock: two ``gfnet train-agent`` runs on one ``--out`` both exited 0 (``progress.csv``
with 3 rows for 2 batches, ``agent.json`` from one run and weights possibly from the other), and two
``train-features`` runs collided on their checkpoints. Now every command that writes an ``--out`` takes the
benchmark's lock (:mod:`feature_nets.folders`): a second run is refused in one line naming the first, before any
work. The lock is an ``flock`` on ``.lock``, so a lock left by a killed run is taken over, and two runs that find
the same stale lock cannot both take it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feature_nets.checkpoint import save_checkpoint
from feature_nets.folders import LOCK_FILE, FolderLock, OutputFolder, OutputFolderError, lock_holder
from helpers import needs_fashion_mnist, run_cli, tiny_model, write_image_folder

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
FMNIST_ENV = "GFNet-ClutteredFashionMNIST-v0"


class Holder:
    """Another process holding ``folder``'s lock as ``command`` until :meth:`stop` (or killed)."""

    def __init__(self, folder: Path, command: str) -> None:
        code = ("import sys; from feature_nets.folders import OutputFolder; "
                f"f = OutputFolder({str(folder)!r}, {command!r}).claim(); print('held', flush=True); "
                "sys.stdin.read(); f.release()")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        assert self.proc.stdout.readline().strip() == "held"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def held(tmp_path):
    holders = []

    def hold(folder: Path, command: str = "train-agent") -> Holder:
        h = Holder(folder, command)
        holders.append(h)
        return h

    yield hold
    for h in holders:
        h.stop()


def refused(code: int, text: str, command: str, holder: Holder) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"gfnet {command}: "), text
    assert "in use by another" in lines[0] and f"pid {holder.proc.pid}" in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar"
    save_checkpoint(tiny_model(num_classes=10), path)
    return path


# --- every command that writes an --out takes the lock ------------------------------------------------------

@needs_fashion_mnist
def test_second_train_agent_on_one_out_is_refused(tiny_ckpt, tmp_path, held, capsys):
    out = tmp_path / "ppo"
    holder = held(out, "train-agent")
    code, text = run_cli(["train-agent", "--agent", "paper-ppo", "--env", FMNIST_ENV, "--steps", "36",
                          "--batch-size", "6", "--out", str(out), "--no-progress", "--env-kwarg",
                          f"checkpoint={tiny_ckpt}", "--env-kwarg", "num_samples=40", "--device", "cpu"], capsys)
    assert "another train-agent" in refused(code, text, "train-agent", holder)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written: before the fix, a whole run
    holder.stop()
    assert not out.exists() or not (out / LOCK_FILE).exists()


def test_second_train_features_on_one_out_is_refused(tmp_path, held, capsys):
    data = write_image_folder(tmp_path / "data", split="train", n_per_class=2, size=48)
    write_image_folder(data, split="val", n_per_class=2, size=48)
    out = tmp_path / "s1"
    holder = held(out, "train-features")
    code, text = run_cli(["train-features", "--data-root", str(data), "--model", "small_cnn", "--image-size", "48",
                          "--patch-size", "16", "--T", "2", "--epochs", "1", "--batch-size", "2", "--out", str(out),
                          "--device", "cpu", "--workers", "0", "--no-progress"], capsys)
    refused(code, text, "train-features", holder)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


@needs_fashion_mnist
def test_train_policy_on_a_benchmark_folder_in_use_is_refused(tiny_ckpt, tmp_path, held, capsys):
    out = tmp_path / "stage2"
    holder = held(out, "benchmark")
    code, text = run_cli(["train-policy", "--checkpoint", str(tiny_ckpt), "--env", FMNIST_ENV, "--steps", "36",
                          "--batch-size", "6", "--out", str(out), "--no-progress", "--env-kwarg", "num_samples=40",
                          "--device", "cpu"], capsys)
    assert "another benchmark" in refused(code, text, "train-policy", holder)


def test_train_default_task_on_a_folder_in_use_is_refused(tmp_path, held, capsys):
    out = tmp_path / "pipeline"
    holder = held(out, "train-agent")
    code, text = run_cli(["train-default-task", "--out", str(out), "--stop-after", "pretrain", "--pretrain-epochs",
                          "1", "--no-progress"], capsys)
    refused(code, text, "train-default-task", holder)


def test_a_train_agent_lock_refuses_a_benchmark(tmp_path, held):
    from agents.benchmark.results import ResultsFolder

    holder = held(tmp_path / "runs", "train-agent")
    with pytest.raises(OutputFolderError, match=f"in use by another train-agent .*pid {holder.proc.pid}"):
        ResultsFolder(tmp_path / "runs").claim()


# --- the lock itself ----------------------------------------------------------------------------------------

def test_lock_of_a_killed_run_is_taken_over(tmp_path, held):
    folder = tmp_path / "out"
    holder = held(folder)
    assert lock_holder(folder / LOCK_FILE)["pid"] == holder.proc.pid
    holder.kill()  # kill -9: the lock file stays, the flock goes with the process
    assert (folder / LOCK_FILE).exists() and lock_holder(folder / LOCK_FILE) is None
    with OutputFolder(folder, "benchmark").claim():
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_FILE).exists()


def test_a_stale_lock_whose_pid_was_reused_is_taken_over(tmp_path):
    """No flock held: the run that wrote it is gone, even if its pid now belongs to another process."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    with OutputFolder(folder, "benchmark").claim():
        pass


def test_a_lock_naming_another_host_is_refused(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(OutputFolderError, match="pid 1 on elsewhere"):
        OutputFolder(folder, "benchmark").claim()


def test_a_planted_lock_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OutputFolderError, match="cannot create the lock file"):
        OutputFolder(folder, "benchmark").claim()
    assert victim.read_text() == "precious\n"


def _contender(folder: str, start, results, index: int) -> None:
    while time.time() < start:
        pass
    try:
        lock = FolderLock(Path(folder) / LOCK_FILE, "test").acquire()
        results[index] = 1
        time.sleep(0.4)  # held while the other one tries (its retries last 0.3 s)
        lock.release()
    except OutputFolderError:
        results[index] = 0
    os._exit(0)


def test_two_runs_that_find_one_stale_lock_never_both_take_it(tmp_path):
    """The old lock unlinked a dead run's lock and created its own: two runs doing that at once both held it."""
    ctx = multiprocessing.get_context("fork")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for r in range(25):
        folder = tmp_path / f"out{r}"
        folder.mkdir()
        (folder / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
        results = ctx.Array("i", [-1, -1])
        start = time.time() + 0.2
        procs = [ctx.Process(target=_contender, args=(str(folder), start, results, i)) for i in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        assert sorted(results[:]) == [0, 1], (r, results[:])


def _writer(folder: str, rounds: int, violations) -> None:
    inside = Path(folder) / "inside"
    for _ in range(rounds):
        while True:
            try:
                lock = FolderLock(Path(folder) / LOCK_FILE, "test").acquire()
                break
            except OutputFolderError:
                continue
        try:
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exists: someone else is inside
            os.close(fd)
            os.unlink(inside)
        except FileExistsError:
            with violations.get_lock():
                violations.value += 1
        lock.release()
    os._exit(0)


def test_one_holder_at_a_time_under_contention(tmp_path):
    ctx = multiprocessing.get_context("fork")
    violations = ctx.Value("i", 0)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 150, violations)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    assert violations.value == 0
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_refused_run_leaves_the_lock_of_the_holder(tmp_path, held):
    """A refused run never removes the lock of the run that holds the folder."""
    holder = held(tmp_path / "out")
    with pytest.raises(OutputFolderError):
        OutputFolder(tmp_path / "out", "benchmark").claim()
    assert lock_holder(tmp_path / "out" / LOCK_FILE)["pid"] == holder.proc.pid
    os.kill(holder.proc.pid, signal.SIGTERM)
    holder.proc.wait(timeout=30)
    assert lock_holder(tmp_path / "out" / LOCK_FILE) is None
