"""Pooling: average or maximum over each (kh, kw) window, channel by channel.

Shapes: x (N, C, H, W) -> y (N, C, Ho, Wo), Ho = (H + 2 ph - kh) // sh + 1 (likewise Wo).
``stride`` defaults to ``kernel_size`` (non-overlapping windows), as in PyTorch; the seed's
``AvgPool2d(kernel_size=5)`` relies on it.

Average pooling (padding counts as zeros, PyTorch's ``count_include_pad=True``):

    y[n, c, i, j] = 1/(kh kw) sum_{a, b} x_padded[n, c, i*sh + a, j*sw + b]
    dL/dx_padded[n, c, i*sh + a, j*sw + b] += dL/dy[n, c, i, j] / (kh kw)

Max pooling sends each output's gradient to the position that won (the first, on ties):

    y[n, c, i, j] = max_{a, b} x_padded[n, c, i*sh + a, j*sw + b]
    dL/dx_padded[n, c, i*sh + a*, j*sw + b*] += dL/dy[n, c, i, j]

Adaptive average pooling (``AdaptiveAvgPool2d(output_size)``) chooses the windows from the
output size instead: output row i averages input rows floor(i H / Ho) .. ceil((i+1) H / Ho) - 1
(likewise columns), PyTorch's rule. Those means are two matrix products, y = A_h x A_w^T per
(n, c), so the backward is the transposes: dL/dx = A_h^T dL/dy A_w. With output_size 1 this
is global average pooling, y = the mean over (H, W) and dL/dx = dL/dy / (H W) everywhere.

Derivation in docs/backprop.md, section "Pooling".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .module import Module
from .windows import check_fits, col2im, im2col, output_size, pad, pair


class AvgPool2dCache(NamedTuple):
    """What ``avg_pool2d_backward`` needs: only shapes, since every share is 1/(kh kw)."""

    x_shape: tuple  # (N, C, H, W), to size dL/dx
    kernel_size: tuple
    stride: tuple
    padding: tuple


class MaxPool2dCache(NamedTuple):
    """What ``max_pool2d_backward`` needs: which position of each window won."""

    winner: np.ndarray  # (N, C, Ho, Wo), a flat index into each (kh, kw) window
    x_shape: tuple
    kernel_size: tuple
    stride: tuple
    padding: tuple


def _padded_shape(x_shape: tuple, padding: tuple) -> tuple:
    return (*x_shape[:2], x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1])


def avg_pool2d_forward(x: np.ndarray, kernel_size: tuple, stride: tuple, padding: tuple):
    """x (N, C, H, W) -> (y (N, C, Ho, Wo), cache): the mean of each window."""
    windows = im2col(pad(x, padding), kernel_size, stride)  # (N, C, Ho, Wo, kh, kw), a view
    y = windows.mean(axis=(4, 5))
    return y, AvgPool2dCache(x.shape, kernel_size, stride, padding)


def avg_pool2d_backward(grad_out: np.ndarray, cache: AvgPool2dCache) -> np.ndarray:
    """grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    x_shape, (kh, kw), stride, padding = cache
    # every position of a window gets an equal share 1/(kh kw) of the window's gradient
    share = (grad_out / (kh * kw)).astype(grad_out.dtype, copy=False)
    grad_windows = np.broadcast_to(share[..., None, None], (*grad_out.shape, kh, kw))
    return col2im(grad_windows, _padded_shape(x_shape, padding), stride, padding)


def max_pool2d_forward(x: np.ndarray, kernel_size: tuple, stride: tuple, padding: tuple):
    """x (N, C, H, W) -> (y (N, C, Ho, Wo), cache): the maximum of each window (padding
    counts as -inf, so it never wins)."""
    windows = im2col(pad(x, padding, -np.inf), kernel_size, stride)
    N, C, Ho, Wo, kh, kw = windows.shape
    flat = windows.reshape(N, C, Ho, Wo, kh * kw)  # a copy: windows overlap or skip
    winner = flat.argmax(axis=4)  # first maximum on ties, as PyTorch
    y = np.take_along_axis(flat, winner[..., None], axis=4)[..., 0]
    return y, MaxPool2dCache(winner, x.shape, kernel_size, stride, padding)


def max_pool2d_backward(grad_out: np.ndarray, cache: MaxPool2dCache) -> np.ndarray:
    """grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W): each window's gradient goes to its
    winner."""
    winner, x_shape, (kh, kw), stride, padding = cache
    # one-hot over the window: the whole gradient goes to the winning position
    is_winner = winner[..., None] == np.arange(kh * kw)
    grad_windows = (grad_out[..., None] * is_winner).reshape(*grad_out.shape, kh, kw)
    return col2im(grad_windows, _padded_shape(x_shape, padding), stride, padding)


class _Pool2d(Module):
    """Shared arguments and checks of AvgPool2d and MaxPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        owner = f"{type(self).__name__}(kernel_size={kernel_size})"
        self.kernel_size = pair(kernel_size, "kernel_size", owner)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", owner)
        self.padding = pair(padding, "padding", owner, minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            # PyTorch's rule: otherwise a window could lie entirely in the padding
            raise ValueError(f"{owner} expects padding at most half the kernel size; "
                             f"got padding={padding}")

    def extra_repr(self) -> str:
        def show(value):
            return value[0] if value[0] == value[1] else value
        text = f"kernel_size={show(self.kernel_size)}, stride={show(self.stride)}"
        if self.padding != (0, 0):
            text += f", padding={show(self.padding)}"
        return text

    def checked_input(self, x) -> np.ndarray:
        """x (N, C, H, W) as an ndarray, checked to hold at least one window."""
        x = self.check_input(x, 4, "(N, C, H, W)")
        check_fits(self.short_name(), x.shape, self.kernel_size, self.padding)
        return x

    def _output_shape(self, cache) -> tuple:
        N, C, H, W = cache.x_shape
        return (N, C, *output_size((H, W), self.kernel_size, self.stride, self.padding))


class AvgPool2d(_Pool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``: mean over each window."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        y, self.cache = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, self._output_shape(cache))
        return avg_pool2d_backward(grad_out, cache)


class MaxPool2d(_Pool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: maximum over each window
    (padding counts as -inf, so it never wins)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        y, self.cache = max_pool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, self._output_shape(cache))
        return max_pool2d_backward(grad_out, cache)


# ------------------------------------------------------------------ adaptive average pooling
class AdaptiveAvgPool2dCache(NamedTuple):
    """What ``adaptive_avg_pool2d_backward`` needs: only shapes, from which the averaging
    matrices are built again (for global pooling, output_size (1, 1): the input shape)."""

    x_shape: tuple      # (N, C, H, W), to size dL/dx
    output_size: tuple  # (Ho, Wo)


def averaging_matrix(in_size: int, out_size: int, dtype) -> np.ndarray:
    """A (out_size, in_size): row i averages the inputs of output i's window,

        A[i, h] = 1 / (end_i - start_i)  for start_i <= h < end_i, else 0,
        start_i = floor(i * in_size / out_size),  end_i = ceil((i + 1) * in_size / out_size)

    (PyTorch's windows). When out_size divides in_size, the windows are the tiles of
    AvgPool2d(kernel_size=stride=in_size // out_size); for out_size 1, A is one row of
    1 / in_size: the mean."""
    matrix = np.zeros((out_size, in_size), dtype=dtype)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-((i + 1) * in_size) // out_size)  # ceil, in integers
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool2d_forward(x: np.ndarray, output_size: tuple):
    """x (N, C, H, W) -> (y (N, C, Ho, Wo), cache): the mean of each adaptive window,

        y[n, c] = A_h @ x[n, c] @ A_w^T      (Ho, H) @ (H, W) @ (W, Wo) -> (Ho, Wo)
    """
    (H, W), (Ho, Wo) = x.shape[2:], output_size
    rows, cols = averaging_matrix(H, Ho, x.dtype), averaging_matrix(W, Wo, x.dtype)
    y = rows @ x @ cols.T  # matmul broadcasts over (N, C)
    return y, AdaptiveAvgPool2dCache(x.shape, output_size)


def adaptive_avg_pool2d_backward(grad_out: np.ndarray,
                                 cache: AdaptiveAvgPool2dCache) -> np.ndarray:
    """grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W): a product of matrices goes backward
    through their transposes,

        dL/dx[n, c] = A_h^T @ dL/dy[n, c] @ A_w      (H, Ho) @ (Ho, Wo) @ (Wo, W) -> (H, W)

    so each input pixel gets 1 / (window size) of the gradient of every window it lies in.
    Global pooling: A_h = [1/H ... 1/H], A_w = [1/W ... 1/W], and every pixel of (n, c) gets
    dL/dy[n, c, 0, 0] / (H W)."""
    (H, W), (Ho, Wo) = cache.x_shape[2:], cache.output_size
    rows = averaging_matrix(H, Ho, grad_out.dtype)
    cols = averaging_matrix(W, Wo, grad_out.dtype)
    return rows.T @ grad_out @ cols


class AdaptiveAvgPool2d(Module):
    """``AdaptiveAvgPool2d(output_size)``: average pooling to a fixed output size, whatever the
    input size. ``output_size`` is an int or a (Ho, Wo) pair; ``AdaptiveAvgPool2d(1)`` is the
    global average pooling that ends ResNet and DenseNet. Input (N, C, H, W) -> output
    (N, C, Ho, Wo). Any sizes: where Ho does not divide H, window sizes may differ by one and
    neighbouring windows may overlap, as in PyTorch (see ``averaging_matrix``).
    """

    def __init__(self, output_size):
        super().__init__()
        owner = f"AdaptiveAvgPool2d({output_size!r})"
        self.output_size = pair(output_size, "output_size", owner)

    def extra_repr(self) -> str:
        Ho, Wo = self.output_size
        return f"output_size={Ho if Ho == Wo else self.output_size}"

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to be (N, C, H, W) and float."""
        return self.check_input(x, 4, "(N, C, H, W)")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        y, self.cache = adaptive_avg_pool2d_forward(x, self.output_size)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, (*cache.x_shape[:2], *cache.output_size))
        return adaptive_avg_pool2d_backward(grad_out, cache)
