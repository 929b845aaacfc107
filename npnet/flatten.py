"""Flatten: (N, d_1, ..., d_k) -> (N, d_1 * ... * d_k). Backward reshapes the gradient back.

With the batch last (the fast path of ``Sequential``), (d_1, ..., d_k, N) -> (d_1 * ... * d_k, N):
the features are merged in the same order, so the next Linear layer sees the same numbers.
(docs/backprop.md, section "Flatten".)
"""

from __future__ import annotations

import numpy as np

from .module import BatchLastCache, Module
from .windows import from_batch_last


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

    # ----------------------------------------- the fast path, batch last (d_1, ..., d_k, N)
    supports_batch_last = True

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2:
            raise ValueError(f"Flatten expects input (N, ...) with at least 2 dimensions; "
                             f"got {from_batch_last(x).shape}")
        y = x.reshape(-1, x.shape[-1])
        self.cache = BatchLastCache((x.shape, y.shape))
        return y

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray:
        x_shape, y_shape = self._require_cache(batch_last=True)
        return self._check_grad(grad_out, y_shape, batch_last=True).reshape(x_shape)
