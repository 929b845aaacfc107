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

Derivation in docs/backprop.md, section "Pooling".

Average pooling's fast path (batch last, (C, H, W, N), what ``Sequential`` runs) writes the
sum over the window as a sum of kh * kw slabs, one per kernel offset (a, b), each a strided
view of x_padded with the N values of a pixel contiguous; its backward is col2im's offset loop.
"""

from __future__ import annotations

import numpy as np

from .module import BatchLastCache, Module
from .windows import (check_fits, col2im, col2im_batch_last, from_batch_last, im2col, pad,
                      output_size, pad_batch_last, pair, window_slab)


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

    def _windows(self, x: np.ndarray, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
        """The checked input x (N, C, H, W) and its windows (N, C, Ho, Wo, kh, kw)."""
        x = self._check_input(x, 4, "(N, C, H, W)")
        check_fits(self.short_name(), x.shape, self.kernel_size, self.padding)
        return x, im2col(pad(x, self.padding, pad_value), self.kernel_size, self.stride)

    def _padded_shape(self, x_shape: tuple) -> tuple:
        return (*x_shape[:2], x_shape[2] + 2 * self.padding[0], x_shape[3] + 2 * self.padding[1])


class AvgPool2d(_Pool2d):
    """``AvgPool2d(kernel_size, stride=None, padding=0)``: mean over each window."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, windows = self._windows(x, 0.0)
        y = windows.mean(axis=(4, 5))
        self.cache = (x.shape, y.shape)  # the average's gradient needs only the shapes
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape, y_shape = self._require_cache()
        grad_out = self._check_grad(grad_out, y_shape)
        kh, kw = self.kernel_size
        # every position of a window gets an equal share 1/(kh kw) of the window's gradient
        share = (grad_out / (kh * kw)).astype(grad_out.dtype, copy=False)
        grad_windows = np.broadcast_to(share[..., None, None], (*y_shape, kh, kw))
        return col2im(grad_windows, self._padded_shape(x_shape), self.stride, self.padding)

    # -------------------------------------------- the fast path, batch last (C, H, W, N)
    supports_batch_last = True

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        x_first = self._check_input(from_batch_last(x), 4, "(N, C, H, W)")
        check_fits(self.short_name(), x_first.shape, self.kernel_size, self.padding)
        kh, kw = self.kernel_size
        out_size = output_size(x.shape[1:3], self.kernel_size, self.stride, self.padding)
        x_padded = pad_batch_last(x, self.padding)
        # y = 1/(kh kw) sum_{a, b} x_padded[:, i*sh + a, j*sw + b, :]
        y = window_slab(x_padded, 0, 0, out_size, self.stride).copy()
        for a in range(kh):
            for b in range(kw):
                if (a, b) != (0, 0):
                    y += window_slab(x_padded, a, b, out_size, self.stride)
        y *= y.dtype.type(1.0 / (kh * kw))
        self.cache = BatchLastCache((x.shape, y.shape))
        return y

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape, y_shape = self._require_cache(batch_last=True)
        grad_out = self._check_grad(grad_out, y_shape, batch_last=True)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        share = grad_out * grad_out.dtype.type(1.0 / (kh * kw))
        C, Ho, Wo, N = y_shape
        if self._windows_tile(x_shape[1:3], (Ho, Wo)):
            # every input pixel lies in exactly one window: it gets that window's share
            grad_x = np.empty(x_shape, dtype=share.dtype)
            for a in range(kh):
                for b in range(kw):
                    window_slab(grad_x, a, b, (Ho, Wo), self.stride)[...] = share
            return grad_x
        grad_windows = np.broadcast_to(share[:, None, None], (C, kh, kw, Ho, Wo, N))
        padded_shape = (C, x_shape[1] + 2 * ph, x_shape[2] + 2 * pw, N)
        return col2im_batch_last(grad_windows, padded_shape, self.stride, self.padding)

    def _windows_tile(self, in_size: tuple, out_size: tuple) -> bool:
        """Whether the windows cover the input exactly once (stride = kernel, no padding, and
        the size a multiple of the kernel): LeNet's AvgPool2d(2, 2) on 24x24 and 8x8."""
        return (self.stride == self.kernel_size and self.padding == (0, 0)
                and in_size == (out_size[0] * self.stride[0], out_size[1] * self.stride[1]))


class MaxPool2d(_Pool2d):
    """``MaxPool2d(kernel_size, stride=None, padding=0)``: maximum over each window
    (padding counts as -inf, so it never wins)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x, windows = self._windows(x, -np.inf)
        N, C, Ho, Wo, kh, kw = windows.shape
        flat = windows.reshape(N, C, Ho, Wo, kh * kw)  # a copy: windows overlap or skip
        winner = flat.argmax(axis=4)  # first maximum on ties, as PyTorch
        y = np.take_along_axis(flat, winner[..., None], axis=4)[..., 0]
        self.cache = (winner, x.shape, y.shape)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        winner, x_shape, y_shape = self._require_cache()
        grad_out = self._check_grad(grad_out, y_shape)
        kh, kw = self.kernel_size
        # one-hot over the window: the whole gradient goes to the winning position
        is_winner = winner[..., None] == np.arange(kh * kw)
        grad_windows = (grad_out[..., None] * is_winner).reshape(*y_shape, kh, kw)
        return col2im(grad_windows, self._padded_shape(x_shape), self.stride, self.padding)

