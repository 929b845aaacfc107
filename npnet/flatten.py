"""Flatten: (N, d_1, ..., d_k) -> (N, d_1 * ... * d_k). Backward reshapes the gradient back.
(docs/backprop.md, section "Flatten".)
"""

from __future__ import annotations

import math

import numpy as np

from .module import Module, check_not_empty


class Flatten(Module):
    """Keep the batch axis, merge all the others (PyTorch's ``Flatten()`` with start_dim=1).

    The cache is the input's shape: all backward needs to undo the reshape.
    """

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to have a batch axis and at least one more."""
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten expects input (N, ...) with at least 2 dimensions; "
                             f"got {x.shape}")
        check_not_empty("Flatten", x.shape)  # (0, ...) cannot be reshaped to (0, -1)
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape = self.require_cache()
        grad_out = self.check_grad(grad_out, (x_shape[0], math.prod(x_shape[1:])))
        return grad_out.reshape(x_shape)
