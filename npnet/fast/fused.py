"""BatchNorm -> Sigmoid -> AvgPool2d as one step: LeNet's repeated block, fused.

The three layers stay three classes, each with its own forward and backward; FastNet runs this
kernel in their place when they follow one another, the BatchNorm is 4-D, the pooling has no
padding, and no hook watches any of the three (a hook must see its layer's own arrays).

Two identities save passes over the full-size array u = BatchNorm(x) (F, H, W, N):

    sigmoid(u) = (1 + tanh(u/2)) / 2             and u/2 is BatchNorm with gamma/2 and beta/2
    avgpool((1 + T) / 2) = (1 + avgpool(T)) / 2   for T = tanh(u/2): an average of a constant
                                                  is the constant (every window is whole: no
                                                  padding)

so the forward computes T in place in BatchNorm's output and pools T; the sigmoid's output is
never written out. Backward, from g = dL/d(pooled output) (F, Ho, Wo, N):

    dL/dT     = avgpool_backward(g / 2)
    dL/d(u/2) = dL/dT * (1 - T^2)                 (tanh' = 1 - tanh^2; when the windows tile
                                                  the input, 1 - T^2 times each window's share)
    then BatchNorm's backward, run with gamma/2: it gives dL/dx as it is, and the gradients
    for gamma/2 and beta/2; halve them to get the ones for gamma and beta.

Both halves are batchnorm.py's ``scaled_forward`` / ``scaled_backward`` with scale 1/2, the
code its own kernel runs with scale 1. Derivation in docs/backprop.md, section "The fused step".
"""

from __future__ import annotations

import numpy as np

from ..activation import Sigmoid
from ..batchnorm import BatchNorm
from ..pool import AvgPool2d
from .batchnorm import scaled_backward, scaled_forward
from .kernel import Kernel
from .layout import window_slab
from .pool import avg_pool2d_backward, avg_pool2d_forward, windows_tile


class BatchNormSigmoidPoolKernel(Kernel):
    """``BatchNorm(F, 4), Sigmoid(), AvgPool2d(...)``: x (F, H, W, N) -> y (F, Ho, Wo, N)."""

    @staticmethod
    def fits(layers) -> bool:
        """Whether these three layers can run as one step."""
        if len(layers) != 3:
            return False
        batch_norm, sigmoid, pool = layers
        return (isinstance(batch_norm, BatchNorm) and batch_norm.num_dims == 4
                and isinstance(sigmoid, Sigmoid) and isinstance(pool, AvgPool2d)
                and pool.padding == (0, 0)
                and not any(layer._forward_hooks or layer._backward_hooks for layer in layers))

    def forward(self, x: np.ndarray) -> np.ndarray:
        batch_norm, _, pool = self.layers
        half = x.dtype.type(0.5)
        u_half, bn_cache = scaled_forward(batch_norm, x, half)  # u/2, rows (F, M)
        tanh = np.tanh(u_half, out=u_half).reshape(x.shape)  # T, in place
        y = avg_pool2d_forward(tanh, pool.kernel_size, pool.stride, pool.padding)
        y *= half
        y += half
        self.cache = (bn_cache, tanh)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        batch_norm, _, pool = self.layers
        bn_cache, tanh = self.require_cache()
        grad = np.multiply(tanh, tanh, out=tanh)  # in place: T is not needed after this
        np.subtract(1, grad, out=grad)  # 1 - T^2
        if windows_tile(tanh.shape, grad_out.shape, pool.kernel_size, pool.stride, pool.padding):
            # each pixel's dL/dT is its window's share of g/2: multiplied in place, window
            # offset by window offset, without writing dL/dT out first
            (kh, kw), (_, Ho, Wo, _) = pool.kernel_size, grad_out.shape
            share = grad_out * tanh.dtype.type(0.5 / (kh * kw))
            for a in range(kh):
                for b in range(kw):
                    window_slab(grad, a, b, (Ho, Wo), pool.stride)[...] *= share
        else:
            grad *= avg_pool2d_backward(grad_out * tanh.dtype.type(0.5), tanh.shape,
                                        pool.kernel_size, pool.stride, pool.padding)  # dL/dT
        # grad is dL/d(u/2) now
        self.cache = None  # used up: T and the centered input are overwritten
        return scaled_backward(batch_norm, grad, bn_cache, grad_is_spare=True).reshape(
            tanh.shape)
