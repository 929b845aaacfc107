"""Conv2d on the batch-last layout: the textbook's three products as plain matrix products.

With x (C, H, W, N) (layout.py), ``cols`` is a matrix with one row per (c, a, b) and one column
per (i, j, n), and each product of npnet/conv.py is a plain matrix product written as the math
reads:

    cols     = im2col(x)            # (C kh kw, Ho Wo N), a copy into a reused buffer
    y        = W cols + b           # (O, C kh kw) @ (C kh kw, Ho Wo N) -> (O, Ho, Wo, N)
    dL/dW    = dL/dy cols^T         # (O, Ho Wo N) @ (Ho Wo N, C kh kw)
    dL/db    = sum over columns of dL/dy
    dL/dcols = W^T dL/dy            # then col2im -> dL/dx (C, H, W, N)

When no dL/dx will be asked for (evaluation mode, or a first layer whose input is the images)
and the product is thin (few outputs over a short K = C kh kw, e.g. LeNet's first layer: 6
outputs, K = 25; see ``thin``), the kernel keeps x instead of cols: ``conv2d_forward_blocked`` builds the
windows a few output rows at a time and multiplies each block while it is still in the cache,
and ``conv2d_weight_grad_blocked`` rebuilds them the same way for dL/dW. That saves writing
and rereading a 14.7 MB cols for LeNet's first layer at batch 256. For a longer K (a ResNet's
3x3 convolutions over 16 or more channels) one product over the whole cols is faster.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..windows import output_size
from .kernel import Kernel
from .layout import col2im, from_batch_last, im2col, pad, windows_by_rows

BLOCK_BYTES = 512 * 1024  # a block of windows (see windows_by_rows) that stays in L2
# Blocking a product by columns pays for a thin one only, few outputs (O <= 16) over a short
# inner dimension (K <= 32): LeNet's conv1 (O = 6, K = 25) and a ResNet's stem (16, 9) run 4-6x
# faster blocked; LeNet's conv2 (K = 150), a ResNet's 3x3 convolutions (K = 144, 288) and its
# 1x1 shortcuts (O = 32, 64) 3-12x slower (benchmarks/README.md, phase 5)
BLOCKED_MAX_K, BLOCKED_MAX_O = 32, 16


def thin(outputs: int, inner: int) -> bool:
    """Whether a product with ``outputs`` rows and inner dimension ``inner`` runs faster
    blocked by columns (see BLOCKED_MAX_K)."""
    return outputs <= BLOCKED_MAX_O and inner <= BLOCKED_MAX_K
KEPT_EVAL_BUFFER_BYTES = 64 * 2**20  # evaluation keeps a windows buffer up to this size


def matmul_blocked(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
                   block: int = 4096) -> np.ndarray:
    """a (P, K) @ b (K, M) -> (P, M), computed 4096 columns of b at a time.

    The same numbers as ``a @ b``; a block of b fits in the L2 cache, which OpenBLAS runs
    faster on a thin product such as conv1's (6, 25) @ (25, 147456) (benchmarks/README.md).
    Only a thin product gains (``thin``): for any other, one product is faster.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    if not thin(a.shape[0], a.shape[1]):
        return np.matmul(a, b, out=out)
    for start in range(0, b.shape[1], block):
        np.matmul(a, b[:, start:start + block], out=out[:, start:start + block])
    return out


def matmul_transposed_blocked(a: np.ndarray, b: np.ndarray, block: int = 4096) -> np.ndarray:
    """a (P, M) @ b (K, M)^T -> (P, K), summed over blocks of 4096 columns (see
    ``matmul_blocked``): sum_m a[p, m] b[k, m] is the sum of the same sums over the blocks.

    Each block is computed as (b a^T)^T, the orientation OpenBLAS runs fastest here. For a
    product that is not thin, one product is faster, and the orientation matters more: the one
    whose result has more rows than columns (a @ b.T for P > K, else (b a^T)^T); the other
    can be 30-100 times slower on this machine's OpenBLAS."""
    if not thin(a.shape[0], b.shape[0]):
        return a @ b.T if a.shape[0] > b.shape[0] else (b @ a.T).T
    out = np.zeros((b.shape[0], a.shape[0]), dtype=np.result_type(a, b))
    for start in range(0, a.shape[1], block):
        out += b[:, start:start + block] @ a[:, start:start + block].T
    return out.T


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                   stride: tuple[int, int], padding: tuple[int, int],
                   cols_buffer: np.ndarray | None = None):
    """x (C, H, W, N), weight (O, C, kh, kw), bias (O,) -> (y (O, Ho, Wo, N), cols).

    cols (C, kh, kw, Ho, Wo, N) is written into ``cols_buffer`` when one of that shape is given.
    """
    O = weight.shape[0]
    cols = im2col(pad(x, padding), weight.shape[2:], stride, cols_buffer)
    C, kh, kw, Ho, Wo, N = cols.shape
    y = matmul_blocked(weight.reshape(O, C * kh * kw),
                       cols.reshape(C * kh * kw, Ho * Wo * N))  # oK,KM -> oM
    if bias is not None:
        y += bias[:, None]
    return y.reshape(O, Ho, Wo, N), cols


def conv2d_forward_blocked(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                           stride: tuple[int, int], padding: tuple[int, int],
                           block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """The same y (O, Ho, Wo, N) as ``conv2d_forward``, a few output rows at a time: each block
    of windows is multiplied while it is still in the cache, and no cols matrix is kept."""
    O, K = weight.shape[0], math.prod(weight.shape[1:])
    Ho, Wo = output_size(x.shape[1:3], weight.shape[2:], stride, padding)
    y = np.empty((O, Ho, Wo, x.shape[3]), dtype=np.result_type(x, weight))
    for i0, i1, cols in windows_by_rows(pad(x, padding), weight.shape[2:], stride, block_bytes):
        rows = y[:, i0:i1].reshape(O, -1)  # a view: each channel's rows are contiguous
        np.matmul(weight.reshape(O, K), cols.reshape(K, -1), out=rows)  # oK,KM -> oM
        if bias is not None:
            rows += bias[:, None]  # while the block is in the cache
    return y


def conv2d_weight_grad_blocked(grad_out: np.ndarray, x: np.ndarray, weight_shape: tuple,
                               stride: tuple[int, int], padding: tuple[int, int],
                               block_bytes: int = BLOCK_BYTES):
    """grad_out (O, Ho, Wo, N), x (C, H, W, N) -> (grad_weight, grad_bias): the parameter
    gradients of ``conv2d_backward``, with the windows rebuilt from x a few output rows at a
    time instead of kept from the forward pass.

    dL/dW = sum over the blocks of dL/dy[:, rows] cols(rows)^T: a sum over columns, split.
    """
    O, K = weight_shape[0], math.prod(weight_shape[1:])
    grad_weight_t = np.zeros((K, O), dtype=grad_out.dtype)
    grad_bias = np.zeros(O, dtype=grad_out.dtype)
    for i0, i1, cols in windows_by_rows(pad(x, padding), weight_shape[2:], stride, block_bytes):
        rows = grad_out[:, i0:i1].reshape(O, -1)
        # KM,Mo -> Ko, the orientation OpenBLAS runs fastest here
        grad_weight_t += cols.reshape(K, -1) @ rows.T
        grad_bias += np.einsum("om->o", rows)  # while the block is in the cache
    return grad_weight_t.T.reshape(weight_shape), grad_bias


def conv2d_backward(grad_out: np.ndarray, cols: np.ndarray, weight: np.ndarray,
                    x_shape: tuple, stride: tuple[int, int], padding: tuple[int, int],
                    input_grad: bool = True):
    """grad_out (O, Ho, Wo, N) -> (grad_x (C, H, W, N) or None, grad_weight, grad_bias).

    With ``input_grad=False`` the input gradient (two thirds of the work) is skipped.
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
    grad_x = col2im(grad_cols.reshape(C, kh, kw, Ho, Wo, N), padded_shape, stride, padding)
    return grad_x, grad_weight, grad_bias


class Conv2dKernelCache(NamedTuple):
    x_shape: tuple               # (C, H, W, N)
    cols: np.ndarray | None      # the windows (C, kh, kw, Ho, Wo, N), when dL/dx will be asked
    x: np.ndarray | None         # or the input itself, when only dL/dW will be (or nothing)


class Conv2dKernel(Kernel):
    """Conv2d: x (C, H, W, N) -> y (O, Ho, Wo, N)."""

    def __init__(self, layer, input_grad: bool = True):
        super().__init__(layer, input_grad=input_grad)
        self.cols_buffer = None  # reused while the input's shape and dtype stay the same

    def forward(self, x: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        layer.checked_input(from_batch_last(x))
        bias = None if layer.bias is None else layer.bias.data
        O, K = layer.weight.shape[0], math.prod(layer.weight.shape[1:])  # K = C kh kw
        if not (layer.training and self.input_grad) and thin(O, K):
            # only dL/dW (first layer) or nothing (evaluation) will be asked for: keep x
            y = conv2d_forward_blocked(x, layer.weight.data, bias, layer.stride, layer.padding)
            self.cache = Conv2dKernelCache(x.shape, None, x)
            return y
        if not layer.training:
            # no backward expected: keep x; the windows go into a buffer kept between passes
            # only if it is small (a ResNet's at the evaluation batch of 1000 is 451 MB)
            y, _ = conv2d_forward(x, layer.weight.data, bias, layer.stride, layer.padding,
                                  self._cols_buffer(x, keep_at_most=KEPT_EVAL_BUFFER_BYTES))
            self.cache = Conv2dKernelCache(x.shape, None, x)
            return y
        y, cols = conv2d_forward(x, layer.weight.data, bias, layer.stride, layer.padding,
                                 self._cols_buffer(x))
        self.cache = Conv2dKernelCache(x.shape, cols, None)  # cols holds x's values
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        (layer,) = self.layers
        x_shape, cols, x = self.require_cache()
        if cols is None and not self.input_grad:
            grad_x = None
            grad_weight, grad_bias = conv2d_weight_grad_blocked(
                grad_out, x, layer.weight.shape, layer.stride, layer.padding)
        else:
            if cols is None:  # evaluation mode kept x only, but dL/dx is wanted now
                cols = im2col(pad(x, layer.padding), layer.kernel_size, layer.stride,
                              self._cols_buffer(x))
            grad_x, grad_weight, grad_bias = conv2d_backward(
                grad_out, cols, layer.weight.data, x_shape, layer.stride, layer.padding,
                input_grad=self.input_grad)
        layer.weight.grad += grad_weight
        if layer.bias is not None:
            layer.bias.grad += grad_bias
        return grad_x

    def _cols_buffer(self, x: np.ndarray, keep_at_most: float = np.inf) -> np.ndarray | None:
        """The (C, kh, kw, Ho, Wo, N) array im2col writes into, reused while the input shape
        and dtype stay the same (a fresh 15 MB array every step costs page faults); None (a
        fresh array for this pass only) when it would be larger than ``keep_at_most`` bytes."""
        (layer,) = self.layers
        C, H, W, N = x.shape
        Ho, Wo = output_size((H, W), layer.kernel_size, layer.stride, layer.padding)
        shape = (C, *layer.kernel_size, Ho, Wo, N)
        if math.prod(shape) * x.itemsize > keep_at_most:
            return None
        if self.cols_buffer is None or self.cols_buffer.shape != shape \
                or self.cols_buffer.dtype != x.dtype:
            self.cols_buffer = np.empty(shape, dtype=x.dtype)
        return self.cols_buffer
