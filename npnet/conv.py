"""2-D convolution (cross-correlation, as in every deep-learning library).

    y[n, o, i, j] = b[o] + sum_{c, a, b'} W[o, c, a, b'] * x_padded[n, c, i*sh + a, j*sw + b']

Shapes: x (N, C, H, W), W (O, C, kh, kw), b (O,), y (N, O, Ho, Wo) with
Ho = (H + 2 ph - kh) // sh + 1 and Wo = (W + 2 pw - kw) // sw + 1. ``padding='same'``
(stride 1, odd kernels) is ph = (kh - 1) // 2, which makes Ho = H (likewise pw, Wo = W).

With the windows of x as an array ``cols`` (N, C, Ho, Wo, kh, kw) (see windows.py), the
convolution is one matrix product that contracts (c, a, b'):

    y = tensordot(cols, W)          # nijCab,oCab -> nijo -> noij

and the backward pass is two more — derivation in docs/backprop.md, section "Conv2d":

    dL/dW = tensordot(dL/dy, cols)  # noij,nijCab -> oCab
    dL/db = sum over n, i, j of dL/dy
    dL/dcols = tensordot(dL/dy, W)  # noij,oCab -> nijCab, then col2im sums the
                                    # overlapping windows back onto dL/dx

npnet/fast/conv.py computes the same three products on a batch-last layout, faster; it runs only
where it has been shown to agree with these functions (npnet/fast/__init__.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .module import Module, Parameter
from .rng import default_uniform
from .windows import check_fits, col2im, im2col, pad, pair


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs from the forward pass."""

    cols: np.ndarray        # the windows of the padded input, a view (N, C, Ho, Wo, kh, kw)
    weight: np.ndarray      # (O, C, kh, kw)
    x_shape: tuple          # (N, C, H, W), to size dL/dx
    stride: tuple
    padding: tuple


def conv_padding(padding, kernel_size: tuple[int, int], stride: tuple[int, int],
                 owner: str) -> tuple[int, int]:
    """``padding`` as (ph, pw): an int or a pair as given; ``'valid'``, no padding, (0, 0);
    ``'same'``, the padding that keeps the input's size at stride 1:

        Ho = H + 2 ph - kh + 1 = H   <=>   ph = (kh - 1) / 2     (likewise pw)

    which is a whole number only for an odd kh. (For an even kh, PyTorch pads kh - 1 rows
    unevenly, the extra one at the bottom; npnet pads both sides alike and refuses.)"""
    if not isinstance(padding, str):
        return pair(padding, "padding", owner, minimum=0)
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        raise ValueError(f"{owner} expects padding as an int, a pair of ints, 'same' or "
                         f"'valid'; got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"{owner} supports padding='same' only with stride 1, as PyTorch "
                         f"does (with a larger stride, the padding that keeps the size would "
                         f"depend on the input's size); got stride={stride}")
    if kernel_size[0] % 2 == 0 or kernel_size[1] % 2 == 0:
        raise ValueError(f"{owner} supports padding='same' only for odd kernel sizes, which "
                         f"pad (k - 1) / 2 on each side; got kernel_size={kernel_size} (an even "
                         f"k needs k - 1 rows or columns, which PyTorch splits unevenly, one "
                         f"more at the bottom and right). Use an odd kernel, or give padding "
                         f"as numbers")
    return ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                   stride: tuple[int, int], padding: tuple[int, int]):
    """x (N, C, H, W), weight (O, C, kh, kw), bias (O,) or None -> (y (N, O, Ho, Wo), cache)."""
    x_padded = pad(x, padding)
    cols = im2col(x_padded, weight.shape[2:], stride)  # a view of x_padded: no extra memory
    # nCijab,oCab -> nijo; then move o next to n: (N, O, Ho, Wo)
    y = np.tensordot(cols, weight, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    if bias is not None:
        y = y + bias[:, None, None]
    return np.ascontiguousarray(y), Conv2dCache(cols, weight, x.shape, stride, padding)


def conv2d_backward(grad_out: np.ndarray, cache: Conv2dCache):
    """grad_out (N, O, Ho, Wo) -> (grad_x (N, C, H, W), grad_weight (O, C, kh, kw),
    grad_bias (O,))."""
    cols, weight, x_shape, stride, padding = cache
    grad_weight = np.tensordot(grad_out, cols, axes=([0, 2, 3], [0, 2, 3]))  # oCab
    grad_bias = grad_out.sum(axis=(0, 2, 3))
    grad_cols = np.tensordot(grad_out, weight, axes=([1], [0]))  # nijCab
    grad_cols = grad_cols.transpose(0, 3, 1, 2, 4, 5)  # nCijab, the layout of cols
    padded_shape = (x_shape[0], x_shape[1],
                    x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1])
    grad_x = col2im(grad_cols, padded_shape, stride, padding)
    return grad_x, grad_weight, grad_bias


class Conv2d(Module):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``.

    kernel_size, stride and padding are an int or a (height, width) pair; padding may also be
    ``'valid'`` (no padding) or ``'same'`` (the output keeps the input's H and W: stride 1 and
    odd kernel sizes only), kept as the pair of numbers it stands for (``conv_padding``).
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
        self.padding = conv_padding(padding, self.kernel_size, self.stride, owner)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(
            default_uniform((out_channels, in_channels, *self.kernel_size), fan_in))
        self.bias = Parameter(default_uniform((out_channels,), fan_in)) if bias else None

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

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to be (N, in_channels, H, W), float, and to hold a window."""
        x = self.check_input(x, 4, "(N, C, H, W)", channels=self.in_channels)
        check_fits(self.short_name(), x.shape, self.kernel_size, self.padding)
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        bias = None if self.bias is None else self.bias.data
        y, self.cache = conv2d_forward(x, self.weight.data, bias, self.stride, self.padding)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        N, _, Ho, Wo = cache.cols.shape[:4]
        grad_out = self.check_grad(grad_out, (N, self.out_channels, Ho, Wo))
        grad_x, grad_weight, grad_bias = conv2d_backward(grad_out, cache)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_x
