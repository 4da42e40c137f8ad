"""Issue 23, case 8: ``gfnet compare --out`` never tears a folder.

``gfnet compare A B --out A`` rewrote A's ``results.json`` with B's agents while A's ``per_image.npz``, CSV and
PNGs stayed A's; compare ignored a running benchmark's ``.lock``; on a full disk it left ``results.md`` and
``results.json`` of different runs. Now ``--out`` cannot be a compared folder, is locked like a benchmark's, and is
written through the benchmark's staging: every file at once, ``results.json`` last.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

import feature_nets.files as files
from agents.benchmark.results import RESULT_FILES, ResultsFolder
from agents.benchmark.run import run_benchmark
from feature_nets.folders import LOCK_FILE
from helpers import ENV_ID, env_kwargs, run_cli

pytestmark = pytest.mark.reliability


def bench(out: Path, agents: list[str]) -> Path:
    run_benchmark(ENV_ID, agents, out, episodes=6, seeds=1, env_kwargs=env_kwargs(n=18), batch_size=3, device="cpu",
                  verbose=False)
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return bench(root / "a", ["random", "center"]), bench(root / "b", ["raster", "saliency"])


def copies(folders, tmp_path) -> tuple[Path, Path]:
    a, b = (tmp_path / f.name for f in folders)
    for src, dst in zip(folders, (a, b)):
        shutil.copytree(src, dst)
    return a, b


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def one_line(code: int, text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gfnet compare: "), text
    return lines[0]


@pytest.mark.parametrize("spelling", ["same", "trailing_slash", "symlink"])
def test_out_that_is_a_compared_folder_is_refused(folders, tmp_path, capsys, spelling):
    a, b = copies(folders, tmp_path)
    out = {"same": str(a), "trailing_slash": str(a) + "/", "symlink": str(tmp_path / "link")}[spelling]
    if spelling == "symlink":
        (tmp_path / "link").symlink_to(a)
    before = snapshot(a)
    line = one_line(*run_cli(["compare", str(a), str(b), "--out", out], capsys))
    assert "is one of the compared folders" in line
    assert snapshot(a) == before  # before the fix: A's results.json held B's agents, the rest A's


def test_out_locked_by_a_running_benchmark_is_refused(folders, tmp_path, capsys):
    a, b = copies(folders, tmp_path)
    out = tmp_path / "merged"
    with ResultsFolder(out).claim():  # a benchmark is writing there
        line = one_line(*run_cli(["compare", str(a), str(b), "--out", str(out)], capsys))
        assert "in use by another benchmark" in line and f"pid {os.getpid()}" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_compared_folder_being_written_is_refused(folders, tmp_path, capsys):
    a, b = copies(folders, tmp_path)
    with ResultsFolder(b).claim():
        line = one_line(*run_cli(["compare", str(a), str(b)], capsys))
    assert str(b) in line and "in use by a running benchmark" in line


def test_full_disk_while_writing_leaves_the_old_merge_whole(folders, tmp_path, capsys, monkeypatch):
    a, b = copies(folders, tmp_path)
    out = tmp_path / "merged"
    assert run_cli(["compare", str(a), "--reference", "random", "--out", str(out)], capsys)[0] == 0
    before = snapshot(out)
    real_fsync = os.fsync

    def full_at_results_json(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if Path(name).name.startswith("results.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_at_results_json)
    code, text = run_cli(["compare", str(a), str(b), "--out", str(out)], capsys)
    monkeypatch.undo()
    assert code == 2 and "no space left on device" in text, text
    # before the fix: results.md of the new merge (4 agents) next to results.json of the old one (2)
    assert snapshot(out) == before
    assert not list(out.glob(".staging-*")) and not list(out.rglob("*.tmp")) and not (out / LOCK_FILE).exists()


def test_the_merge_is_a_whole_folder_that_can_be_compared_again(folders, tmp_path, capsys):
    a, b = copies(folders, tmp_path)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "seconds.png").write_bytes(b"a plot of another run")
    assert run_cli(["compare", str(a), str(b), "--out", str(out)], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)
    assert (out / "seconds.png").read_bytes() != b"a plot of another run"
    merged = json.loads((out / "results.json").read_text())
    assert set(merged["agents"]) == {"random", "center", "raster", "saliency"}
    again = tmp_path / "again"
    assert run_cli(["compare", str(out), "--reference", "saliency", "--out", str(again)], capsys)[0] == 0
    assert json.loads((again / "results.json").read_text())["reference"] == "saliency"
