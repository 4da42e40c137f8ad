"""Issue 23, case 9: ``gfnet prepare-data`` on a full disk, and the temporary files of killed runs.

``prepare-data`` wrote its cache through a sparse memory map: on a full disk the process died by ``SIGBUS``
(exit -7, no message), and ``kill -9`` left ``<out>.tmp<pid>.npy`` at full size (7.5 GB for ImageNet val), never
removed by later runs. Now the temporary file's blocks are reserved with ``os.posix_fallocate`` before any image
is decoded (a full disk is an ``OSError`` naming the size and the free space), and each run removes the temporary
files of this host's writers that are gone. The full disk is simulated: ``posix_fallocate`` raises ENOSPC, as it
does when the blocks are not there.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from feature_nets.checkpoint import save_checkpoint
from gfnet_env.data.image_folder import imagenet_split
from gfnet_env.data.prepared import open_prepared, prepare_split
from helpers import run_cli, tiny_model, write_jpegs

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
CACHE = "val.gfnet-prepared.npy"


@pytest.fixture()
def data_root(tmp_path):
    write_jpegs(tmp_path / "val")
    return tmp_path


def split(root: Path):
    return imagenet_split(root, "val", tiny_model().spec.config)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp" in p.name or p.name.endswith(".lock"))


def no_space(fd, offset, length):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_full_disk_is_an_error_with_a_message_before_any_decoding(data_root, monkeypatch):
    prepare_split(split(data_root))
    old = (data_root / CACHE).read_bytes(), (data_root / (CACHE + ".json")).read_bytes()
    decoded = []
    import gfnet_env.data.prepared as prepared

    original = prepared._pixels
    monkeypatch.setattr(prepared, "_pixels", lambda *a: decoded.append(1) or original(*a))
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OSError) as info:
        prepare_split(split(data_root))
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert "no space left on device for the prepared cache" in message and str(data_root / CACHE) in message
    assert f"({12 * 3 * 48 * 48 + 128} bytes)" in message and "free" in message, message
    assert decoded == []  # refused before any image was decoded
    assert leftovers(data_root) == []
    assert ((data_root / CACHE).read_bytes(), (data_root / (CACHE + ".json")).read_bytes()) == old


def test_full_disk_on_the_command_line_is_one_line(data_root, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "tiny.pth.tar"
    save_checkpoint(tiny_model(), ckpt)
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    code, text = run_cli(["prepare-data", "--data-root", str(data_root), "--model", str(ckpt)], capsys)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gfnet prepare-data: no space left on device"), text
    assert leftovers(data_root) == [] and not (data_root / CACHE).exists()


def test_a_file_system_without_fallocate_still_writes_the_cache(data_root, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    prepare_split(split(data_root))
    assert open_prepared(split(data_root)) is not None and leftovers(data_root) == []


def test_the_temporary_file_is_allocated_in_full(data_root, monkeypatch):
    calls = []
    real = os.posix_fallocate

    def spy(fd, offset, length):
        calls.append((offset, length, os.fstat(fd).st_size))
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", spy)
    prepare_split(split(data_root))
    ((offset, length, size),) = calls
    assert offset == 0 and length == size == (data_root / CACHE).stat().st_size


def test_temporary_files_of_dead_writers_are_removed(data_root):
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in socket.gethostname())
    dead, alive = dead_pid(), os.getppid()
    planted = {
        f"{CACHE}.tmp{dead}.npy": True,                # the name older versions used
        f"{CACHE}.tmp{dead}.npy.json": True,
        f"{CACHE}.tmp.{host}.{dead}.npy": True,
        f"{CACHE}.tmp.{host}.{alive}.npy": False,      # a live writer of this host (not ours to remove)
        f"{CACHE}.tmp.elsewhere.{dead}.npy": False,    # another host's writer: its pid means nothing here
        f"other.npy.tmp{dead}.npy": False,             # another cache's
    }
    for name in planted:
        (data_root / name).write_bytes(b"\0" * 1000)
    prepare_split(split(data_root))
    left = {p.name for p in data_root.iterdir()}
    for name, removed in planted.items():
        assert (name not in left) == removed, name
    from gfnet_env.data.prepared import remove_dead_temporaries

    assert remove_dead_temporaries(data_root / CACHE) == []


def test_kill_9_while_writing_then_the_next_run_cleans_up(data_root):
    """The reported case, for real: a writer killed in the middle of the memory map, then a second run."""
    script = (
        "import time, sys\n"
        "import gfnet_env.data.prepared as prepared\n"
        "from gfnet_env.data.image_folder import imagenet_split\n"
        "from helpers import tiny_model\n"
        "def stuck(*a):\n"
        "    print('writing', flush=True); time.sleep(600)\n"
        "prepared._pixels = stuck\n"
        f"prepared.prepare_split(imagenet_split({str(data_root)!r}, 'val', tiny_model().spec.config), threads=1)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temporaries = [p for p in data_root.iterdir() if ".tmp" in p.name]
        assert len(temporaries) == 1 and temporaries[0].stat().st_size >= 12 * 3 * 48 * 48
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert temporaries[0].exists()  # kill -9 removes nothing
    start = time.perf_counter()
    prepare_split(split(data_root))  # the lock of the killed writer is taken over, its temporary file removed
    assert time.perf_counter() - start < 60
    assert leftovers(data_root) == []
    cache = open_prepared(split(data_root))
    assert cache is not None and np.asarray(cache.pixels).any()


def test_two_writers_of_one_cache_are_one_at_a_time(data_root):
    from feature_nets.folders import FolderLock, OutputFolderError

    with FolderLock(data_root / (CACHE + ".lock"), "prepare-data"):
        with pytest.raises(OutputFolderError, match="in use by another prepare-data"):
            prepare_split(split(data_root))
    assert leftovers(data_root) == []
