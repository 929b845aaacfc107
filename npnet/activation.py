"""Elementwise activations. Each derivative is written with the forward's own output y.

    Sigmoid:  y = 1 / (1 + exp(-x))      dL/dx = dL/dy * y (1 - y)
    Tanh:     y = tanh(x)                dL/dx = dL/dy * (1 - y^2)
    ReLU:     y = max(x, 0)              dL/dx = dL/dy * [x > 0]

Any input shape; the output has the same shape and dtype. Derivation in docs/backprop.md,
section "Activations".
"""

from __future__ import annotations

import numpy as np

from .module import Module


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), computed as (1 + tanh(x / 2)) / 2: the same function, but it never
    overflows for large |x| (exp(1000) would) and tanh is the faster kernel in NumPy.
    (Rounding is the same in absolute terms, ~1e-16 in float64; for x below about -10 the
    tiny result loses relative precision, and below about -37 it is exactly 0.)"""
    y = np.asarray(x * x.dtype.type(0.5))  # an array even for 0-d x, so out= works
    np.tanh(y, out=y)  # in place: the four steps share one array
    y += 1
    y *= 0.5
    return y


class _Elementwise(Module):
    """Shape-preserving layers: any input shape, output of the same shape and dtype."""

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to be float (any shape)."""
        return self.check_float(x)


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)); any shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = sigmoid(self.checked_input(x))
        self.cache = y  # y (1 - y) is the derivative: no need to keep x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self.require_cache()
        grad_out = self.check_grad(grad_out, y.shape)
        return grad_out * y * (1 - y)


class Tanh(_Elementwise):
    """y = tanh(x); any shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(self.checked_input(x))
        self.cache = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        y = self.require_cache()
        grad_out = self.check_grad(grad_out, y.shape)
        return grad_out * (1 - y * y)


class ReLU(_Elementwise):
    """y = max(x, 0); any shape. The derivative at exactly 0 is taken as 0 (as PyTorch)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        positive = x > 0
        self.cache = positive  # the mask is all backward needs
        return x * positive

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        positive = self.require_cache()
        grad_out = self.check_grad(grad_out, positive.shape)
        return grad_out * positive
