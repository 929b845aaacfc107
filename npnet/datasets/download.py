"""Downloading a data file safely: try mirrors in order, check the MD5, never keep a bad file.

Three rules keep a cache trustworthy:

1. Download into a temporary ``.part`` file in the destination folder, never into the final
   name.
2. Compare the MD5 checksum of what arrived with the published one.
3. Only then rename the temporary file to its final name with ``os.replace``, which is atomic
   on one file system: the final name either does not exist or holds the complete, verified
   file. An interrupted (Ctrl-C), truncated or corrupted download is deleted instead.

Two more keep a download from hanging or littering:

- A time limit (``timeout``, in seconds) for the whole download, over all mirrors: a mirror
  that stalls is abandoned when the time is up, or after ``STALL_TIMEOUT`` seconds without
  data, whichever comes first.
- A process killed mid-download (``kill -9``, a closed laptop, a crash) cannot delete its
  ``.part`` file. Its name, ``.<file>.<process id>-<random>.part``, says which process wrote
  it, and the next download of that file deletes it once that process is gone (or after
  ``STALE_PART_AGE`` seconds without a change, whoever wrote it).

Every failure raises ``DownloadError``, whose one-line message keeps each mirror's reason: an
HTTP status, a refused connection, a timeout, a wrong checksum, or a folder that cannot be
written.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..atomic import process_is_running
from .idx import DatasetError

DOWNLOAD_TIMEOUT = 120.0  # default time limit in seconds for a download, over all its mirrors
STALL_TIMEOUT = 30.0  # give up on a mirror that sends nothing for this many seconds
STALE_PART_AGE = 3600.0  # a .part file unchanged for this long is left over, whoever wrote it
CHUNK_SIZE = 1 << 16  # read up to 64 KiB at a time, updating the checksum and the progress bar


class DownloadError(DatasetError):
    """No mirror delivered the file with the expected checksum, or it could not be saved.

    - ``failures``: one entry per mirror tried, ``"<url>: <what went wrong>"``, or a single
      entry saying why the file could not be written
    - ``cannot_write``: True when the destination folder is the problem (read-only, full, not
      a folder), not the mirrors; trying other mirrors would not help
    """

    def __init__(self, name: str, failures: list[str], cannot_write: bool = False,
                 message: str | None = None):
        # "name", not "filename": subclasses may also be an OSError, whose str() changes when
        # its ``filename`` attribute is set.
        self.name = name
        self.failures = failures
        self.cannot_write = cannot_write
        super().__init__(message or f"could not download {name}: {'; '.join(failures)}")


class _WriteFailed(Exception):
    """Writing the downloaded bytes to disk failed (internal: wraps the OSError)."""

    def __init__(self, error: OSError):
        super().__init__(error)
        self.error = error


class _Transfer:
    """How far a transfer got, for the error message when it stops early."""

    def __init__(self):
        self.received = 0
        self.expected: int | None = None


def download_file(filename: str, mirrors: list[str], md5: str, directory: str | os.PathLike,
                  timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download ``filename`` from the first mirror that serves it with the expected MD5.

    Inputs:
    - filename: e.g. ``"train-images-idx3-ubyte.gz"``; the URL is mirror + filename
    - mirrors: base URLs tried in order, e.g. ``["https://example.org/mnist/"]``
    - md5: the expected MD5 of the file, as 32 hex digits
    - directory: where to save it (created if needed)
    - timeout: the time limit in seconds for the whole download, over all mirrors; a mirror
      that sends nothing for ``STALL_TIMEOUT`` seconds is given up earlier

    Returns the path of the verified file, ``directory / filename``. Raises ``DownloadError``,
    whose one-line message gives each mirror's reason, if none of them worked or the file
    could not be saved (then ``cannot_write`` is True).
    """
    if not timeout > 0:
        raise ValueError(f"download_file: timeout must be a number of seconds above 0, "
                         f"got {timeout!r}")
    path, _ = fetch_verified(filename, mirrors, md5, directory,
                             deadline=time.monotonic() + timeout, time_limit=timeout)
    return path


def fetch_verified(filename: str, mirrors: list[str], md5: str, directory: str | os.PathLike,
                   deadline: float, time_limit: float) -> tuple[Path, str]:
    """``download_file`` with the time limit given as a ``time.monotonic()`` deadline, so that
    several files can share one; ``time_limit`` (seconds) is only used in messages.

    Returns (the path of the verified file, the mirror that served it).
    """
    if isinstance(mirrors, str):  # one URL, or several separated by spaces or commas
        mirrors = mirrors.replace(",", " ").split()
    directory = Path(directory)
    target = directory / filename
    _prepare_folder(directory, filename)
    _remove_stale_parts(directory, filename)
    failures = []
    for mirror in mirrors:
        url = (mirror if mirror.endswith("/") else mirror + "/") + filename
        if deadline - time.monotonic() <= 0:
            failures.append(f"{url}: not tried, the time limit of {time_limit:g} s ran out")
            continue
        try:
            part_file, part_name = _create_part_file(directory, filename)
        except OSError as error:  # read-only, no permission, full
            raise _cannot_write_error(filename, directory, error) from error
        try:
            transfer = _Transfer()
            try:
                received_md5 = _copy_url_to_file(url, part_file, deadline, filename, transfer)
                _close(part_file)  # some file systems (NFS) report write errors only here
            except _WriteFailed as failed:
                raise _cannot_write_error(filename, directory, failed.error) from failed.error
            except (OSError, http.client.HTTPException, ValueError) as error:
                # OSError covers urllib's URLError and HTTPError (e.g. 404), refused
                # connections and timeouts; HTTPException a connection dropped mid-transfer;
                # ValueError a malformed URL.
                failures.append(f"{url}: {_describe(error, transfer, deadline, time_limit)}")
                continue
            if received_md5 != md5:
                failures.append(f"{url}: MD5 of the download is {received_md5}, expected {md5} "
                                f"(corrupt or a different file, deleted)")
                continue
            try:
                os.replace(part_name, target)
            except OSError as error:
                raise _cannot_write_error(filename, directory, error) from error
            return target, mirror
        finally:
            # Reached on success (the temporary file was renamed and is gone), on failure, and
            # on KeyboardInterrupt: a partial download is never left behind.
            try:
                part_file.close()  # does nothing if already closed
            except OSError:
                pass  # a failed flush of a download that is being thrown away anyway
            _remove_quietly(part_name)
    raise DownloadError(filename, failures or ["no mirrors given"])


def _copy_url_to_file(url: str, file, deadline: float, label: str, transfer: _Transfer) -> str:
    """Stream ``url`` into the open binary ``file`` with a progress bar; return the MD5.

    Raises ``TimeoutError`` when ``deadline`` (a ``time.monotonic()`` value) passes or the
    server sends nothing for ``STALL_TIMEOUT`` seconds, and ``_WriteFailed`` when ``file``
    cannot be written (e.g. the disk is full).
    """
    from tqdm import tqdm  # imported here: only downloading needs it

    md5 = hashlib.md5(usedforsecurity=False)  # MD5 as a checksum, not for security
    # The socket timeout bounds each wait for the server (connecting, then each read), not the
    # whole transfer; so it is set again before every read to what is left of the deadline.
    with urllib.request.urlopen(url, timeout=_wait_limit(deadline)) as response:
        transfer.expected = response.length  # from the Content-Length header; None if not sent
        # read1 returns what has arrived (at most one wait), where read would keep waiting
        # until it has CHUNK_SIZE bytes: a server trickling data could then outlast the
        # deadline.
        read = getattr(response, "read1", response.read)
        with tqdm(total=transfer.expected, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=label) as progress:
            while True:
                _set_read_timeout(response, _wait_limit(deadline))
                chunk = read(CHUNK_SIZE)
                if not chunk:
                    break
                try:
                    file.write(chunk)
                except OSError as error:
                    raise _WriteFailed(error) from error
                md5.update(chunk)
                transfer.received += len(chunk)
                progress.update(len(chunk))
        try:
            file.flush()
        except OSError as error:
            raise _WriteFailed(error) from error
    if transfer.expected is not None and transfer.received < transfer.expected:
        raise http.client.IncompleteRead(b"", transfer.expected - transfer.received)
    return md5.hexdigest()


def _wait_limit(deadline: float) -> float:
    """How long one wait for the server may take: until the deadline, at most STALL_TIMEOUT."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the time limit ran out")
    return min(remaining, STALL_TIMEOUT)


def _set_read_timeout(response, seconds: float) -> None:
    """Set the timeout of the socket under an open HTTP ``response``, where there is one.

    urllib offers no public way to change it after ``urlopen``; ``response.fp.raw._sock`` is
    where http.client keeps the socket. Without it (another Python, an ftp:// or file:// URL)
    each read keeps the timeout given to ``urlopen``, and the deadline is checked between reads.
    """
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(seconds)


def _describe(error: BaseException, transfer: _Transfer, deadline: float,
              time_limit: float) -> str:
    """What went wrong at a mirror, in words, on one line."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason  # urllib wraps the socket's error: look at that
    if isinstance(error, TimeoutError):
        got = f"{transfer.received:,}"
        if transfer.expected is not None:
            got += f" of {transfer.expected:,}"
        got += " bytes received"
        if time.monotonic() >= deadline - 0.05:
            return f"timed out: the time limit of {time_limit:g} s ran out ({got})"
        return f"timed out: no data for {STALL_TIMEOUT:g} s ({got})"
    if isinstance(error, http.client.IncompleteRead):
        return (f"the connection closed after {transfer.received:,} of "
                f"{transfer.expected:,} bytes" if transfer.expected is not None
                else f"the connection closed early ({error!r})")
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (the server is down, or this machine is offline)"
    if isinstance(error, socket.gaierror):
        return f"cannot look up the server's name ({error.strerror}: offline?)"
    if isinstance(error, OSError) and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{error.strerror} (offline?)"
    if isinstance(error, ValueError):
        return f"not a URL npnet can download from ({_one_line(str(error))})"
    if isinstance(error, http.client.HTTPException):
        return f"the connection broke ({type(error).__name__}: {_one_line(str(error))})"
    return _one_line(str(error)) or type(error).__name__


def _cannot_write_error(filename: str, directory: Path, error: OSError) -> DownloadError:
    """The DownloadError for a destination folder that cannot take the file."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason += ": free some space, or download to a folder on another disk"
    return DownloadError(filename, [f"cannot write to {directory} ({_one_line(reason)})"],
                         cannot_write=True)


def _prepare_folder(directory: Path, filename: str) -> None:
    """Create ``directory`` if needed; refuse a folder in the way of the file itself."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DownloadError(filename, [f"cannot write to {directory}: it exists but is not a "
                                       f"folder"], cannot_write=True) from None
    except OSError as error:
        raise _cannot_write_error(filename, directory, error) from error
    if (directory / filename).is_dir():
        raise DownloadError(filename, [f"cannot save it: {directory / filename} is a folder, "
                                       f"not a file; remove or rename that folder"],
                            cannot_write=True)


def _create_part_file(directory: Path, filename: str):
    """Open a new, empty temporary file for ``filename`` in ``directory``.

    Returns (the open binary file, its path). Its name, ``.<filename>.<pid>-<random>.part``,
    is hidden (the leading dot), unique (``mkstemp``), and records our process id so that a
    later download can tell whether it was left by a process that has died. It sits in the
    same folder as the target so that ``os.replace`` is a rename on one file system.
    """
    handle, name = tempfile.mkstemp(dir=directory, prefix=f".{filename}.{os.getpid()}-",
                                    suffix=".part")
    return os.fdopen(handle, "wb"), name


def _remove_stale_parts(directory: Path, filename: str) -> None:
    """Delete ``.part`` files of ``filename`` left in ``directory`` by a killed download.

    A part file is left over when the process that wrote it is no longer running (checked on
    this machine, for files named by ``_create_part_file``), or when it has not changed for
    ``STALE_PART_AGE`` seconds (for any ``.<filename>.*.part``, e.g. from older npnet versions
    whose names hold no process id). A download in progress in another process keeps its file.
    Nothing is reported if a file cannot be deleted (e.g. a read-only folder).
    """
    pattern = re.compile(rf"\.{re.escape(filename)}\.(?:(\d+)-)?[A-Za-z0-9_]+\.part")
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if age > STALE_PART_AGE or (pid is not None and pid != os.getpid()
                                    and not process_is_running(pid)):
            _remove_quietly(entry.path)


def _close(file) -> None:
    try:
        file.close()
    except OSError as error:
        raise _WriteFailed(error) from error


def _remove_quietly(path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _one_line(text: str) -> str:
    return " ".join(text.split())
