"""Exercise: the backward pass of AvgPool2d.

Write ``AvgPool2d.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/avg_pool2d.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/pool.py (derived in docs/backprop.md, "Pooling"):

    y[n, c, i, j] = 1/(kh kw) sum_{a, b} x_padded[n, c, i*sh + a, j*sw + b]
    dL/dx_padded[n, c, i*sh + a, j*sw + b] += dL/dy[n, c, i, j] / (kh kw)

The solution is the library's own code, npnet/pool.py: avg_pool2d_backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet
from npnet.windows import col2im  # adds overlapping windows back; or write the loop yourself


class AvgPool2d(npnet.AvgPool2d):
    """npnet.AvgPool2d with a backward of your own (the forward, the parameters
    and the checks are the library's)."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W).

        The library computes the same with npnet.pool.avg_pool2d_backward:
        grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, self._output_shape(cache))
        x_shape, (kh, kw), stride, padding = cache  # x_shape (N, C, H, W)
        # Your code here.
        # Return grad_x (N, C, H, W), the padding cut off.
        raise NotImplementedError("AvgPool2d.backward: not written yet")
