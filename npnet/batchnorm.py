"""Batch normalization, exactly as the seed notebook (d2l section 7.5) writes it.

Training mode, statistics over the batch (and, for 4-D input, over every pixel):

    axes = (0,) for x (N, F);  (0, 2, 3) for x (N, F, H, W)        M = elements per feature
    batch_mean = mean(x, axes)                                      (1, F) or (1, F, 1, 1)
    batch_var  = mean((x - batch_mean)^2, axes)                     biased: divides by M
    x_hat = (x - batch_mean) / sqrt(batch_var + eps)
    y = gamma * x_hat + beta
    moving_mean = momentum * moving_mean + (1 - momentum) * batch_mean      (momentum = 0.9)
    moving_var  = momentum * moving_var  + (1 - momentum) * batch_var

Evaluation mode uses the moving averages instead: x_hat = (x - moving_mean) / sqrt(moving_var
+ eps). (PyTorch's nn.BatchNorm2d differs: its momentum 0.1 weights the *new* value, and its
running_var uses the unbiased variance.)

Backward — derivation in docs/backprop.md, section "BatchNorm". With inv_std = 1/sqrt(var+eps)
and g = dL/dy * gamma (the gradient reaching x_hat):

    dL/dgamma = sum(dL/dy * x_hat, axes)        dL/dbeta = sum(dL/dy, axes)
    training:   dL/dx = inv_std * (g - mean(g, axes) - x_hat * mean(g * x_hat, axes))
    evaluation: dL/dx = inv_std * g             (the moving statistics are constants)

The two extra terms in training mode are the paths through batch_mean and batch_var: every
x[n] moves the statistics that normalize all the others.

Training mode needs more than one value per feature (M > 1), as in PyTorch: with one, the
batch variance is 0, the output is exactly beta whatever x is, and the moving variance is
pulled toward 0. The layer refuses such a batch (``BatchTooSmallError``) before it changes
anything. (The seed's function computes on regardless; its shape trace on one image runs
in evaluation mode here.)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .module import Module, Parameter


class BatchTooSmallError(ValueError):
    """BatchNorm in training mode got one value per feature (a batch of one sample)."""


class BatchNormCache(NamedTuple):
    """What ``batch_norm_backward`` needs from the forward pass."""

    x_hat: np.ndarray    # the normalized input, shape of x
    inv_std: np.ndarray  # 1 / sqrt(var + eps), (1, F) or (1, F, 1, 1)
    gamma: np.ndarray    # (1, F) or (1, F, 1, 1)
    training: bool       # whether the statistics came from this batch (and depend on x)


def _axes(x: np.ndarray) -> tuple:
    """Axes the statistics average over: (0,) for (N, F), (0, 2, 3) for (N, F, H, W)."""
    return (0,) if x.ndim == 2 else (0, 2, 3)


def batch_norm(x, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """The seed's ``batch_norm``, with the mode passed in.

    x (N, F) or (N, F, H, W); gamma, beta, moving_mean, moving_var (1, F) or (1, F, 1, 1).
    Returns (y, moving_mean, moving_var, cache): y has x's shape; the moving statistics are
    new arrays (updated in training mode, the same in evaluation); cache is for
    ``batch_norm_backward``.
    """
    if not training:
        inv_std = 1.0 / np.sqrt(moving_var + eps)
        x_hat = (x - moving_mean) * inv_std
    else:
        axes = _axes(x)
        batch_mean = x.mean(axis=axes, keepdims=True)
        centered = x - batch_mean
        batch_var = (centered * centered).mean(axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(batch_var + eps)
        x_hat = centered * inv_std
        moving_mean = momentum * moving_mean + (1.0 - momentum) * batch_mean
        moving_var = momentum * moving_var + (1.0 - momentum) * batch_var
    y = gamma * x_hat + beta  # scale and shift
    return y, moving_mean, moving_var, BatchNormCache(x_hat, inv_std, gamma, training)


def batch_norm_backward(grad_out, cache: BatchNormCache):
    """grad_out (shape of x) -> (grad_x, grad_gamma, grad_beta); the latter two (1, F[, 1, 1])."""
    x_hat, inv_std, gamma, training = cache
    axes = _axes(x_hat)
    grad_gamma = (grad_out * x_hat).sum(axis=axes, keepdims=True)
    grad_beta = grad_out.sum(axis=axes, keepdims=True)
    grad_x_hat = grad_out * gamma
    if not training:
        return grad_x_hat * inv_std, grad_gamma, grad_beta
    mean_grad = grad_x_hat.mean(axis=axes, keepdims=True)  # the path through batch_mean
    mean_grad_x_hat = (grad_x_hat * x_hat).mean(axis=axes, keepdims=True)  # through batch_var
    grad_x = inv_std * (grad_x_hat - mean_grad - x_hat * mean_grad_x_hat)
    return grad_x, grad_gamma, grad_beta


class BatchNorm(Module):
    """``BatchNorm(num_features, num_dims, eps=1e-5, momentum=0.9)``, the seed's layer.

    num_dims is 2 after a fully connected layer (input (N, F)) and 4 after a convolution
    (input (N, F, H, W)). Parameters ``gamma`` (ones) and ``beta`` (zeros) and buffers
    ``moving_mean`` (zeros) and ``moving_var`` (ones) have shape (1, F) or (1, F, 1, 1).
    ``momentum`` weights the *old* moving value, as in the seed.
    """

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5,
                 momentum: float = 0.9):
        super().__init__()
        if num_dims not in (2, 4):
            raise ValueError(
                f"BatchNorm({num_features}, num_dims={num_dims}): num_dims must be 2 (after a "
                f"Linear layer, input (N, F)) or 4 (after a Conv2d, input (N, F, H, W))"
            )
        if num_features <= 0:
            raise ValueError(f"BatchNorm expects num_features > 0; got {num_features}")
        self.num_features, self.num_dims = num_features, num_dims
        self.eps, self.momentum = eps, momentum
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = Parameter(np.ones(shape, dtype=np.float32))
        self.beta = Parameter(np.zeros(shape, dtype=np.float32))
        self.register_buffer("moving_mean", np.zeros(shape, dtype=np.float32))
        self.register_buffer("moving_var", np.ones(shape, dtype=np.float32))

    def short_name(self) -> str:
        return f"BatchNorm({self.num_features}, num_dims={self.num_dims})"

    def extra_repr(self) -> str:
        return (f"{self.num_features}, num_dims={self.num_dims}, eps={self.eps}, "
                f"momentum={self.momentum}")

    def checked_input(self, x) -> np.ndarray:
        """x as an ndarray, checked to be (N, F) or (N, F, H, W) (by num_dims) and float, not
        empty, and in training mode to hold more than one value per feature."""
        layout = "(N, C)" if self.num_dims == 2 else "(N, C, H, W)"
        x = self.check_input(x, self.num_dims, layout, channels=self.num_features)
        if self.training and x.size <= self.num_features:  # M = N (* H * W) values per feature
            raise BatchTooSmallError(
                f"{self.short_name()} expected more than 1 value per channel when training, "
                f"got input of shape {x.shape}: the batch variance of one value is 0, so the "
                f"output would be exactly beta and the moving variance would be pulled toward "
                f"0. Train on batches of two samples or more, or run single samples in "
                f"evaluation mode (net.eval())")
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        dtype = x.dtype.type
        # numpy scalars of x's dtype: the moving statistics stay float32 for a float32 x
        y, self.moving_mean, self.moving_var, self.cache = batch_norm(
            x, self.gamma.data, self.beta.data, self.moving_mean, self.moving_var,
            dtype(self.eps), dtype(self.momentum), self.training)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, cache.x_hat.shape)
        grad_x, grad_gamma, grad_beta = batch_norm_backward(grad_out, cache)
        self.gamma.grad += grad_gamma
        self.beta.grad += grad_beta
        return grad_x
