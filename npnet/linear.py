"""Linear (fully connected) layer: y = x W^T + b.

Shapes: x (N, in_features), W (out_features, in_features), b (out_features,),
y (N, out_features).

Backward, from dL/dy (N, out) — derivation in docs/backprop.md, section "Linear":

    dL/dx = dL/dy W            (N, out) @ (out, in)  -> (N, in)
    dL/dW = (dL/dy)^T x        (out, N) @ (N, in)    -> (out, in)
    dL/db = sum_n dL/dy[n]     (out,)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .module import Module, Parameter
from .rng import default_uniform


class LinearCache(NamedTuple):
    """What ``linear_backward`` needs from the forward pass."""

    x: np.ndarray       # (N, in), for dL/dW
    weight: np.ndarray  # (out, in), for dL/dx


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None):
    """x (N, in), weight (out, in), bias (out,) or None -> (y (N, out), cache)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, LinearCache(x, weight)


def linear_backward(grad_out: np.ndarray, cache: LinearCache):
    """grad_out (N, out) -> (grad_x (N, in), grad_weight (out, in), grad_bias (out,))."""
    x, weight = cache
    grad_x = grad_out @ weight
    grad_weight = grad_out.T @ x
    grad_bias = grad_out.sum(axis=0)
    return grad_x, grad_weight, grad_bias


class Linear(Module):
    """y = x W^T + b, with PyTorch's names: ``Linear(in_features, out_features, bias=True)``.

    Parameters: ``weight`` (out_features, in_features), ``bias`` (out_features,), both
    initialized U(-1/sqrt(in_features), 1/sqrt(in_features)) as in PyTorch.
    Input (N, in_features) -> output (N, out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(
                f"Linear expects positive in_features and out_features; "
                f"got in_features={in_features}, out_features={out_features}"
            )
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(default_uniform((out_features, in_features), in_features))
        self.bias = Parameter(default_uniform((out_features,), in_features)) if bias else None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def short_name(self) -> str:
        return f"Linear({self.in_features}, {self.out_features})"

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to be (N, in_features) and float."""
        return self.check_input(x, 2, "(N, C)", channels=self.in_features)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        bias = None if self.bias is None else self.bias.data
        y, self.cache = linear_forward(x, self.weight.data, bias)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, (len(cache.x), self.out_features))
        grad_x, grad_weight, grad_bias = linear_backward(grad_out, cache)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_x
