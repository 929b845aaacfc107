"""Linear (fully connected) layer: y = x W^T + b.

Shapes: x (N, in_features), W (out_features, in_features), b (out_features,),
y (N, out_features).

Backward, from dL/dy (N, out) — derivation in docs/backprop.md, section "Linear":

    dL/dx = dL/dy W            (N, out) @ (out, in)  -> (N, in)
    dL/dW = (dL/dy)^T x        (out, N) @ (N, in)    -> (out, in)
    dL/db = sum_n dL/dy[n]     (out,)

With the batch last (the fast path of ``Sequential``), x^T (in, N) and y^T (out, N) are
columns per sample, and the same products read y^T = W x^T + b, dL/dx^T = W^T dL/dy^T,
dL/dW = dL/dy^T x.
"""

from __future__ import annotations

import numpy as np

from . import init
from .module import BatchLastCache, Module, Parameter
from .windows import from_batch_last


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """x (N, in), weight (out, in), bias (out,) or None -> y (N, out)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray):
    """grad_out (N, out) -> (grad_x (N, in), grad_weight (out, in), grad_bias (out,))."""
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
        self.weight = Parameter(init.default_uniform((out_features, in_features), in_features))
        self.bias = (Parameter(init.default_uniform((out_features,), in_features))
                     if bias else None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def short_name(self) -> str:
        return f"Linear({self.in_features}, {self.out_features})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self._check_input(x, 2, "(N, C)", channels=self.in_features)
        y = linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        self.cache = (x, y.shape)  # backward needs x (for dL/dW) and W, which we hold
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x, out_shape = self._require_cache()
        grad_out = self._check_grad(grad_out, out_shape)
        grad_x, grad_weight, grad_bias = linear_backward(grad_out, x, self.weight.data)
        self.weight.grad += grad_weight
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_x if self.requires_input_grad else None

    # ------------------------------------------------ the fast path, batch last (in, N)
    supports_batch_last = True

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        self._check_input(from_batch_last(x), 2, "(N, C)", channels=self.in_features)
        y = self.weight.data @ x  # (out, in) @ (in, N)
        if self.bias is not None:
            y += self.bias.data[:, None]
        self.cache = BatchLastCache((x, y.shape))
        return y

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray | None:
        x, out_shape = self._require_cache(batch_last=True)
        grad_out = self._check_grad(grad_out, out_shape, batch_last=True)
        self.weight.grad += grad_out @ x.T  # (out, N) @ (N, in)
        if self.bias is not None:
            self.bias.grad += grad_out.sum(axis=1)
        if not self.requires_input_grad:
            return None
        return self.weight.data.T @ grad_out  # (in, out) @ (out, N)
