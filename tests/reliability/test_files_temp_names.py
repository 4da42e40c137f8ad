"""Issue 23, cases 3 and 7 (temporary files): every atomic write gets its own temporary file.

``atomic_write`` opened the fixed name ``<file>.tmp`` with ``open(..., "wb")``: it followed a planted symlink
(``agent.json.tmp -> victim.txt`` made ``gfnet train-agent`` write into the victim) and two writers of one file
shared it (a reader saw unreadable and mixed files under the final name). Now the temporary file comes from
``tempfile.mkstemp`` in the target folder (``O_CREAT | O_EXCL``, a fresh name that never follows a link) and is
renamed over the final name; on failure it is removed.
"""

from __future__ import annotations

import os
import multiprocessing
import stat

import pytest
import torch

from agents.trained import write_agent_json
from feature_nets.files import atomic_save, atomic_write, atomic_write_text

pytestmark = pytest.mark.reliability

ROUNDS = 200


def test_planted_tmp_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "agent.json.tmp").symlink_to(victim)
    (out / "agent.json.tmp.tmp").symlink_to(victim)
    write_agent_json(out, "sb3-ppo", "sb3_ppo.zip")
    atomic_save({"x": torch.ones(3)}, out / "agent.json.tmp.pt")
    atomic_write_text(out / "notes.txt", "new\n")
    assert victim.read_text() == "precious\n", "a planted symlink redirected the write"
    assert '"sb3-ppo"' in (out / "agent.json").read_text()
    assert (out / "agent.json.tmp").is_symlink()  # the planted link is left alone, not written through


def test_a_symlink_under_the_final_name_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "results.json").symlink_to(victim)
    atomic_write_text(tmp_path / "results.json", "{}")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "results.json").is_symlink() and (tmp_path / "results.json").read_text() == "{}"


def test_written_files_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; the final file has the mode ``open`` would give it (0666 minus the umask)."""
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(path, fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, lambda f: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_temporary_names_are_unique_and_in_the_target_folder(tmp_path):
    seen = []

    def write(f):
        (name,) = set(os.listdir(tmp_path)) - {"f.bin"}  # the temporary file, in the target folder
        seen.append(name)
        f.write(b"x")

    for _ in range(3):
        atomic_write(tmp_path / "f.bin", write)
    assert len(set(seen)) == 3, seen
    assert all(name.startswith("f.bin.") and name.endswith(".tmp") and name != "f.bin.tmp" for name in seen)


def race(path, write, check, rounds: int) -> dict:
    """Two writer processes write ``path`` ``rounds`` times each while a reader (this process) checks every file
    it sees under the final name; returns the counts: reads, bad reads, failed writes."""
    ctx = multiprocessing.get_context("fork")
    failed = ctx.Value("i", 0)

    def writer(who: int) -> None:
        for _ in range(rounds):
            try:
                write(who)
            except Exception:  # noqa: BLE001 - counted (the shared name made one writer's rename fail)
                with failed.get_lock():
                    failed.value += 1
        os._exit(0)

    procs = [ctx.Process(target=writer, args=(w,)) for w in (1, 2)]
    for p in procs:
        p.start()
    counts, first_bad = {"reads": 0, "bad": 0}, []
    while any(p.is_alive() for p in procs):
        try:
            check(path)
        except FileNotFoundError:
            continue
        except Exception as e:  # noqa: BLE001 - a torn or mixed file under the final name
            counts["bad"] += 1
            first_bad.append(repr(e)[:200])
        counts["reads"] += 1
    for p in procs:
        p.join()
    counts["failed_writes"] = failed.value
    assert counts["bad"] == 0 and counts["failed_writes"] == 0, (counts, first_bad[:3])
    return counts


def test_two_atomic_save_writers_never_show_a_torn_or_mixed_file(tmp_path):
    path = tmp_path / "last.pth.tar"
    payload = {w: {"writer": w, "t": torch.full((64, 1024), float(w))} for w in (1, 2)}  # 256 KiB each

    def check(p):
        blob = torch.load(p, weights_only=True)
        w = blob["writer"]
        assert torch.equal(blob["t"], payload[w]["t"]), f"a file of writer {w} holds another writer's tensor"

    counts = race(path, lambda w: atomic_save(payload[w], path), check, ROUNDS)
    assert counts["reads"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_two_atomic_write_text_writers_never_show_a_torn_or_mixed_file(tmp_path):
    path = tmp_path / "agent.json"
    text = {w: str(w) * 200_000 + "\n" for w in (1, 2)}

    def check(p):
        got = p.read_text()
        assert got in (text[1], text[2]), f"torn or mixed: {len(got)} characters, {set(got)}"

    counts = race(path, lambda w: atomic_write_text(path, text[w]), check, ROUNDS)
    assert counts["reads"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_progress_csv_is_not_written_through_a_planted_symlink(tmp_path):
    """The one file a run appends to in place (``progress.csv``) is opened without following a symlink."""
    from agents.run_log import RunLog

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "progress.csv").symlink_to(victim)
    with pytest.raises(OSError), RunLog(out) as log:
        log.open_csv(["batch", "loss"])
    assert victim.read_text() == "precious\n"
