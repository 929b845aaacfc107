"""Elementwise activations. Each derivative is written with the forward's own output y.

    Sigmoid:  y = 1 / (1 + exp(-x))      dL/dx = dL/dy * y (1 - y)
    Tanh:     y = tanh(x)                dL/dx = dL/dy * (1 - y^2)
    ReLU:     y = max(x, 0)              dL/dx = dL/dy * [x > 0]

Derivation in docs/backprop.md, section "Activations".
"""

from __future__ import annotations

import numpy as np

from .module import Module


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed as (1 + tanh(x / 2)) / 2: the same function, but it never
    overflows for large |x| (exp(1000) would) and tanh is the faster kernel in NumPy.
    (Rounding is the same in absolute terms, ~1e-16 in float64; for x below about -10 the
    tiny result loses relative precision, and below about -37 it is exactly 0.)"""
    y = x * x.dtype.type(0.5)
    np.tanh(y, out=y)  # in place: the four steps share one array
    y += 1
    y *= 0.5
    return y


class _Elementwise(Module):
    """Shape-preserving layers: any input shape, output of the same shape and dtype.

    The layout does not matter to an elementwise function, so the batch-last fast path of
    ``Sequential`` runs the very same forward and backward.
    """

    supports_batch_last = True

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray:
        return self.backward(grad_out)

    def _check(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.short_name()} expects a float32 or float64 input; "
                            f"got {x.dtype}")
        return x


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)); any shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = sigmoid(self._check(x))
        self.cache = y  # y (1 - y) is the derivative: no need to keep x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._require_cache()
        grad_out = self._check_grad(grad_out, y.shape)
        return grad_out * y * (1 - y)

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray:
        """The same dL/dy * y (1 - y), computed in one array (no temporaries of x's size)."""
        y = self._require_cache()
        grad_out = self._check_grad(grad_out, y.shape)
        grad_x = np.subtract(1, y, dtype=y.dtype)
        grad_x *= y
        grad_x *= grad_out
        return grad_x


class Tanh(_Elementwise):
    """y = tanh(x); any shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(self._check(x))
        self.cache = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self._require_cache()
        grad_out = self._check_grad(grad_out, y.shape)
        return grad_out * (1 - y * y)


class ReLU(_Elementwise):
    """y = max(x, 0); any shape. The derivative at exactly 0 is taken as 0 (as PyTorch)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        positive = x > 0
        self.cache = positive  # the mask is all backward needs
        return x * positive

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        positive = self._require_cache()
        grad_out = self._check_grad(grad_out, positive.shape)
        return grad_out * positive
