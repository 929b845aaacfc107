"""Linear and Flatten on the batch-last layout, (features, N).

With the batch last, x^T (in, N) and y^T (out, N) hold one column per sample, and
npnet/linear.py's products read

    y^T = W x^T + b        dL/dx^T = W^T dL/dy^T        dL/dW = dL/dy^T x

Flatten merges (d_1, ..., d_k, N) into (d_1 * ... * d_k, N): the features in the same order as
the textbook's (N, d_1 * ... * d_k), so the next Linear sees the same numbers.
"""

from __future__ import annotations

import numpy as np

from .kernel import Kernel
from .layout import from_batch_last


class LinearKernel(Kernel):
    """Linear: x (in, N) -> y (out, N)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        (layer,) = self.layers
        layer.checked_input(from_batch_last(x))
        y = layer.weight.data @ x  # (out, in) @ (in, N)
        if layer.bias is not None:
            y += layer.bias.data[:, None]
        self.cache = x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        (layer,) = self.layers
        x = self.require_cache()
        layer.weight.grad += grad_out @ x.T  # (out, N) @ (N, in)
        if layer.bias is not None:
            layer.bias.grad += grad_out.sum(axis=1)
        if not self.input_grad:
            return None
        return layer.weight.data.T @ grad_out  # (in, out) @ (out, N)


class FlattenKernel(Kernel):
    """Flatten: x (d_1, ..., d_k, N) -> y (d_1 * ... * d_k, N)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.layers[0].checked_input(from_batch_last(x))
        self.cache = x.shape
        return x.reshape(-1, x.shape[-1])

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self.require_cache())
