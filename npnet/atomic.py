"""Writing files so that a crash, a kill or a full disk never leaves half of one behind.

``atomic_write(path)``: replacing a file atomically, so readers see the old file or the new
one, never half of one. Writing straight into ``checkpoint.npz`` would destroy the previous
checkpoint the moment the file is opened, and a crash, a full disk or Ctrl-C halfway would
leave neither. Instead:

1. write the new content to a temporary file ``.<name>.<pid>.tmp`` in the same folder;
2. flush it to the disk (``os.fsync``);
3. rename it over the target with ``os.replace``, which is atomic within one file system.

If anything fails before step 3, the temporary file is deleted and the target is untouched.
Only a process killed outright (``kill -9``, a power cut) leaves its temporary file behind;
the next write to the same target, or ``remove_stale_temp_files(folder)``, deletes the ones
whose process is no longer running.

Two more tools for a program that fills one folder with its results (``examples/
train_lenet.py``):

- ``FolderLock(folder)``: one writer per folder. A second program that tries to lock the
  folder gets ``FolderLockedError`` naming the first (its process id, start time and command).
  The lock is released when the program ends in any way, also when it is killed: the
  operating system drops it with the process (``fcntl.flock``), and a lock file left by a
  killed program is taken over, with a note.
- ``check_folder_writable(folder, need_bytes)``: write and delete a small probe file and
  compare the free space with what the program will need, so that a folder that cannot take
  the results is refused before the work starts, not after it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX; on Windows FolderLock falls back to a lock file with a process id in it
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: str | os.PathLike, pid: int | None = None) -> Path:
    """The temporary file ``atomic_write`` uses for ``path``: ``.<name>.<pid>.tmp`` next to it
    (hidden; the process id keeps two processes apart and tells whether its writer is gone)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}{TEMP_SUFFIX}")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """``with atomic_write(path) as file: ...`` writes to a temporary file that replaces
    ``path`` only when the block finishes without an exception. ``mode`` is "wb" or "w".

    Temporary files of the same target left by processes that are no longer running (killed
    while writing) are deleted first.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder, not a file")
    remove_stale_temp_files(path.parent, names=[path.name])
    # (Plain open(), unlike tempfile.mkstemp, gives the file the usual permissions.)
    temp_path = temp_path_for(path)
    try:
        with open(temp_path, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    finally:
        # only after a failure (an exception, Ctrl-C): a successful rename consumed it
        try:
            temp_path.unlink()
        except FileNotFoundError:
            pass


def remove_stale_temp_files(folder: str | os.PathLike, names=None) -> list[Path]:
    """Delete the temporary files ``.<name>.<pid>.tmp`` in ``folder`` whose process is no
    longer running (it was killed while writing ``<name>``). ``names``: only those targets
    (default: all). Returns the files deleted. Files of running processes are left alone."""
    removed = []
    try:
        candidates = list(Path(folder).iterdir())
    except OSError:  # no folder, or not readable: nothing to clean
        return removed
    for candidate in candidates:
        owner = _temp_file_owner(candidate.name, names)
        if owner is None or owner == os.getpid() or process_is_running(owner):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:  # someone else removed it first, or we may not: leave it
            pass
    return removed


def _temp_file_owner(filename: str, names) -> int | None:
    """The process id in ``.<name>.<pid>.tmp`` (for one of ``names``, if given), else None."""
    if not (filename.startswith(".") and filename.endswith(TEMP_SUFFIX)):
        return None
    target, _, pid = filename[1:-len(TEMP_SUFFIX)].rpartition(".")
    if not target or not pid.isdigit() or (names is not None and target not in names):
        return None
    return int(pid)


def process_is_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine (True when it cannot be told)."""
    if pid <= 0 or os.name == "nt":  # on Windows, os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: checks that the process exists, sends nothing
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists but belongs to another user
        return True
    return True


# ------------------------------------------------------------------------ folder lock
LOCK_NAME = ".lock"


class FolderLockedError(RuntimeError):
    """Another running program holds the lock of the folder. ``owner`` is what it wrote into
    the lock file (``pid``, ``started``, ``host``, ``command``), or {} if unreadable."""

    def __init__(self, folder: Path, owner: dict):
        self.folder, self.owner = folder, owner
        super().__init__(f"{folder} is in use by another run ({describe_owner(owner)})")


def describe_owner(owner: dict) -> str:
    """``pid 1234 on host, started 2024-05-01 12:00:00: python train.py ...`` from a lock
    file's contents."""
    if not owner.get("pid"):
        return "process id unknown"
    text = f"pid {owner['pid']}"
    if owner.get("host") and owner.get("host") != socket.gethostname():
        text += f" on {owner['host']}"
    if owner.get("started"):
        text += f", started {owner['started']}"
    if owner.get("command"):
        command = str(owner["command"])
        text += f": {command[:117] + '...' if len(command) > 120 else command}"
    return text


class FolderLock:
    """A lock on a folder for one writing program: ``with FolderLock(folder): ...``.

    The lock is the file ``folder/.lock``, holding the process id, start time, host and
    command of its owner (JSON), and locked with ``fcntl.flock`` while the owner runs. The
    operating system releases a flock when its process ends, also by ``kill -9``, so a lock
    file left behind by a killed program is not locked: the next program takes it over and
    ``note`` says so. ``release()`` (also at the end of the ``with`` block, after an error or
    Ctrl-C) deletes the file.

    Raises ``FolderLockedError`` when another program holds it, and ``OSError`` when the lock
    file cannot be written (a read-only folder, a full disk).

    Without ``fcntl`` (Windows) or on a file system without flock, the file is created with
    ``O_EXCL``; a lock file whose process is no longer running is taken over.
    """

    def __init__(self, folder: str | os.PathLike, info: dict | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "host": socket.gethostname(), "command": " ".join(sys.argv),
                     **(info or {})}
        self.note = None  # set when a stale lock was taken over
        self._fd = None
        self._use_flock = fcntl is not None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        for _ in range(20):  # retried only when the file changed under us
            if self._use_flock and self._acquire_flock():
                return
            if not self._use_flock and self._acquire_exclusive():
                return
        raise FolderLockedError(self.folder, self._read_owner_file())

    def release(self) -> None:
        """Delete the lock file (if it is still ours) and unlock. Safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._still_ours(fd):
                self.path.unlink()  # while still locked: the next program starts afresh
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock

    # -------------------------------------------------------------------- internals
    def _acquire_flock(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    # a file system without flock (some network or FUSE ones): lock files
                    os.close(fd)
                    self._use_flock = False
                    return False
                raise FolderLockedError(self.folder, _parse_owner(_read_fd(fd))) from None
            # A program that released the lock deleted the file first: if the path no longer
            # leads to the file we locked, start again with the new one.
            if not self._still_ours(fd):
                os.close(fd)
                return False
            previous = _parse_owner(_read_fd(fd))
            if previous:
                self.note = (f"{self.folder} was locked by run {describe_owner(previous)}, "
                             f"which ended without releasing it (killed?); taking it over")
            _write_fd(fd, self.info)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _acquire_exclusive(self) -> bool:  # pragma: no cover (Windows, or no flock)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = self._read_owner_file()
            pid = owner.get("pid")
            if isinstance(pid, int) and process_is_running(pid):
                raise FolderLockedError(self.folder, owner) from None
            if owner:  # (an empty file is what a failed flock attempt left)
                self.note = (f"{self.folder} was locked by run {describe_owner(owner)}, which "
                             f"is no longer running; taking it over")
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            return False
        _write_fd(fd, self.info)
        self._fd = fd
        return True

    def _still_ours(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False

    def _read_owner_file(self) -> dict:
        try:
            return _parse_owner(self.path.read_bytes())
        except OSError:
            return {}


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_fd(fd: int, info: dict) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    data = json.dumps(info).encode()
    while data:
        data = data[os.write(fd, data):]


def _parse_owner(content: bytes) -> dict:
    try:
        owner = json.loads(content.decode("utf-8", "replace")) if content.strip() else {}
    except ValueError:
        return {"command": "(unreadable lock file)"}
    return owner if isinstance(owner, dict) else {}


# ------------------------------------------------------------------- folder checks
class FolderNotWritableError(OSError):
    """A folder cannot take the files a program is about to write. ``str()`` is a one-line
    message naming the folder and the reason; ``errno`` says which (e.g. ENOSPC, EACCES)."""

    def __init__(self, code: int | None, message: str):
        super().__init__(message)
        self.errno = code


def check_folder_writable(folder: str | os.PathLike, need_bytes: int = 0) -> None:
    """Raise ``FolderNotWritableError`` naming ``folder`` and the reason unless a file can be
    created, written and deleted in it and its disk has about ``need_bytes`` free.

    The probe file is ``.probe.<pid>.tmp``, so a probe left by a killed program is cleaned up
    by ``remove_stale_temp_files`` like any temporary file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        reason = "it is a file, not a folder" if folder.exists() else "it does not exist"
        raise FolderNotWritableError(errno.ENOTDIR, f"cannot write in {folder}: {reason}")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < need_bytes:
        raise FolderNotWritableError(
            errno.ENOSPC, f"only {_megabytes(free)} free on the disk holding {folder}; about "
                          f"{_megabytes(need_bytes)} are needed")
    probe = temp_path_for(folder / "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            data = b"\0" * min(max(need_bytes, 1), 1 << 16)  # a small part of it, for real
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise FolderNotWritableError(error.errno, f"cannot write in {folder}: "
                                                  f"{error.strerror or error}") from error
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.0f} kB"
