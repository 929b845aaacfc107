"""Exercise: the backward pass of MaxPool2d.

Write ``MaxPool2d.backward`` below, then check it against npnet's own layer:

    python -m npnet.exercises check exercises/max_pool2d.py   # or this file's path

The checker runs it on a few cases chosen so that mistakes cannot hide, says what differs,
and names the mistake when it is one it knows.

The math, from npnet/pool.py (derived in docs/backprop.md, "Pooling"):

    y[n, c, i, j] = max_{a, b} x_padded[n, c, i*sh + a, j*sw + b]
    dL/dx_padded[n, c, i*sh + a*, j*sw + b*] += dL/dy[n, c, i, j]

The solution is the library's own code, npnet/pool.py: max_pool2d_backward:
look at it when you are done, or stuck. (This file was generated from the library by
``python -m npnet.exercises make``.)
"""

import numpy as np

import npnet
from npnet.exercises import WindowsCache
from npnet.windows import col2im, im2col, pad  # col2im: see conv2d.py


class MaxPool2d(npnet.MaxPool2d):
    """MaxPool2d whose forward keeps every window, so that its backward has to find each
    window's winner itself (the library's forward keeps only the winners, and would leave
    the learner no tie to get wrong).

    The forward below is given (it is npnet.exercises.catalogue.MaxPool2dKeepingWindows.forward);
    the backward is yours."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        windows = im2col(pad(x, self.padding, -np.inf), self.kernel_size, self.stride)
        self.cache = WindowsCache(windows, x.shape)
        return windows.max(axis=(4, 5))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W).

        The library computes the same with npnet.pool.max_pool2d_backward:
        grad_out (N, C, Ho, Wo) -> grad_x (N, C, H, W): each window's gradient goes to its
        winner."""
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, self._output_shape(cache))
        windows, x_shape = cache  # windows (N, C, Ho, Wo, kh, kw), x_shape (N, C, H, W)
        kh, kw = self.kernel_size
        # Your code here.
        # Return grad_x (N, C, H, W): each window's gradient goes to its maximum, the
        # first one in row-major order where several tie (as PyTorch); padding cut off.
        raise NotImplementedError("MaxPool2d.backward: not written yet")
