"""2-D convolution (cross-correlation, as in every deep-learning library).

    y[n, o, i, j] = b[o] + sum_{c, a, b'} W[o, c, a, b'] * x_padded[n, c, i*sh + a, j*sw + b']

Shapes: x (N, C, H, W), W (O, C, kh, kw), b (O,), y (N, O, Ho, Wo) with
Ho = (H + 2 ph - kh) // sh + 1 and Wo = (W + 2 pw - kw) // sw + 1.

With the windows of x as an array ``cols`` (N, C, Ho, Wo, kh, kw) (see windows.py), the
convolution is one matrix product that contracts (c, a, b'):

    y = tensordot(cols, W)          # nijCab,oCab -> nijo -> noij

and the backward pass is two more — derivation in docs/backprop.md, section "Conv2d":

    dL/dW = tensordot(dL/dy, cols)  # noij,nijCab -> oCab
    dL/db = sum over n, i, j of dL/dy
    dL/dcols = tensordot(dL/dy, W)  # noij,oCab -> nijCab, then col2im sums the
                                    # overlapping windows back onto dL/dx

The fast path (what ``Sequential`` runs): the same three products, on the batch-last layout
x (C, H, W, N) of windows.py. ``cols`` is then a matrix with one row per (c, a, b) and one
column per (i, j, n), and each product is a plain matrix product written as the math reads:

    cols    = im2col(x)             # (C kh kw, Ho Wo N), a copy into a reused buffer
    y       = W cols + b            # (O, C kh kw) @ (C kh kw, Ho Wo N) -> (O, Ho, Wo, N)
    dL/dW   = dL/dy cols^T          # (O, Ho Wo N) @ (Ho Wo N, C kh kw)
    dL/db   = sum over columns of dL/dy
    dL/dcols = W^T dL/dy            # then col2im -> dL/dx (C, H, W, N)

When no dL/dx will be asked for (evaluation mode, or a first layer whose input is data),
the fast path keeps x instead of cols: ``conv2d_forward_blocked`` builds the windows a few
output rows at a time and multiplies each block while it is still in the cache, and
``conv2d_weight_grad_blocked`` rebuilds them the same way for dL/dW. That saves writing and
rereading a 14.7 MB cols for LeNet's first layer at batch 256.

``conv2d_forward`` / ``conv2d_backward`` above are the reference the fast path is tested
against (tests/test_fast_paths.py).
"""

from __future__ import annotations

import math

import numpy as np

from . import init
from .module import BatchLastCache, Module, Parameter
from .windows import (check_fits, col2im, col2im_batch_last, from_batch_last, im2col,
                      im2col_batch_last, output_size, pad, pad_batch_last, pair,
                      windows_by_rows)


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                   stride: tuple[int, int], padding: tuple[int, int]):
    """x (N, C, H, W), weight (O, C, kh, kw), bias (O,) -> (y (N, O, Ho, Wo), cols).

    cols (N, C, Ho, Wo, kh, kw) is a view of the padded input, kept for the backward pass.
    """
    x_padded = pad(x, padding)
    cols = im2col(x_padded, weight.shape[2:], stride)
    # nCijab,oCab -> nijo; then move o next to n: (N, O, Ho, Wo)
    y = np.tensordot(cols, weight, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    if bias is not None:
        y = y + bias[:, None, None]
    return np.ascontiguousarray(y), cols


def conv2d_backward(grad_out: np.ndarray, cols: np.ndarray, weight: np.ndarray,
                    x_shape: tuple, stride: tuple[int, int], padding: tuple[int, int]):
    """grad_out (N, O, Ho, Wo) -> (grad_x (N, C, H, W), grad_weight (O, C, kh, kw),
    grad_bias (O,))."""
    grad_weight = np.tensordot(grad_out, cols, axes=([0, 2, 3], [0, 2, 3]))  # oCab
    grad_bias = grad_out.sum(axis=(0, 2, 3))
    grad_cols = np.tensordot(grad_out, weight, axes=([1], [0]))  # nijCab
    grad_cols = grad_cols.transpose(0, 3, 1, 2, 4, 5)  # nCijab, the layout of cols
    padded_shape = (x_shape[0], x_shape[1],
                    x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1])
    grad_x = col2im(grad_cols, padded_shape, stride, padding)
    return grad_x, grad_weight, grad_bias


def matmul_blocked(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
                   block: int = 4096) -> np.ndarray:
    """a (P, K) @ b (K, M) -> (P, M), computed 4096 columns of b at a time.

    The same numbers as ``a @ b``. A block of b fits in the L2 cache, and OpenBLAS is about
    twice as fast on a thin product such as conv1's (6, 25) @ (25, 147456) done that way.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for start in range(0, b.shape[1], block):
        np.matmul(a, b[:, start:start + block], out=out[:, start:start + block])
    return out


def matmul_transposed_blocked(a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
    """a (P, M) @ b (K, M)^T -> (P, K), summed over blocks of 4096 columns (see
    ``matmul_blocked``): sum_m a[p, m] b[k, m] is the sum of the same sums over the blocks.

    Each block is computed as (b a^T)^T, the orientation OpenBLAS runs fastest here."""
    out = np.zeros((b.shape[0], a.shape[0]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[1], block):
        out += b[:, start:start + block] @ a[:, start:start + block].T
    return out.T


def conv2d_forward_batch_last(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                              stride: tuple[int, int], padding: tuple[int, int],
                              cols_buffer: np.ndarray | None = None):
    """x (C, H, W, N), weight (O, C, kh, kw), bias (O,) -> (y (O, Ho, Wo, N), cols).

    cols (C, kh, kw, Ho, Wo, N) is written into ``cols_buffer`` when one of that shape is given.
    """
    O = weight.shape[0]
    cols = im2col_batch_last(pad_batch_last(x, padding), weight.shape[2:], stride, cols_buffer)
    C, kh, kw, Ho, Wo, N = cols.shape
    y = matmul_blocked(weight.reshape(O, C * kh * kw),
                       cols.reshape(C * kh * kw, Ho * Wo * N))  # oK,KM -> oM
    if bias is not None:
        y += bias[:, None]
    return y.reshape(O, Ho, Wo, N), cols


BLOCK_BYTES = 512 * 1024  # a block of windows (see windows_by_rows) that stays in L2


def conv2d_forward_blocked(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                           stride: tuple[int, int], padding: tuple[int, int],
                           block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """The same y (O, Ho, Wo, N) as ``conv2d_forward_batch_last``, a few output rows at a
    time: each block of windows is multiplied while it is still in the cache, and no im2col
    matrix is kept (it is 14.7 MB for LeNet's first layer at batch 256)."""
    O, K = weight.shape[0], math.prod(weight.shape[1:])
    Ho, Wo = output_size(x.shape[1:3], weight.shape[2:], stride, padding)
    y = np.empty((O, Ho, Wo, x.shape[3]), dtype=np.result_type(x, weight))
    for i0, i1, cols in windows_by_rows(pad_batch_last(x, padding), weight.shape[2:], stride,
                                        block_bytes):
        np.matmul(weight.reshape(O, K), cols.reshape(K, -1),
                  out=y[:, i0:i1].reshape(O, -1))  # oK,KM -> oM for these rows
    if bias is not None:
        y += bias[:, None, None, None]
    return y


def conv2d_weight_grad_blocked(grad_out: np.ndarray, x: np.ndarray, weight_shape: tuple,
                               stride: tuple[int, int], padding: tuple[int, int],
                               block_bytes: int = BLOCK_BYTES):
    """grad_out (O, Ho, Wo, N), x (C, H, W, N) -> (grad_weight, grad_bias): the parameter
    gradients of ``conv2d_backward_batch_last``, with the windows rebuilt from x a few output
    rows at a time instead of kept from the forward pass.

    dL/dW = sum over the blocks of dL/dy[:, rows] cols(rows)^T: a sum over columns, split.
    """
    O, K = weight_shape[0], math.prod(weight_shape[1:])
    grad_weight_t = np.zeros((K, O), dtype=grad_out.dtype)
    for i0, i1, cols in windows_by_rows(pad_batch_last(x, padding), weight_shape[2:], stride,
                                        block_bytes):
        # KM,Mo -> Ko, the orientation OpenBLAS runs fastest here
        grad_weight_t += cols.reshape(K, -1) @ grad_out[:, i0:i1].reshape(O, -1).T
    grad_bias = np.einsum("oijn->o", grad_out)
    return grad_weight_t.T.reshape(weight_shape), grad_bias


def conv2d_backward_batch_last(grad_out: np.ndarray, cols: np.ndarray, weight: np.ndarray,
                               x_shape: tuple, stride: tuple[int, int],
                               padding: tuple[int, int], input_grad: bool = True):
    """grad_out (O, Ho, Wo, N) -> (grad_x (C, H, W, N) or None, grad_weight, grad_bias).

    With ``input_grad=False`` the input gradient (two thirds of the work) is skipped: the first
    layer of a network does not need it.
    """
    O = weight.shape[0]
    C, kh, kw, Ho, Wo, N = cols.shape
    grad_out = grad_out.reshape(O, Ho * Wo * N)
    cols = cols.reshape(C * kh * kw, Ho * Wo * N)
    grad_weight = matmul_transposed_blocked(grad_out, cols).reshape(weight.shape)  # oM,MK -> oK
    grad_bias = np.einsum("om->o", grad_out)  # sum over columns (faster than .sum here)
    if not input_grad:
        return None, grad_weight, grad_bias
    grad_cols = weight.reshape(O, C * kh * kw).T @ grad_out  # Ko,oM -> KM
    padded_shape = (C, x_shape[1] + 2 * padding[0], x_shape[2] + 2 * padding[1], N)
    grad_x = col2im_batch_last(grad_cols.reshape(C, kh, kw, Ho, Wo, N), padded_shape, stride,
                               padding)
    return grad_x, grad_weight, grad_bias


class Conv2d(Module):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``.

    kernel_size, stride and padding are an int or a (height, width) pair.
    Parameters: ``weight`` (out_channels, in_channels, kh, kw) and ``bias`` (out_channels,),
    initialized U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_channels * kh * kw, as in
    PyTorch. Input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True):
        super().__init__()
        owner = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"{owner} expects positive in_channels and out_channels")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", owner)
        self.stride = pair(stride, "stride", owner)
        self.padding = pair(padding, "padding", owner, minimum=0)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(
            init.default_uniform((out_channels, in_channels, *self.kernel_size), fan_in))
        self.bias = Parameter(init.default_uniform((out_channels,), fan_in)) if bias else None

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def short_name(self) -> str:
        kernel = self.kernel_size[0] if self.kernel_size[0] == self.kernel_size[1] \
            else self.kernel_size
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={kernel})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check_input(x, 4, "(N, C, H, W)", channels=self.in_channels)
        check_fits(self.short_name(), x.shape, self.kernel_size, self.padding)
        bias = None if self.bias is None else self.bias.data
        y, cols = conv2d_forward(x, self.weight.data, bias, self.stride, self.padding)
        self.cache = (cols, x.shape, y.shape)  # cols is a view of x: no extra memory
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        cols, x_shape, y_shape = self._require_cache()
        grad_out = self._check_grad(grad_out, y_shape)
        grad_x, grad_weight, grad_bias = conv2d_backward(
            grad_out, cols, self.weight.data, x_shape, self.stride, self.padding)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_x if self.requires_input_grad else None

    # ------------------------------------------------- the fast path, batch last (C, H, W, N)
    supports_batch_last = True

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        self._check_input(from_batch_last(x), 4, "(N, C, H, W)", channels=self.in_channels)
        check_fits(self.short_name(), from_batch_last(x).shape, self.kernel_size, self.padding)
        bias = None if self.bias is None else self.bias.data
        if not (self.training and self.requires_input_grad):
            # Only dL/dW (first layer) or nothing (evaluation) will be asked for: work a few
            # output rows at a time and keep x, not the windows. Measured: training step
            # 4-10% faster, evaluation 25-40%; doing the same for dL/dx was slower.
            y = conv2d_forward_blocked(x, self.weight.data, bias, self.stride, self.padding)
            self.cache = BatchLastCache((None, x.shape, y.shape, x))
            return y
        y, cols = conv2d_forward_batch_last(x, self.weight.data, bias, self.stride,
                                            self.padding, self._cols_buffer(x))
        self.cache = BatchLastCache((cols, x.shape, y.shape, None))  # cols holds x's values
        return y

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray | None:
        cols, x_shape, y_shape, x = self._require_cache(batch_last=True)
        grad_out = self._check_grad(grad_out, y_shape, batch_last=True)
        if cols is None and not self.requires_input_grad:
            grad_x = None
            grad_weight, grad_bias = conv2d_weight_grad_blocked(
                grad_out, x, self.weight.shape, self.stride, self.padding)
        else:
            if cols is None:  # the forward kept x only, but dL/dx is wanted now
                cols = im2col_batch_last(pad_batch_last(x, self.padding), self.kernel_size,
                                         self.stride, self._cols_buffer(x))
            grad_x, grad_weight, grad_bias = conv2d_backward_batch_last(
                grad_out, cols, self.weight.data, x_shape, self.stride, self.padding,
                input_grad=self.requires_input_grad)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_x

    def _cols_buffer(self, x: np.ndarray) -> np.ndarray:
        """The (C, kh, kw, Ho, Wo, N) array im2col writes into, reused while the input shape
        and dtype stay the same (a fresh 15 MB array every step costs page faults)."""
        C, H, W, N = x.shape
        Ho, Wo = output_size((H, W), self.kernel_size, self.stride, self.padding)
        shape = (C, *self.kernel_size, Ho, Wo, N)
        buffer = getattr(self, "_cols", None)
        if buffer is None or buffer.shape != shape or buffer.dtype != x.dtype:
            buffer = self._cols = np.empty(shape, dtype=x.dtype)
        return buffer
