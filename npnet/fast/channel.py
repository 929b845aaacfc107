"""A channel between npnet's process and a helper process: small messages through a socket,
arrays through shared memory.

    channel.send("forward", {"x": part}, key=3)    # arrays copied into shared memory
    kind, fields, arrays = channel.recv()           # ("forward", {"key": 3}, {"x": copy})

Each side writes the arrays of its messages into an area of its own, a file in shared memory
(/dev/shm on Linux) that both sides map; the message names the file and where each array lies.
Copying 400 KB into it takes tens of microseconds; pickling it through the socket took 0.65 ms
(benchmarks/README.md, phase 7). The reader copies the arrays out, so nothing it keeps points
into the area, and removes the file's name once it has mapped it (the mapping stays): nothing
is left in /dev/shm once both have it, or when either side ends.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from multiprocessing.connection import Connection

import numpy as np

ALIGN = 64  # bytes: each array starts on a cache line


def shared_folder() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


class _Outbox:
    """The area this side writes its messages' arrays into: grown (as a new file) when a
    message needs more room than it has."""

    def __init__(self):
        self.path, self.map, self.size = None, None, 0

    def put(self, arrays: dict) -> dict:
        layout, offset = {}, 0
        for name, array in arrays.items():
            array = np.asarray(array)
            layout[name] = (offset, array.shape, array.dtype.str)
            offset += -(-array.nbytes // ALIGN) * ALIGN
        if offset > self.size:
            self._grow(max(offset, 2 * self.size, 2**20))
        for name, array in arrays.items():
            start, shape, dtype = layout[name]
            np.copyto(np.ndarray(shape, dtype=dtype, buffer=self.map, offset=start), array)
        return {"path": self.path, "layout": layout}

    def _grow(self, size: int) -> None:
        self.close()
        fd, path = tempfile.mkstemp(prefix="npnet-", dir=shared_folder())
        try:
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.path, self.size = path, size

    def close(self) -> None:
        if self.path is not None:
            _remove(self.path)  # the reader may have removed it already
        self.path, self.map, self.size = None, None, 0  # the mapping goes with its last view


class _Inbox:
    """The other side's area, mapped once per file."""

    def __init__(self):
        self.path, self.map = None, None

    def get(self, description: dict) -> dict:
        if description["path"] != self.path:
            with open(description["path"], "r+b") as file:
                self.map = mmap.mmap(file.fileno(), 0)
            self.path = description["path"]
            _remove(self.path)  # both sides have it mapped now: the name is no longer needed
        return {name: np.ndarray(shape, dtype=dtype, buffer=self.map, offset=start).copy()
                for name, (start, shape, dtype) in description["layout"].items()}


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Channel:
    """Messages (kind, fields, arrays) over ``connection`` (a duplex
    multiprocessing.connection.Connection), arrays through shared memory."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self._outbox, self._inbox = _Outbox(), _Inbox()

    def send(self, kind: str, arrays: dict | None = None, **fields) -> None:
        description = self._outbox.put(arrays) if arrays else None
        self.connection.send((kind, fields, description))

    def recv(self, timeout: float | None = None):
        """(kind, fields, arrays); raises EOFError if the other side has gone, TimeoutError
        after ``timeout`` seconds without a message."""
        if timeout is not None and not self.connection.poll(timeout):
            raise TimeoutError(f"no message in {timeout:.0f} s")
        kind, fields, description = self.connection.recv()
        return kind, fields, ({} if description is None else self._inbox.get(description))

    def close(self) -> None:
        self._outbox.close()
        self.connection.close()
