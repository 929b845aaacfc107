"""The batch-last layout: the same numbers as (N, C, H, W), stored as (C, H, W, N).

The textbook layers (npnet/windows.py) keep the batch first. The fast backend moves it last,
once per pass, so that the N values of one pixel are contiguous:

    x (N, C, H, W) -> to_batch_last -> (C, H, W, N)          x (N, F) -> (F, N)

Then each kernel offset (a, b) of a convolution or pooling window sees a slab
x_padded[:, a:a + Ho, b:b + Wo, :] that is Ho runs of Wo * N contiguous values, and the windows
become a matrix with one contiguous row per (c, a, b):

    cols[c, a, b, i, j, n] = x_padded[c, i*sh + a, j*sw + b, n]      (C, kh, kw, Ho, Wo, N)

``im2col`` copies that matrix (into a reusable buffer), ``windows_by_rows`` a few output rows at
a time, and ``col2im`` sums a gradient back with the textbook's kernel-offset loop.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def to_batch_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C, H, W, N), or (N, F) -> (F, N): a contiguous copy."""
    return np.ascontiguousarray(np.moveaxis(x, 0, -1))


def from_batch_last(x: np.ndarray) -> np.ndarray:
    """(C, H, W, N) -> (N, C, H, W), or (F, N) -> (N, F): a view (no copy)."""
    return np.moveaxis(x, -1, 0)


def pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """Pad axes 1 and 2 (H and W) of (C, H, W, N) by (ph, pw) on each side (no copy if zero)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=value)


def window_slab(x_padded: np.ndarray, a: int, b: int, out_size: tuple[int, int],
                stride: tuple[int, int]) -> np.ndarray:
    """x_padded[:, i*sh + a, j*sw + b, :] for all (i, j): the view (C, Ho, Wo, N) that kernel
    offset (a, b) sees."""
    (Ho, Wo), (sh, sw) = out_size, stride
    return x_padded[:, a:a + sh * (Ho - 1) + 1:sh, b:b + sw * (Wo - 1) + 1:sw, :]


def window_view(x_padded: np.ndarray, kernel: tuple[int, int],
                stride: tuple[int, int]) -> np.ndarray:
    """The windows of x_padded (C, Hp, Wp, N) as a view (C, kh, kw, Ho, Wo, N), no copy:
    view[c, a, b, i, j, n] = x_padded[c, i*sh + a, j*sw + b, n]. The same windows as
    ``im2col``, ordered so that for each (c, a, b) the runs over n are contiguous."""
    windows = sliding_window_view(x_padded, kernel, axis=(1, 2))[:, ::stride[0], ::stride[1]]
    return windows.transpose(0, 4, 5, 1, 2, 3)  # (C, Ho, Wo, N, kh, kw) -> (C, kh, kw, ...)


def im2col(x_padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
           out: np.ndarray | None = None) -> np.ndarray:
    """Windows of x_padded (C, Hp, Wp, N) -> cols (C, kh, kw, Ho, Wo, N), a copy.

    ``out``, if given, is the array to write into (reused between steps: no new allocation).
    """
    windows = window_view(x_padded, kernel, stride)
    if out is None:
        return np.ascontiguousarray(windows)
    np.copyto(out, windows)
    return out


def windows_by_rows(x_padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                    block_bytes: int, rows_multiple: int = 1, last_row: int | None = None):
    """im2col a few output rows at a time: yields (i0, i1, cols) with cols
    (C, kh, kw, i1 - i0, Wo, N), the windows of output rows i0 .. i1-1, about ``block_bytes``
    each (at least ``rows_multiple`` rows, and a multiple of it), up to row ``last_row`` (all
    Ho rows if None).

    Every block is written into the same small buffer, which stays in the cache while the
    caller uses it; read a block before asking for the next.
    """
    windows = window_view(x_padded, kernel, stride)
    C, kh, kw, Ho, Wo, N = windows.shape
    Ho = Ho if last_row is None else last_row
    rows = block_bytes // (C * kh * kw * Wo * N * x_padded.itemsize)
    rows = min(Ho, max(rows_multiple, rows - rows % rows_multiple))
    buffer = np.empty((C, kh, kw, rows, Wo, N), dtype=x_padded.dtype)
    for i0 in range(0, Ho, rows):
        i1 = min(i0 + rows, Ho)
        cols = buffer[:, :, :, :i1 - i0]
        np.copyto(cols, windows[:, :, :, i0:i1])
        yield i0, i1, cols


def col2im(grad_cols: np.ndarray, padded_shape: tuple, stride: tuple[int, int],
           padding: tuple[int, int]) -> np.ndarray:
    """Adjoint of im2col: grad_cols (C, kh, kw, Ho, Wo, N) -> grad_x (C, H, W, N).

    grad_x_padded[c, i*sh + a, j*sw + b, n] += grad_cols[c, a, b, i, j, n], one slab per (a, b).
    """
    C, kh, kw, Ho, Wo, N = grad_cols.shape
    grad_x_padded = np.zeros(padded_shape, dtype=grad_cols.dtype)
    for a in range(kh):
        for b in range(kw):
            window_slab(grad_x_padded, a, b, (Ho, Wo), stride)[...] += grad_cols[:, a, b]
    ph, pw = padding
    return grad_x_padded[:, ph:padded_shape[1] - ph, pw:padded_shape[2] - pw, :]
