"""Sigmoid on the batch-last layout, with fewer passes over memory.

The forward is npnet's own ``sigmoid`` (activation.py); the backward computes the same
dL/dy * y (1 - y) in one array, with no temporaries of x's size. (Tanh and ReLU run their own
methods: kernel.LayoutFree.)
"""

from __future__ import annotations

import numpy as np

from ..activation import sigmoid
from .kernel import Kernel


class SigmoidKernel(Kernel):
    """Sigmoid: any batch-last shape, the same shape out."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = sigmoid(self.layers[0].checked_input(x))
        self.cache = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self.require_cache()
        grad_x = np.subtract(1, y, dtype=y.dtype)
        grad_x *= y
        grad_x *= grad_out
        return grad_x
