"""AvgPool2d on the batch-last layout: the sum over a window as a sum of kh * kw slabs.

Each kernel offset (a, b) sees a strided view x_padded[:, i*sh + a, j*sw + b, :] (C, Ho, Wo, N)
whose N values per pixel are contiguous (layout.window_slab):

    y     = 1/(kh kw) sum_{a, b} slab(a, b)
    dL/dx = col2im's offset loop over the same slabs; when the windows tile the input (stride =
            kernel, no padding, LeNet's AvgPool2d(2, 2)), each pixel simply gets its window's
            share, written once.

AdaptiveAvgPool2d: global pooling (output 1 x 1) is a mean over axes 1 and 2 (H, W), and its
backward writes dL/dy / (H W) to every pixel; an output size that divides the input is
AvgPool2d with kernel = stride = (H / Ho, W / Wo); any other size takes npnet/pool.py's
averaging matrices, contracted on the batch-last layout.
"""

from __future__ import annotations

import numpy as np

from ..pool import averaging_matrix
from ..windows import output_size
from .kernel import Kernel
from .layout import col2im, from_batch_last, pad, window_slab


def avg_pool2d_forward(x: np.ndarray, kernel_size: tuple, stride: tuple,
                       padding: tuple) -> np.ndarray:
    """x (C, H, W, N) -> y (C, Ho, Wo, N), the mean of each window."""
    kh, kw = kernel_size
    out_size = output_size(x.shape[1:3], kernel_size, stride, padding)
    x_padded = pad(x, padding)
    y = window_slab(x_padded, 0, 0, out_size, stride).copy()
    for a in range(kh):
        for b in range(kw):
            if (a, b) != (0, 0):
                y += window_slab(x_padded, a, b, out_size, stride)
    y *= y.dtype.type(1.0 / (kh * kw))
    return y


def windows_tile(x_shape: tuple, y_shape: tuple, kernel_size: tuple, stride: tuple,
                 padding: tuple) -> bool:
    """Whether every pixel of x (C, H, W, N) lies in exactly one window of y (C, Ho, Wo, N):
    stride = kernel, no padding, and the windows cover x (LeNet's AvgPool2d(2, 2))."""
    return (tuple(stride) == tuple(kernel_size) and tuple(padding) == (0, 0)
            and tuple(x_shape[1:3]) == (y_shape[1] * stride[0], y_shape[2] * stride[1]))


def avg_pool2d_backward(grad_out: np.ndarray, x_shape: tuple, kernel_size: tuple,
                        stride: tuple, padding: tuple) -> np.ndarray:
    """grad_out (C, Ho, Wo, N) -> grad_x (C, H, W, N): each window's gradient shared equally."""
    (kh, kw), (ph, pw) = kernel_size, padding
    share = grad_out * grad_out.dtype.type(1.0 / (kh * kw))
    C, Ho, Wo, N = grad_out.shape
    if windows_tile(x_shape, grad_out.shape, kernel_size, stride, padding):
        # every input pixel lies in exactly one window: it gets that window's share
        grad_x = np.empty(x_shape, dtype=share.dtype)
        for a in range(kh):
            for b in range(kw):
                window_slab(grad_x, a, b, (Ho, Wo), stride)[...] = share
        return grad_x
    grad_windows = np.broadcast_to(share[:, None, None], (C, kh, kw, Ho, Wo, N))
    padded_shape = (C, x_shape[1] + 2 * ph, x_shape[2] + 2 * pw, N)
    return col2im(grad_windows, padded_shape, stride, padding)


class AvgPool2dKernel(Kernel):
    """AvgPool2d: x (C, H, W, N) -> y (C, Ho, Wo, N)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        layer.checked_input(from_batch_last(x))
        self.cache = x.shape
        return avg_pool2d_forward(x, layer.kernel_size, layer.stride, layer.padding)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        x_shape = self.require_cache()
        return avg_pool2d_backward(grad_out, x_shape, layer.kernel_size, layer.stride,
                                   layer.padding)


def adaptive_tile(x_shape: tuple, out_size: tuple) -> tuple | None:
    """(H / Ho, W / Wo) for x (C, H, W, N) when Ho divides H and Wo divides W (the windows are
    AvgPool2d's tiles), else None."""
    H, W = x_shape[1:3]
    (Ho, Wo) = out_size
    return (H // Ho, W // Wo) if H % Ho == 0 and W % Wo == 0 else None


def adaptive_avg_pool2d_forward(x: np.ndarray, out_size: tuple) -> np.ndarray:
    """x (C, H, W, N) -> y (C, Ho, Wo, N), the mean of each adaptive window."""
    if out_size == (1, 1):
        return x.mean(axis=(1, 2), keepdims=True)
    tile = adaptive_tile(x.shape, out_size)
    if tile is not None:
        return avg_pool2d_forward(x, tile, tile, (0, 0))
    rows = averaging_matrix(x.shape[1], out_size[0], x.dtype)  # (Ho, H)
    cols = averaging_matrix(x.shape[2], out_size[1], x.dtype)  # (Wo, W)
    return np.einsum("ih,chwn,jw->cijn", rows, x, cols, optimize=True)


def adaptive_avg_pool2d_backward(grad_out: np.ndarray, x_shape: tuple) -> np.ndarray:
    """grad_out (C, Ho, Wo, N) -> grad_x (C, H, W, N)."""
    out_size = grad_out.shape[1:3]
    if out_size == (1, 1):
        # every pixel of channel c gets an equal share 1/(H W) of dL/dy[c, 0, 0, n]
        grad_x = np.empty(x_shape, dtype=grad_out.dtype)
        grad_x[...] = grad_out * grad_out.dtype.type(1.0 / (x_shape[1] * x_shape[2]))
        return grad_x
    tile = adaptive_tile(x_shape, out_size)
    if tile is not None:
        return avg_pool2d_backward(grad_out, x_shape, tile, tile, (0, 0))
    rows = averaging_matrix(x_shape[1], out_size[0], grad_out.dtype)
    cols = averaging_matrix(x_shape[2], out_size[1], grad_out.dtype)
    return np.einsum("ih,cijn,jw->chwn", rows, grad_out, cols, optimize=True)


class AdaptiveAvgPool2dKernel(Kernel):
    """AdaptiveAvgPool2d: x (C, H, W, N) -> y (C, Ho, Wo, N)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        layer.checked_input(from_batch_last(x))
        self.cache = x.shape
        return adaptive_avg_pool2d_forward(x, layer.output_size)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return adaptive_avg_pool2d_backward(grad_out, self.require_cache())
