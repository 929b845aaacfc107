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

The fast path (what ``Sequential`` runs) keeps the batch last, (F, H, W, N) or (F, N), so each
feature's M values are one contiguous row of x.reshape(F, M), and the statistics are row means.
``batch_norm_rows`` / ``batch_norm_rows_backward`` are the same formulas on those rows; the
backward reuses the two sums it needs anyway, since mean(g) = gamma * dL/dbeta / M and
mean(g * x_hat) = gamma * dL/dgamma / M.
"""

from __future__ import annotations

import numpy as np

from .module import BatchLastCache, Module, Parameter
from .windows import from_batch_last


def _axes(x: np.ndarray) -> tuple:
    """Axes the statistics average over: (0,) for (N, F), (0, 2, 3) for (N, F, H, W)."""
    return (0,) if x.ndim == 2 else (0, 2, 3)


def batch_norm(x, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """The seed's ``batch_norm``, with the mode passed in.

    x (N, F) or (N, F, H, W); gamma, beta, moving_mean, moving_var (1, F) or (1, F, 1, 1).
    Returns (y, moving_mean, moving_var, cache): y has x's shape; the moving statistics are
    new arrays (updated in training mode, the same in evaluation); cache is
    (x_hat, inv_std, gamma) for ``batch_norm_backward``.
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
    return y, moving_mean, moving_var, (x_hat, inv_std, gamma)


def batch_norm_backward(grad_out, cache, training):
    """grad_out (shape of x) -> (grad_x, grad_gamma, grad_beta); the latter two (1, F[, 1, 1])."""
    x_hat, inv_std, gamma = cache
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


def row_sum(x: np.ndarray) -> np.ndarray:
    """x (F, M) -> (F, 1), the sum of each row: ``x.sum(axis=1, keepdims=True)``, written as
    an einsum, which is about 3x faster on long float32 rows than numpy's pairwise sum."""
    return np.einsum("fm->f", x)[:, None]


def row_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x, y (F, M) -> (F, 1), sum_m x[f, m] y[f, m], without the temporary x * y: one
    (1, M) @ (M, 1) product per row (f1m,fm1 -> f11)."""
    return (x[:, None, :] @ y[:, :, None])[:, 0]


def batch_norm_rows(x, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """``batch_norm`` on x (F, M), one row per feature; gamma ... moving_var are (F, 1).

    Returns (y (F, M), moving_mean, moving_var, cache) like ``batch_norm``; in evaluation
    mode the cache holds (x, moving_mean) where training mode holds x_hat.
    """
    M = x.dtype.type(x.shape[1])  # in x's dtype: numpy 1.x turns float32 / 147456 into float64
    if not training:
        # gamma (x - moving_mean) inv_std + beta as one scale and one shift per row: two
        # passes over x instead of four; backward recomputes x_hat if it is ever needed
        inv_std = 1.0 / np.sqrt(moving_var + eps)
        scale = gamma * inv_std
        y = x * scale
        y += beta - moving_mean * scale
        return y, moving_mean, moving_var, ((x, moving_mean), inv_std, gamma)
    else:
        batch_mean = row_sum(x) / M
        x_hat = x - batch_mean  # centered; divided by the standard deviation below
        batch_var = row_dot(x_hat, x_hat) / M
        inv_std = 1.0 / np.sqrt(batch_var + eps)
        x_hat *= inv_std
        moving_mean = momentum * moving_mean + (1.0 - momentum) * batch_mean
        moving_var = momentum * moving_var + (1.0 - momentum) * batch_var
    y = gamma * x_hat
    y += beta
    return y, moving_mean, moving_var, (x_hat, inv_std, gamma)


def batch_norm_rows_backward(grad_out, cache, training):
    """grad_out (F, M) -> (grad_x (F, M), grad_gamma (F, 1), grad_beta (F, 1))."""
    x_hat, inv_std, gamma = cache
    if not training:
        x, moving_mean = x_hat
        x_hat = (x - moving_mean) * inv_std
    M = x_hat.dtype.type(x_hat.shape[1])  # keeps float32 on numpy 1.x (see batch_norm_rows)
    grad_gamma = row_dot(grad_out, x_hat)
    grad_beta = row_sum(grad_out)
    if not training:
        return grad_out * (gamma * inv_std), grad_gamma, grad_beta
    # inv_std * (g - mean(g) - x_hat * mean(g x_hat)) with g = gamma * dL/dy, computed in
    # one array (no temporaries of x's size)
    grad_x = x_hat * (grad_gamma / M)  # x_hat mean(g x_hat) / gamma
    np.subtract(grad_out, grad_x, out=grad_x)
    grad_x -= grad_beta / M  # mean(g) / gamma
    grad_x *= gamma * inv_std
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

    def forward(self, x: np.ndarray) -> np.ndarray:
        layout = "(N, C)" if self.num_dims == 2 else "(N, C, H, W)"
        x = self._check_input(x, self.num_dims, layout, channels=self.num_features)
        dtype = x.dtype.type
        y, moving_mean, moving_var, cache = batch_norm(
            x, self.gamma.data, self.beta.data, self.moving_mean, self.moving_var,
            dtype(self.eps), dtype(self.momentum), self.training)
        # keep the buffers' dtype: numpy scalars of x's dtype never upcast float32
        self.moving_mean, self.moving_var = moving_mean, moving_var
        self.cache = (cache, self.training, x.shape)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache, training, x_shape = self._require_cache()
        grad_out = self._check_grad(grad_out, x_shape)
        grad_x, grad_gamma, grad_beta = batch_norm_backward(grad_out, cache, training)
        self.gamma.grad += grad_gamma
        self.beta.grad += grad_beta
        return grad_x

    # ------------------------------------------- the fast path, batch last (F, H, W, N) or (F, N)
    supports_batch_last = True

    def forward_batch_last(self, x: np.ndarray) -> np.ndarray:
        y, cache = self.scaled_forward_rows(x)
        self.cache = BatchLastCache((cache, x.shape))
        return y.reshape(x.shape)

    def backward_batch_last(self, grad_out: np.ndarray) -> np.ndarray:
        cache, x_shape = self._require_cache(batch_last=True)
        grad_out = self._check_grad(grad_out, x_shape, batch_last=True)
        return self.scaled_backward_rows(grad_out, cache).reshape(x_shape)

    def scaled_forward_rows(self, x: np.ndarray, scale: float = 1.0):
        """scale * BatchNorm(x) for a batch-last x (F, H, W, N) or (F, N), as rows (F, M),
        and the cache ``scaled_backward_rows`` needs; the moving statistics are updated as by
        ``forward``. scale * BatchNorm(x) is BatchNorm with scale * gamma and scale * beta
        (fused.py uses scale 1/2)."""
        layout = "(N, C)" if self.num_dims == 2 else "(N, C, H, W)"
        self._check_input(from_batch_last(x), self.num_dims, layout, channels=self.num_features)
        F, dtype = self.num_features, x.dtype.type
        scale = dtype(scale)
        rows = (self.gamma.data * scale, self.beta.data * scale, self.moving_mean,
                self.moving_var)
        y, moving_mean, moving_var, cache = batch_norm_rows(
            x.reshape(F, -1), *[array.reshape(F, 1) for array in rows],
            dtype(self.eps), dtype(self.momentum), self.training)
        shape = self.moving_mean.shape
        self.moving_mean, self.moving_var = moving_mean.reshape(shape), moving_var.reshape(shape)
        return y, (cache, self.training, scale)

    def scaled_backward_rows(self, grad_rows: np.ndarray, cache) -> np.ndarray:
        """grad_rows = dL/d(scale * BatchNorm(x)) as rows (F, M) -> dL/dx as rows (F, M); adds
        to gamma.grad and beta.grad. The row functions give the gradients for scale * gamma
        and scale * beta; times scale, those for gamma and beta."""
        cache, training, scale = cache
        grad_x, grad_gamma, grad_beta = batch_norm_rows_backward(
            grad_rows.reshape(self.num_features, -1), cache, training)
        self.gamma.grad += (grad_gamma * scale).reshape(self.gamma.shape)
        self.beta.grad += (grad_beta * scale).reshape(self.beta.shape)
        return grad_x
