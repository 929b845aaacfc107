"""Replacing a file atomically: readers see the old file or the new one, never half of one.

Writing straight into ``checkpoint.npz`` would destroy the previous checkpoint the moment the
file is opened, and a crash, a full disk or Ctrl-C halfway would leave neither. Instead:

1. write the new content to a temporary file in the same folder;
2. flush it to the disk (``os.fsync``);
3. rename it over the target with ``os.replace``, which is atomic within one file system.

If anything fails before step 3, the temporary file is deleted and the target is untouched.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """``with atomic_write(path) as file: ...`` writes to a temporary file that replaces
    ``path`` only when the block finishes without an exception. ``mode`` is "wb" or "w"."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    # A hidden name next to the target; the process id keeps two processes apart. (Plain
    # open(), unlike tempfile.mkstemp, gives the file the usual permissions.)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp_path, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, path)
    finally:
        if temp_path.exists():  # only after a failure: a successful rename consumed it
            temp_path.unlink()
