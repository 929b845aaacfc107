"""Identity: y = x, any shape; dL/dx = dL/dy.

It computes nothing. It is the shortcut of a residual block whose input and output have the
same shape (d2l's ``Residual`` without the 1x1 convolution), where a container needs a layer
to call: ``body(x) + shortcut(x)`` with ``shortcut = Identity()``.
"""

from __future__ import annotations

import numpy as np

from .module import Module


class Identity(Module):
    """``Identity()``: returns its input, the same array (no copy, as PyTorch's
    ``nn.Identity``), and its backward returns ``grad_out``, the same array. Code that
    writes into either in place writes into what it was given.

    The cache is the input's shape: all backward needs to check ``grad_out``.
    """

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to be float (any shape)."""
        return self.check_float(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        self.cache = x.shape
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape = self.require_cache()
        return self.check_grad(grad_out, x_shape)  # dL/dx = dL/dy: y is x
