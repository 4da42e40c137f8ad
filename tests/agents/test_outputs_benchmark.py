"""Items 4 and 5: `gfnet benchmark --out` checked and locked before any work; results replaced all at once."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import agents.benchmark.run as benchmark_module
import agents.benchmark.plots as plots
from agents.benchmark.run import run_benchmark
from agents.benchmark.results import RESULT_FILES, OutputFolderError, ResultsFolder
from helpers import ENV_ID, env_kwargs, run_cli

pytestmark = pytest.mark.reliability

AGENTS = ["random", "center"]


def bench(out, seed: int = 0, **kw):
    return run_benchmark(ENV_ID, AGENTS, out, episodes=6, seeds=2, env_kwargs=env_kwargs(n=18), batch_size=3,
                         device="cpu", seed=seed, verbose=False, **kw)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def no_leftovers(folder: Path) -> None:
    assert not (folder / ".lock").exists()
    assert not list(folder.glob(".staging-*"))
    assert not list(folder.rglob("*.tmp"))


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the benchmark starts any work (loading the task is its first step)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(benchmark_module, "load_task", forbidden)


@pytest.fixture(scope="module")
def old_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("old") / "bench"
    bench(out, seed=0)
    return out


def test_normal_run_writes_every_file_and_leaves_no_lock(old_results):
    assert sorted(p.name for p in old_results.iterdir()) == sorted(RESULT_FILES)
    no_leftovers(old_results)


# --- item 4: --out checked before any work ----------------------------------------------------------------

def test_existing_file_as_out_is_refused_before_any_work(tmp_path, no_work):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        bench(target)
    assert target.read_text() == "mine"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_unwritable_out_is_refused_before_any_work(no_work):
    with pytest.raises(OutputFolderError, match="cannot create the output folder /proc/x"):
        bench("/proc/x")


def test_out_in_use_by_another_run_is_refused(tmp_path, no_work):
    with ResultsFolder(tmp_path / "bench").claim():  # another run holds the folder
        with pytest.raises(OutputFolderError, match="in use by another benchmark"):
            bench(tmp_path / "bench")
    assert not (tmp_path / "bench" / ".lock").exists()


def test_lock_of_a_dead_run_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "bench"
    out.mkdir()
    import socket

    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    (out / ".staging-1").mkdir()  # left by a run killed while writing
    with ResultsFolder(out).claim() as folder:
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
        assert not (out / ".staging-1").exists()
    assert folder.path == out and not (out / ".lock").exists()


@pytest.mark.parametrize("case", ["file", "proc", "locked"])
def test_cli_prints_one_line_and_exits_non_zero(tmp_path, capsys, no_work, case):
    if case == "proc" and not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    out = {"file": tmp_path / "f.txt", "proc": Path("/proc/x"), "locked": tmp_path / "bench"}[case]
    if case == "file":
        out.write_text("x")
    if case == "locked":
        out.mkdir()
        (out / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    code, text = run_cli(["benchmark", "--env", ENV_ID, "--agents", "center", "--episodes", "2", "--out", str(out),
                          "--device", "cpu"], capsys)
    lines = [line for line in text.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gfnet benchmark: "), text
    assert str(out) in lines[0] and "Traceback" not in text


# --- item 5: all old results or all new results -----------------------------------------------------------

def test_sigint_while_plotting_keeps_the_old_results(old_results, monkeypatch):
    before = snapshot(old_results)
    original = plots.plot_mean_return

    def interrupted(results, path):
        original(results, path)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of writing the outputs

    monkeypatch.setattr(plots, "plot_mean_return", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench(old_results, seed=1)
    assert snapshot(old_results) == before
    no_leftovers(old_results)


def test_sigint_while_moving_files_into_place_gives_the_new_results(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    bench(out, seed=0)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        real_replace(src, dst)
        if Path(dst).parent == out:  # moving a staged file into place
            calls.append(Path(dst).name)
            if len(calls) == 1:
                signal.raise_signal(signal.SIGINT)  # held back until every file is in place

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        bench(out, seed=1)
    monkeypatch.undo()
    assert sorted(calls) == sorted(RESULT_FILES) and calls[-1] == "results.json"
    assert json.loads((out / "results.json").read_text())["seed"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    no_leftovers(out)


def test_disk_full_while_plotting_keeps_the_old_results(old_results, monkeypatch):
    before = snapshot(old_results)
    real_write = plots.atomic_write

    def full_disk(path, write, mode="wb"):
        if Path(path).name != "budgeted.png":
            return real_write(path, write, mode)

        def partial(f):
            f.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, "No space left on device")

        return real_write(path, partial, mode)

    monkeypatch.setattr(plots, "atomic_write", full_disk)
    with pytest.raises(OSError, match="no space left on device") as info:
        bench(old_results, seed=1)
    assert info.value.errno == errno.ENOSPC
    assert snapshot(old_results) == before
    no_leftovers(old_results)


def test_two_runs_same_numbers_through_the_staged_write(old_results, tmp_path):
    again = tmp_path / "again"
    bench(again, seed=0)
    a, b = (json.loads((d / "results.json").read_text()) for d in (old_results, again))
    for agent in AGENTS:
        assert a["agents"][agent]["anytime_top1"] == b["agents"][agent]["anytime_top1"]
        assert a["agents"][agent]["budgeted"] == b["agents"][agent]["budgeted"]


def test_a_second_process_on_the_same_out_is_refused(tmp_path, no_work):
    out = tmp_path / "bench"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from agents.benchmark.results import ResultsFolder; "
         f"f = ResultsFolder({str(out)!r}).claim(); print('held', flush=True); sys.stdin.read(); f.release()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputFolderError, match=f"pid {holder.pid}"):
            bench(out)
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0 and not (out / ".lock").exists()
