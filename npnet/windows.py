"""Sliding windows: the shared machinery of convolution and pooling.

Both layers look at every (kh, kw) window of a padded input, moved by (sh, sw):

    x (N, C, H, W) --pad--> x_padded (N, C, H + 2 ph, W + 2 pw)
    windows[n, c, i, j, a, b] = x_padded[n, c, i*sh + a, j*sw + b]      (N, C, Ho, Wo, kh, kw)
    Ho = (H + 2 ph - kh) // sh + 1,   Wo = (W + 2 pw - kw) // sw + 1

``im2col`` builds that array as a strided *view* (no copy). Its adjoint, ``col2im``, sends a
gradient with respect to the windows back to the input: each input pixel receives the sum
over all windows that contain it. It loops over the kh * kw kernel offsets (a, b), and for
each one adds a whole (N, C, Ho, Wo) slab with one strided slice assignment — no Python loop
over pixels, and no ``np.add.at``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def pair(value, name: str, owner: str, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a pair into (height, width), checking both are integers >= minimum."""
    values = (value, value) if np.isscalar(value) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   for v in values):
        raise TypeError(f"{owner} expects {name} as an int or a pair of ints; got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{owner} expects {name} >= {minimum}; got {value!r}")
    return int(values[0]), int(values[1])


def output_size(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """(H, W) -> (Ho, Wo), the number of window positions along each axis:
    Ho = (H + 2 ph - kh) // sh + 1, likewise Wo."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of (N, C, H, W) by (ph, pw) on each side (no copy if zero)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def im2col(x_padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """All (kh, kw) windows of x_padded (N, C, Hp, Wp) -> view (N, C, Ho, Wo, kh, kw)."""
    windows = sliding_window_view(x_padded, kernel, axis=(2, 3))
    return windows[:, :, ::stride[0], ::stride[1]]


def col2im(grad_windows: np.ndarray, padded_shape: tuple, stride: tuple[int, int],
           padding: tuple[int, int]) -> np.ndarray:
    """Adjoint of im2col: grad_windows (N, C, Ho, Wo, kh, kw) -> grad_x (N, C, H, W).

    grad_x_padded[n, c, i*sh + a, j*sw + b] += grad_windows[n, c, i, j, a, b]
    for every window (i, j) and kernel offset (a, b); then the padding is cut off.
    """
    N, C, Ho, Wo, kh, kw = grad_windows.shape
    sh, sw = stride
    grad_x_padded = np.zeros(padded_shape, dtype=grad_windows.dtype)
    for a in range(kh):
        for b in range(kw):
            # rows a, a + sh, ..., a + sh (Ho - 1); likewise columns
            grad_x_padded[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw] += grad_windows[..., a, b]
    ph, pw = padding
    return grad_x_padded[:, :, ph:padded_shape[2] - ph, pw:padded_shape[3] - pw]


def check_fits(owner: str, shape: tuple, kernel: tuple, padding: tuple) -> None:
    """Raise if the padded input is smaller than the kernel (no window would fit)."""
    H, W = shape[2] + 2 * padding[0], shape[3] + 2 * padding[1]
    if H < kernel[0] or W < kernel[1]:
        raise ValueError(
            f"{owner} needs an input at least as large as its kernel {kernel} (after padding "
            f"{padding}); got {shape[2]}x{shape[3]} (input shape {shape})"
        )
