"""Conv2d -> BatchNorm -> Sigmoid -> AvgPool2d in evaluation mode: a few rows at a time.

In evaluation mode BatchNorm is a fixed scale s and shift t per channel (its moving averages),
so with the fused step's identity sigmoid(u) = (1 + tanh(u/2)) / 2 (fused.py) the four layers
are one convolution with new weights and bias, a tanh, and an average:

    s = gamma / sqrt(moving_var + eps)          t = beta - moving_mean * s      (O,)
    u/2 = (W s/2) * x + (b s + t)/2             the convolution's weights and bias, rescaled
    y = (1 + avgpool(tanh(u/2))) / 2

The convolution's output is computed a few rows at a time (``windows_by_rows``), as many rows
as the pooling windows need, and each block is rescaled, put through tanh and pooled while it
is still in the cache: the full-size output of the convolution is never written to memory
(batch 256: LeNet's first convolution gives 3.5 MB, read and written five times unfused).

It runs when the pooling windows tile the rows they cover (stride = kernel, no padding) and no
hook watches any of the four layers. A backward in evaluation mode (rare: gradcheck, an input's
gradient) runs the two kernels it stands for, Conv2dKernel and BatchNormSigmoidPoolKernel,
from the cached input.
"""

from __future__ import annotations

import math

import numpy as np

from ..activation import Sigmoid
from ..batchnorm import BatchNorm
from ..conv import Conv2d
from ..pool import AvgPool2d
from ..windows import output_size
from .conv import BLOCK_BYTES, Conv2dKernel, matmul_blocked
from .fused import BatchNormSigmoidPoolKernel
from .kernel import Kernel
from .layout import from_batch_last, pad, windows_by_rows
from .pool import avg_pool2d_forward


class ConvBlockEvalKernel(Kernel):
    """``Conv2d, BatchNorm(O, 4), Sigmoid(), AvgPool2d(k, stride=k)`` in evaluation mode:
    x (C, H, W, N) -> y (O, Ho / k, Wo / k, N)."""

    @staticmethod
    def fits(layers) -> bool:
        """Whether these four layers can run as one step in evaluation mode."""
        if len(layers) != 4 or not isinstance(layers[0], Conv2d):
            return False
        conv, *rest = layers
        pool = rest[2]
        return (BatchNormSigmoidPoolKernel.fits(rest) and pool.stride == pool.kernel_size
                and not any(layer.training for layer in layers)
                and not (conv._forward_hooks or conv._backward_hooks))

    def forward(self, x: np.ndarray) -> np.ndarray:
        conv, batch_norm, _, pool = self.layers
        conv.checked_input(from_batch_last(x))
        self.cache = x
        weight, bias = self.folded_weights(x.dtype)
        O, K = weight.shape
        Ho, Wo = output_size(x.shape[1:3], conv.kernel_size, conv.stride, conv.padding)
        (ph, pw) = pool.kernel_size
        Hp, Wp = Ho // ph, Wo // pw  # the rows and columns the pooling windows cover
        y = np.empty((O, Hp, Wp, x.shape[3]), dtype=x.dtype)
        for i0, i1, cols in windows_by_rows(pad(x, conv.padding), conv.kernel_size, conv.stride,
                                            BLOCK_BYTES, rows_multiple=ph, last_row=Hp * ph):
            half_u = matmul_blocked(weight, cols.reshape(K, -1))  # oK,KM -> oM, these rows
            half_u += bias
            np.tanh(half_u, out=half_u)
            y[:, i0 // ph:i1 // ph] = avg_pool2d_forward(
                half_u.reshape(O, i1 - i0, Wo, -1)[:, :, :Wp * pw], pool.kernel_size,
                pool.stride, (0, 0))
        y *= x.dtype.type(0.5)
        y += x.dtype.type(0.5)
        return y

    def folded_weights(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """(W s/2 (O, C kh kw), (b s + t)/2 (O, 1)): the convolution that gives u/2."""
        conv, batch_norm = self.layers[:2]
        O = conv.weight.shape[0]
        shape = (O, 1)
        scale = batch_norm.gamma.data.reshape(shape) / np.sqrt(
            batch_norm.moving_var.reshape(shape) + dtype.type(batch_norm.eps))
        shift = batch_norm.beta.data.reshape(shape) - batch_norm.moving_mean.reshape(shape) * scale
        half = dtype.type(0.5)
        weight = conv.weight.data.reshape(O, math.prod(conv.weight.shape[1:])) * (scale * half)
        bias = 0 if conv.bias is None else conv.bias.data.reshape(shape) * scale
        return weight, (bias + shift) * half

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        x = self.require_cache()
        conv, *rest = self.layers
        conv_kernel = Conv2dKernel(conv, input_grad=self.input_grad)
        rest_kernel = BatchNormSigmoidPoolKernel(*rest)
        rest_kernel.forward(conv_kernel.forward(x))
        return conv_kernel.backward(rest_kernel.backward(grad_out))
