"""Exercise: the backward pass of Conv2d.

Write ``Conv2d.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/conv2d.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/conv.py (derived in docs/backprop.md, "Conv2d"):

    y[n, o, i, j] = b[o] + sum_{c, a, b'} W[o, c, a, b'] * x_padded[n, c, i*sh + a, j*sw + b']

    dL/dW = tensordot(dL/dy, cols)  # noij,nijCab -> oCab
    dL/db = sum over n, i, j of dL/dy
    dL/dcols = tensordot(dL/dy, W)  # noij,oCab -> nijCab, then col2im sums the
                                    # overlapping windows back onto dL/dx

The solution is the library's own code, npnet/conv.py: conv2d_backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet
from npnet.windows import col2im  # adds overlapping windows back; or write the loop yourself


class Conv2d(npnet.Conv2d):
    """npnet.Conv2d with a backward of your own (the forward, the parameters
    and the checks are the library's)."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (N, O, Ho, Wo) -> grad_x (N, C, H, W); adds dL/dW (O, C, kh, kw) into
        self.weight.grad and dL/db (O,) into self.bias.grad.

        The library computes the same with npnet.conv.conv2d_backward:
        grad_out (N, O, Ho, Wo) -> (grad_x (N, C, H, W), grad_weight (O, C, kh, kw),
        grad_bias (O,))."""
        cache = self.require_cache()
        N, _, Ho, Wo = cache.cols.shape[:4]
        grad_out = self.check_grad(grad_out, (N, self.out_channels, Ho, Wo))
        cols, weight, x_shape, stride, padding = cache
        # cols (N, C, Ho, Wo, kh, kw): the windows of the padded input
        # weight (O, C, kh, kw); x_shape (N, C, H, W); stride (sh, sw); padding (ph, pw)
        # Your code here.
        # Return grad_x (N, C, H, W), the padding cut off. Add (+=) dL/dW into
        # self.weight.grad and dL/db into self.bias.grad.
        raise NotImplementedError("Conv2d.backward: not written yet")
