"""BatchNorm -> Sigmoid -> AvgPool2d as one step: the fast path for LeNet's repeated block.

The three layers stay three classes, each with its own forward and backward. ``Sequential``
runs this step in their place, on the batch-last layout, when all of these hold:
- they follow one another;
- the BatchNorm is 4-D;
- the pooling has no padding;
- no hook watches any of the three.
``tests/test_fast_paths.py`` checks it against the three layers run one after another.

Two identities save passes over the full-size array u = BatchNorm(x) (F, H, W, N):

    sigmoid(u) = (1 + tanh(u/2)) / 2             and u/2 is BatchNorm with gamma/2 and beta/2
    avgpool((1 + T) / 2) = (1 + avgpool(T)) / 2   for T = tanh(u/2): an average of a constant
                                                  is the constant (every window is whole: no
                                                  padding)

so the forward computes T in place in BatchNorm's output and pools T; the sigmoid's output is
never written out. Backward, from g = dL/d(pooled output) (F, Ho, Wo, N):

    dL/dT     = avgpool_backward(g / 2)
    dL/d(u/2) = dL/dT * (1 - T^2)                 (tanh' = 1 - tanh^2)
    then BatchNorm's backward, run with gamma/2: it gives dL/dx as it is, and the gradients
    for gamma/2 and beta/2; halve them to get the ones for gamma and beta.

Both halves are BatchNorm's own ``scaled_forward_rows`` / ``scaled_backward_rows`` with
scale 1/2, the code its batch-last forward and backward run with scale 1.

Measured in LeNet-BN (both blocks, batch 256, alternating in one process with the unfused
layers): the training step 5-6% faster at 2 threads and 1-2% at 1 thread, evaluation 4-35%
faster (benchmarks/README.md, phase 3).
"""

from __future__ import annotations

import numpy as np

from .activation import Sigmoid
from .batchnorm import BatchNorm
from .pool import AvgPool2d


class BatchNormSigmoidPool:
    """One step for ``BatchNorm(F, 4), Sigmoid(), AvgPool2d(...)``: (F, H, W, N) -> (F, Ho, Wo, N).

    Not a layer of its own: ``Sequential`` makes one for each such triple on every pass. It
    updates the BatchNorm's moving statistics and adds to its ``gamma.grad`` / ``beta.grad``
    exactly as the three layers would.
    """

    def __init__(self, batch_norm: BatchNorm, sigmoid: Sigmoid, pool: AvgPool2d):
        self.batch_norm, self.sigmoid, self.pool = batch_norm, sigmoid, pool
        self.cache = None

    @staticmethod
    def fits(layers) -> bool:
        """Whether these (the next three layers) can run as one step."""
        if len(layers) < 3:
            return False
        batch_norm, sigmoid, pool = layers[:3]
        return (type(batch_norm) is BatchNorm and batch_norm.num_dims == 4
                and type(sigmoid) is Sigmoid and type(pool) is AvgPool2d
                and pool.padding == (0, 0)
                and not any(layer._forward_hooks or layer._backward_hooks
                            for layer in (batch_norm, sigmoid, pool)))

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        half = x.dtype.type(0.5)
        u_half, bn_cache = self.batch_norm.scaled_forward_rows(x, half)  # u/2, rows (F, M)
        tanh = np.tanh(u_half, out=u_half).reshape(x.shape)  # T, in place
        y = self.pool.forward_batch_last(tanh)
        y *= half
        y += half
        # the layers' own caches would be stale: their backward must not run on them
        self.batch_norm.cache = self.sigmoid.cache = None
        self.cache = (bn_cache, tanh)
        return y

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError("BatchNormSigmoidPool.backward called before forward")
        bn_cache, tanh = self.cache
        grad = self.pool.backward_batch_last(grad_out * tanh.dtype.type(0.5))  # dL/dT
        tanh_slope = np.multiply(tanh, tanh)
        np.subtract(1, tanh_slope, out=tanh_slope)  # 1 - T^2
        grad *= tanh_slope  # dL/d(u/2)
        return self.batch_norm.scaled_backward_rows(grad, bn_cache).reshape(tanh.shape)
