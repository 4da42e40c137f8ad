"""Output folders: one writer at a time.

Every ``gfnet`` command that writes an ``--out`` (``benchmark``, ``compare``, ``train-agent``, ``train-policy``,
``train-features``, ``train-default-task``; ``prepare-data`` for its ``.npy``) holds a lock on it for the whole
run, so that two runs never write one folder: the second is refused in one line, naming the first.

The lock is a file (``.lock`` inside the folder; ``<file>.lock`` beside a single output file) that holds the
owner's host, pid and command as JSON, and on which the owner holds an exclusive ``flock``. The kernel drops a
``flock`` when its process dies, however it dies, so a lock file left by a run that was killed (``kill -9``,
a crash, a reboot) is taken over by the next run without any guess from its pid; two runs that find the same
stale lock cannot both take it (the ``flock`` is taken atomically, and a run that locked a file that was
removed meanwhile starts again). The file is removed when its owner releases it. A lock file held by no
process but naming another host is still refused (that host's run may hold it through a file system that does
not share ``flock``): the message says to delete it if no run uses the folder. Where ``flock`` is not
available, the pid decides: a lock whose process no longer exists on this host is taken over.

Every problem is an :class:`OutputFolderError` (a ``ValueError``: the CLI prints it in one line).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["LOCK_FILE", "FolderLock", "OutputFolder", "OutputFolderError", "lock_holder", "pid_alive"]

#: Name of the lock file inside a locked folder.
LOCK_FILE = ".lock"
#: How long a run retries a lock that another process holds before refusing (rides over a momentary probe).
_RETRY_SECONDS = 0.3


class OutputFolderError(ValueError):
    """``--out`` cannot be used: a file, not writable, or in use by another run."""


def pid_alive(pid) -> bool:
    """Whether process ``pid`` exists on this host (a process we may not signal counts as alive)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _host() -> str:
    return socket.gethostname()


def _describe(owner: dict | None) -> str:
    if not owner:
        return "another process"
    command = f"gfnet {owner['command']}, " if owner.get("command") else ""
    return f"{command}pid {owner.get('pid')} on {owner.get('host')}"


def _read_owner(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:  # a planted symlink is refused by the open that locks, not followed here
            owner = json.loads(f.read(4096) or b"null")
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _try_flock(fd: int, shared: bool = False) -> bool | None:
    """True: locked; False: another open file holds it; None: ``flock`` is not available here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    return True


def lock_holder(lock: str | os.PathLike) -> dict | None:
    """The run holding the lock file ``lock`` (``{"host", "pid", "command"}``, or ``{}`` when unknown), or None
    when no run holds it (no file, or a file left by a run that is gone)."""
    lock = Path(lock)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        owner = _read_owner(lock) or {}
        got = _try_flock(fd, shared=True)
        if got is False:
            return owner
        if owner.get("host") not in (None, _host()):
            return owner  # another host's run: cannot tell, count it as running
        if got is None:
            return owner if pid_alive(owner.get("pid")) else None
        return None
    finally:
        os.close(fd)  # drops the shared flock, if taken


class FolderLock:
    """The lock file ``lock`` of one output, held from :meth:`acquire` to :meth:`release` (module docstring).

    Args:
        lock: the lock file.
        command: the ``gfnet`` sub-command that holds it (recorded, and named to a refused run).
        label: how the output is named in messages (``--out runs/x``).
    """

    def __init__(self, lock: str | os.PathLike, command: str = "", label: str | None = None) -> None:
        self.path = Path(lock)
        self.command = command
        self.label = label or str(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise :class:`OutputFolderError` naming the run that holds it."""
        if self._fd is not None:
            return self
        deadline = time.monotonic() + _RETRY_SECONDS
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as e:
                raise OutputFolderError(f"cannot create the lock file {self.path} of {self.label}: "
                                        f"{e.strerror or e}") from None
            try:
                got = _try_flock(fd)
                owner = _read_owner(self.path)
                if got is False:
                    if time.monotonic() < deadline:
                        os.close(fd)
                        time.sleep(0.05)
                        continue
                    self._refuse(owner)
                if not _same_file(fd, self.path):
                    os.close(fd)  # the lock we opened was released (removed) meanwhile: start again
                    continue
                if owner is not None and not self._stale(owner, got):
                    self._refuse(owner)
                data = json.dumps({"host": _host(), "pid": os.getpid(), "command": self.command}).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._fd = fd
            return self

    def _stale(self, owner: dict, got: bool | None) -> bool:
        """Whether a lock file naming ``owner``, which we could ``flock`` (``got``), is left by a dead run."""
        if owner.get("host") != _host():
            return False  # another host: its run may hold the folder through a file system without shared flock
        return bool(got) or not pid_alive(owner.get("pid"))

    def _refuse(self, owner: dict | None) -> None:
        what = f"another {owner['command']}" if owner and owner.get("command") else "another run"
        raise OutputFolderError(f"{self.label} is in use by {what} ({_describe(owner)}); wait for it, choose "
                                f"another output, or delete {self.path} if no run uses it")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)  # removed before the flock is dropped: no one locks a stale file
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


class OutputFolder:
    """An ``--out`` folder claimed for one run: checked, created if missing, and locked (module docstring).

    Use as ``with OutputFolder(out, "train-agent").claim() as folder: ...``.
    """

    def __init__(self, path: str | os.PathLike, command: str = "") -> None:
        self.path = Path(path)
        self.command = command
        self._lock: FolderLock | None = None
        self._created = False

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def claim(self) -> "OutputFolder":
        """Check the folder and take its lock; :class:`OutputFolderError` (one line) when it cannot be used."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise OutputFolderError(f"--out {out} is a file, not a folder; give a folder path (created if missing)")
        try:
            self._created = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputFolderError(f"cannot create the output folder {out}: {e.strerror or e}") from None
        lock = FolderLock(self.lock_path, self.command, f"--out {out}")
        try:
            lock.acquire()
        except OutputFolderError:
            self._remove_if_created()
            raise
        self._lock = lock
        return self

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.held

    def release(self) -> None:
        """Drop the lock (and the folder itself if this run created it and left it empty)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._remove_if_created()

    def _remove_if_created(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only succeeds when empty

    def keep(self) -> None:
        """The folder now holds results: keep it even if this run created it."""
        self._created = False

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
