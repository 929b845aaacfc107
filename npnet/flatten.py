"""Flatten: (N, d_1, ..., d_k) -> (N, d_1 * ... * d_k). Backward reshapes the gradient back."""

from __future__ import annotations

import numpy as np

from .module import Module


class Flatten(Module):
    """Keep the batch axis, merge all the others (PyTorch's ``Flatten()`` with start_dim=1)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"Flatten expects input (N, ...) with at least 2 dimensions; "
                             f"got {x.shape}")
        y = x.reshape(x.shape[0], -1)
        self.cache = (x.shape, y.shape)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape, y_shape = self._require_cache()
        return self._check_grad(grad_out, y_shape).reshape(x_shape)
