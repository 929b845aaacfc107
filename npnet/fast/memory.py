"""Freed memory kept for the next step, instead of handed back to the system and faulted in again.

A LeNet training step at batch 256 makes and frees about 45 MB of arrays, the same sizes every
step. By default glibc's malloc gives freed memory back to the system: an array above its mmap
threshold is unmapped when freed, and the top of the heap is trimmed once more than the trim
threshold is free. The next step's arrays then land on fresh pages, and the first write to each
4 KiB page is a page fault that the kernel answers with a zeroed page. Measured on the 2-core
VM this project is developed on: 2,800-3,400 faults per step, about 3 microseconds each, 9 ms of
system time in a 30-36 ms step (benchmarks/README.md, phase 7). PyTorch's step, in the same
process, faulted about 1,000 times.

``keep_freed_memory`` sets two of malloc's knobs (mallopt(3)) once per process:

- M_MMAP_THRESHOLD = 32 MiB: arrays up to this size come from the heap, whose freed memory is
  reused. (glibc's own dynamic threshold rises up to this same value; larger arrays, such as a
  dataset, still get their own mapping and go back to the system when freed.)
- M_TRIM_THRESHOLD = 256 MiB: the heap keeps up to this much freed memory for reuse.

It changes how fast memory is handed out, never what any array holds. It acts only where the C
library is glibc (Linux); elsewhere it does nothing. NPNET_KEEP_MEMORY=0 turns it off.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)

_applied: bool | None = None  # None: not tried yet; then whether the settings took


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (see above), once per process.
    Returns whether the settings are in effect: False without glibc or with NPNET_KEEP_MEMORY
    set to 0, false, no or off."""
    global _applied
    if _applied is None:
        _applied = _enabled() and _set_malloc_options()
    return _applied


def _enabled() -> bool:
    setting = os.environ.get("NPNET_KEEP_MEMORY", "1").strip().lower()
    return setting not in ("0", "false", "no", "off")


def _set_malloc_options() -> bool:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt differ or lack it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, so that setting the trim
    # threshold (which freezes glibc's dynamic thresholds) never leaves the 128 KiB default
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
