"""BatchNorm on the batch-last layout: each feature's M values are one contiguous row.

With x (F, H, W, N) or (F, N), x.reshape(F, M) has one row per feature, and npnet/batchnorm.py's
statistics are row means. ``batch_norm_rows`` / ``batch_norm_rows_backward`` are its formulas on
those rows; the backward reuses the two sums it computes anyway, since
mean(g) = gamma * dL/dbeta / M and mean(g * x_hat) = gamma * dL/dgamma / M (g = gamma dL/dy).

``scaled_forward`` / ``scaled_backward`` compute scale * BatchNorm(x), which is BatchNorm with
scale * gamma and scale * beta: the kernel uses scale 1, the fused step (fused.py) 1/2.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernel import Kernel
from .layout import from_batch_last
from .workers import batch_parts, batch_total


# Values per partial sum. A running float32 sum of M values can be off by about M * eps
# (a row of LeNet's first BatchNorm holds 256 * 24 * 24 = 147,456 values): the rows are summed
# in blocks of BLOCK values, then the partial sums pairwise (numpy's sum along a contiguous
# axis), so the error stays near that of one block, whatever M is.
BLOCK = 1024


def row_sum(x: np.ndarray) -> np.ndarray:
    """x (F, M) -> (F, 1), the sum of each row, in blocks (see BLOCK). einsum, which is faster
    on long float32 rows than numpy's own sum over the rows of a batch-last array."""
    F, M = x.shape
    if M <= BLOCK:
        return np.einsum("fm->f", x)[:, None]
    whole = M - M % BLOCK
    # (F, M // BLOCK, BLOCK) is a view of x's first `whole` columns: no copy
    total = np.einsum("fbk->fb", x[:, :whole].reshape(F, -1, BLOCK)).sum(axis=1)
    total += np.einsum("fm->f", x[:, whole:])
    return total[:, None]


def row_dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x, y (F, M) -> (F, 1), sum_m x[f, m] y[f, m], in blocks (see BLOCK), without the
    temporary x * y: one (1, BLOCK) @ (BLOCK, 1) product per block (fb1k,fbk1 -> fb11)."""
    F, M = x.shape
    if M <= BLOCK:
        return (x[:, None, :] @ y[:, :, None])[:, 0]
    whole = M - M % BLOCK
    blocks = (x[:, :whole].reshape(F, -1, 1, BLOCK) @ y[:, :whole].reshape(F, -1, BLOCK, 1))
    total = blocks[:, :, 0, 0].sum(axis=1)
    total += (x[:, None, whole:] @ y[:, whole:, None])[:, 0, 0]
    return total[:, None]


def centered(x: np.ndarray) -> tuple:
    """x (F, M) -> (mean (F, 1), sum of squared deviations from it (F, 1), x - mean (F, M))."""
    mean = row_sum(x) / x.dtype.type(x.shape[1])
    deviations = x - mean
    return mean, row_dot(deviations, deviations), deviations


def combine_statistics(parts: list) -> tuple:
    """[(count, mean, squares), ...] of parts of a batch -> (count, mean, squares) of the whole
    batch, where squares is the sum of squared deviations from the mean (F, 1).

    Chan, Golub and LeVeque's pairwise update: with delta = mean_b - mean_a and n = n_a + n_b,
        mean    = mean_a + delta n_b / n
        squares = squares_a + squares_b + delta^2 n_a n_b / n
    Each part is centered on its own mean, so no large sums of squares cancel (as
    sum(x^2) - n mean^2 would), and one exchange between workers brings both statistics.
    One part is returned as it is."""
    count, mean, squares = parts[0]
    for part_count, part_mean, part_squares in parts[1:]:
        total = count + part_count
        delta = part_mean - mean
        mean = mean + delta * (part_count / total)
        squares = squares + part_squares + delta * delta * (count * part_count / total)
        count = total
    return count, mean, squares


class RowsCache(NamedTuple):
    centered: np.ndarray | None    # (F, M) x - batch mean in training mode; x_hat = centered
    #                                inv_std, never written out (one pass fewer each way)
    x: np.ndarray | None           # (F, M) in evaluation mode
    moving_mean: np.ndarray | None  # (F, 1) in evaluation mode, to center x if ever needed
    inv_std: np.ndarray            # (F, 1)
    gamma: np.ndarray              # (F, 1)
    training: bool
    count: int = 0                 # values per feature in the whole batch (training mode)


def batch_norm_rows(x, gamma, beta, moving_mean, moving_var, eps, momentum, training):
    """npnet.batch_norm on x (F, M), one row per feature; gamma ... moving_var are (F, 1).

    Returns (y (F, M), moving_mean, moving_var, cache). M and the statistics are in x's
    dtype (numpy 1.x turns float32 / 147456 into float64).
    """
    if not training:
        # gamma (x - moving_mean) inv_std + beta as one scale and one shift per row: two
        # passes over x instead of four; backward centers x if it is ever needed
        inv_std = 1.0 / np.sqrt(moving_var + eps)
        scale = gamma * inv_std
        y = x * scale
        y += beta - moving_mean * scale
        return y, moving_mean, moving_var, RowsCache(None, x, moving_mean, inv_std, gamma,
                                                     False)
    part_mean, squares, centered_x = centered(x)
    # over the whole batch when workers (workers.py) each hold a part of it
    count, batch_mean, squares = combine_statistics(
        batch_parts(x.shape[1], part_mean, squares))
    if count != x.shape[1]:  # this part was centered on its own mean: on the batch's now
        centered_x -= batch_mean - part_mean
    batch_var = squares / x.dtype.type(count)
    inv_std = 1.0 / np.sqrt(batch_var + eps)
    moving_mean = momentum * moving_mean + (1.0 - momentum) * batch_mean
    moving_var = momentum * moving_var + (1.0 - momentum) * batch_var
    y = centered_x * (gamma * inv_std)  # gamma x_hat
    y += beta
    return y, moving_mean, moving_var, RowsCache(centered_x, None, None, inv_std, gamma, True,
                                                 count)


def batch_norm_rows_backward(grad_out, cache: RowsCache, grad_is_spare: bool = False):
    """grad_out (F, M) -> (grad_x (F, M), grad_gamma (F, 1), grad_beta (F, 1)); with workers,
    grad_gamma and grad_beta are this part's share (the workers' shares add up).

    The cache is used up (its centered x becomes a temporary); with ``grad_is_spare``, so is
    grad_out, which becomes grad_x: an operation in place touches one array instead of two,
    which on LeNet's first BatchNorm (3.5 MB) takes 0.16 ms instead of 0.4."""
    centered_x, x, moving_mean, inv_std, gamma, training, count = cache
    if not training:
        centered_x = x - moving_mean
    grad_gamma = row_dot(grad_out, centered_x) * inv_std  # sum(dL/dy x_hat)
    grad_beta = row_sum(grad_out)
    if not training:
        return grad_out * (gamma * inv_std), grad_gamma, grad_beta
    sum_grad_gamma, sum_grad_beta = batch_total(grad_gamma, grad_beta)  # the whole batch's
    M = centered_x.dtype.type(count)  # keeps float32 on numpy 1.x (see batch_norm_rows)
    # inv_std * (g - mean(g) - x_hat * mean(g x_hat)) with g = gamma * dL/dy, computed in
    # one array (no temporaries of x's size)
    centered_x *= inv_std * sum_grad_gamma / M  # x_hat mean(g x_hat) / gamma
    grad_x = grad_out if grad_is_spare else np.empty_like(grad_out)
    np.subtract(grad_out, centered_x, out=grad_x)
    grad_x -= sum_grad_beta / M  # mean(g) / gamma
    grad_x *= gamma * inv_std
    return grad_x, grad_gamma, grad_beta


def scaled_forward(layer, x: np.ndarray, scale: float = 1.0):
    """scale * layer(x) for a batch-last x (F, H, W, N) or (F, N), as rows (F, M), and the cache
    ``scaled_backward`` needs; the layer's moving statistics are updated as by its forward."""
    layer.checked_input(from_batch_last(x))
    F, dtype = layer.num_features, x.dtype.type
    scale = dtype(scale)
    rows = (layer.gamma.data * scale, layer.beta.data * scale, layer.moving_mean,
            layer.moving_var)
    y, moving_mean, moving_var, cache = batch_norm_rows(
        x.reshape(F, -1), *[array.reshape(F, 1) for array in rows],
        dtype(layer.eps), dtype(layer.momentum), layer.training)
    shape = layer.moving_mean.shape
    layer.moving_mean, layer.moving_var = moving_mean.reshape(shape), moving_var.reshape(shape)
    return y, (cache, scale)


def scaled_backward(layer, grad_rows: np.ndarray, cache, grad_is_spare: bool = False):
    """grad_rows = dL/d(scale * layer(x)) as rows (F, M) -> dL/dx as rows (F, M); adds to
    gamma.grad and beta.grad. The row functions give the gradients for scale * gamma and
    scale * beta; times scale, those for gamma and beta. ``grad_is_spare``: grad_rows may be
    overwritten (see batch_norm_rows_backward)."""
    cache, scale = cache
    grad_x, grad_gamma, grad_beta = batch_norm_rows_backward(
        grad_rows.reshape(layer.num_features, -1), cache, grad_is_spare)
    layer.gamma.grad += (grad_gamma * scale).reshape(layer.gamma.shape)
    layer.beta.grad += (grad_beta * scale).reshape(layer.beta.shape)
    return grad_x


class BatchNormKernel(Kernel):
    """BatchNorm: x (F, H, W, N) or (F, N) -> y of the same shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, rows_cache = scaled_forward(self.layers[0], x)
        self.cache = (rows_cache, x.shape)
        return y.reshape(x.shape)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        rows_cache, x_shape = self.require_cache()
        self.cache = None  # used up (batch_norm_rows_backward)
        return scaled_backward(self.layers[0], grad_out, rows_cache).reshape(x_shape)
