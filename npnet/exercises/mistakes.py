"""The known mistakes: each one a small backward pass with the mistake planted in it.

A learner's backward is compared with the library's; when they differ, it is run against each
of these on the same inputs, and a mistake whose every output (dL/dx, each parameter's .grad,
or the error it raised) equals the learner's on every configuration is named as the likely
cause. ``examples/break_a_layer.py``'s three broken layers were the first ones.

Each mistake is the method the learner writes, ``backward(self, grad_out)`` (for the loss,
``backward(self, grad_losses=None)``), written as a plain function on the layer: it reads
``self.cache`` as the library's forward left it and adds into ``self.<param>.grad``. A few
also replace the forward (``forward=``), when the mistake is in what the forward keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..activation import sigmoid
from ..conv import conv2d_backward
from ..windows import col2im


@dataclass(frozen=True)
class Mistake:
    """A known mistake in one exercise's backward, and what to tell the learner about it."""

    exercise: str        # the exercise's name, e.g. "batch_norm"
    key: str             # a short name, e.g. "frozen_batch_statistics"
    title: str           # what the learner did, one line: "the batch-statistics terms are missing"
    why: str             # why that is wrong
    fix: str             # where the fix is (the formula, and the section of docs/backprop.md)
    backward: Callable   # the backward with the mistake planted in it
    forward: Callable | None = None  # a forward that keeps something else, if the mistake needs it

    def __repr__(self) -> str:
        return f"Mistake({self.exercise}.{self.key}: {self.title})"


MISTAKES: dict[str, list[Mistake]] = {}


def mistake(exercise: str, key: str, title: str, why: str, fix: str, forward=None):
    """Register the decorated backward as the known mistake ``exercise.key``."""
    def register(backward: Callable) -> Callable:
        MISTAKES.setdefault(exercise, []).append(
            Mistake(exercise, key, title, why, fix, backward, forward))
        return backward
    return register


def padded_shape(x_shape: tuple, padding: tuple) -> tuple:
    """(N, C, H, W) -> (N, C, H + 2 ph, W + 2 pw)."""
    return (*x_shape[:2], x_shape[2] + 2 * padding[0], x_shape[3] + 2 * padding[1])


def col2im_assigning(grad_windows: np.ndarray, shape: tuple, stride: tuple,
                     padding: tuple) -> np.ndarray:
    """``npnet.windows.col2im`` with ``=`` where it needs ``+=``: where windows overlap, the
    slab of the last kernel offset overwrites what the earlier ones put there."""
    N, C, Ho, Wo, kh, kw = grad_windows.shape
    sh, sw = stride
    grad_x_padded = np.zeros(shape, dtype=grad_windows.dtype)
    for a in range(kh):
        for b in range(kw):
            grad_x_padded[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw] = grad_windows[..., a, b]
    ph, pw = padding
    return grad_x_padded[:, :, ph:shape[2] - ph, pw:shape[3] - pw]


def col2im_uncropped(grad_windows: np.ndarray, shape: tuple, stride: tuple) -> np.ndarray:
    """``col2im`` that keeps the padding's border: dL/dx_padded, not dL/dx."""
    return col2im(grad_windows, shape, stride, (0, 0))


OVERLAP_WHY = ("where windows overlap (stride smaller than the kernel), a pixel lies in "
               "several windows and must collect the sum of their gradients; `=` keeps only "
               "the last one")

# ------------------------------------------------------------------------------- Linear
LINEAR_FIX = ('docs/backprop.md, section "Linear": dL/dx = dL/dy W (N, in), '
              'dL/dW = (dL/dy)^T x (out, in), dL/db = sum over n of dL/dy (out,)')


@mistake("linear", "transposed_weight_gradient",
         "the weight gradient is transposed: x^T dL/dy, shape (in, out), where W is (out, in)",
         "W is (out_features, in_features), so dL/dW must have that shape",
         "dL/dW = (dL/dy)^T x, (out, N) @ (N, in); " + LINEAR_FIX)
def linear_transposed_weight_gradient(self, grad_out):
    x, weight = self.cache
    self.weight.grad += x.T @ grad_out
    self.bias.grad += grad_out.sum(axis=0)
    return grad_out @ weight


@mistake("linear", "input_gradient_with_transposed_weight",
         "the input gradient uses W^T: dL/dy W^T instead of dL/dy W",
         "the forward multiplies by W^T, and a product goes backward through the transpose "
         "of what it multiplied by: (W^T)^T = W",
         "dL/dx = dL/dy W, (N, out) @ (out, in); " + LINEAR_FIX)
def linear_input_gradient_with_transposed_weight(self, grad_out):
    x, weight = self.cache
    self.weight.grad += grad_out.T @ x
    self.bias.grad += grad_out.sum(axis=0)
    return grad_out @ weight.T


@mistake("linear", "bias_gradient_mean",
         "the bias gradient is the mean over the batch instead of the sum",
         "b is added to every row n, so each row's gradient reaches it: they add up (the 1/N "
         "of a mean loss is already in dL/dy)",
         "dL/db = grad_out.sum(axis=0); " + LINEAR_FIX)
def linear_bias_gradient_mean(self, grad_out):
    x, weight = self.cache
    self.weight.grad += grad_out.T @ x
    self.bias.grad += grad_out.mean(axis=0)
    return grad_out @ weight


@mistake("linear", "weight_gradient_divided_by_n",
         "the weight gradient is divided by the batch size N",
         "dL/dy already holds the loss's 1/N; dividing again makes the step N times too small",
         "dL/dW = (dL/dy)^T x, no 1/N; " + LINEAR_FIX)
def linear_weight_gradient_divided_by_n(self, grad_out):
    x, weight = self.cache
    self.weight.grad += grad_out.T @ x / len(x)
    self.bias.grad += grad_out.sum(axis=0)
    return grad_out @ weight


@mistake("linear", "bias_gradient_missing",
         "the bias gradient is not added into self.bias.grad",
         "b changes the output, so it has a gradient, and backward must add it",
         "self.bias.grad += grad_out.sum(axis=0); " + LINEAR_FIX)
def linear_bias_gradient_missing(self, grad_out):
    x, weight = self.cache
    self.weight.grad += grad_out.T @ x
    return grad_out @ weight


# ------------------------------------------------------------------------------- Conv2d
CONV_FIX = ('docs/backprop.md, section "Conv2d": dL/dW = tensordot(dL/dy, cols) (O, C, kh, kw), '
            'dL/db = sum over (n, i, j), dL/dx = crop(col2im(tensordot(dL/dy, W)))')


def _conv_parts(self, grad_out):
    """The library's three gradients, and the windows' gradient (the layout of cols)."""
    grad_x, grad_weight, grad_bias = conv2d_backward(grad_out, self.cache)
    grad_cols = np.tensordot(grad_out, self.cache.weight, axes=([1], [0]))  # nijCab
    return grad_x, grad_weight, grad_bias, grad_cols.transpose(0, 3, 1, 2, 4, 5)  # nCijab


@mistake("conv2d", "kernel_rows_and_columns_swapped",
         "the weight gradient has the kernel's rows and columns swapped: dW[o, c, b, a] "
         "where dW[o, c, a, b] belongs",
         "a transpose that keeps the shape of a square kernel (examples/break_a_layer.py, "
         "--layer conv); for a kh x kw kernel with kh != kw the shapes do not even fit",
         "keep the axes in the order (o, c, a, b) of W, a the row and b the column of the "
         "kernel; " + CONV_FIX)
def conv_kernel_rows_and_columns_swapped(self, grad_out):
    grad_x, grad_weight, grad_bias, _ = _conv_parts(self, grad_out)
    self.weight.grad += grad_weight.transpose(0, 1, 3, 2)
    self.bias.grad += grad_bias
    return grad_x


@mistake("conv2d", "col2im_assigns",
         "the input gradient puts the windows back with `=` instead of `+=` (col2im)",
         OVERLAP_WHY,
         "grad_x_padded[:, :, a:a + sh * Ho:sh, b:b + sw * Wo:sw] += ... (npnet/windows.py: "
         "col2im); " + CONV_FIX)
def conv_col2im_assigns(self, grad_out):
    cols, weight, x_shape, stride, padding = self.cache
    _, grad_weight, grad_bias, grad_cols = _conv_parts(self, grad_out)
    self.weight.grad += grad_weight
    self.bias.grad += grad_bias
    return col2im_assigning(grad_cols, padded_shape(x_shape, padding), stride, padding)


@mistake("conv2d", "padding_not_cropped",
         "the input gradient keeps the padding's border: shape (N, C, H + 2 ph, W + 2 pw)",
         "the padded zeros are constants, not inputs: the gradient that lands on them is "
         "dropped (the transpose of padding is cropping)",
         "cut ph rows and pw columns off each side of dL/dx_padded; " + CONV_FIX)
def conv_padding_not_cropped(self, grad_out):
    cols, weight, x_shape, stride, padding = self.cache
    _, grad_weight, grad_bias, grad_cols = _conv_parts(self, grad_out)
    self.weight.grad += grad_weight
    self.bias.grad += grad_bias
    return col2im_uncropped(grad_cols, padded_shape(x_shape, padding), stride)


@mistake("conv2d", "bias_gradient_over_the_batch_only",
         "the bias gradient sums over the batch only, as in Linear, not over (H, W) too",
         "b[o] is added at every output pixel (i, j) of channel o, so it collects the sum over "
         "n, i and j",
         "dL/db = grad_out.sum(axis=(0, 2, 3)); " + CONV_FIX)
def conv_bias_gradient_over_the_batch_only(self, grad_out):
    grad_x, grad_weight, _, _ = _conv_parts(self, grad_out)
    self.weight.grad += grad_weight
    self.bias.grad += grad_out.sum(axis=0)
    return grad_x


@mistake("conv2d", "bias_gradient_mean",
         "the bias gradient is a mean over (n, i, j) instead of a sum",
         "b[o] is added at every (n, i, j): each of those gradients reaches it, and they add up",
         "dL/db = grad_out.sum(axis=(0, 2, 3)); " + CONV_FIX)
def conv_bias_gradient_mean(self, grad_out):
    grad_x, grad_weight, _, _ = _conv_parts(self, grad_out)
    self.weight.grad += grad_weight
    self.bias.grad += grad_out.mean(axis=(0, 2, 3))
    return grad_x


# ---------------------------------------------------------------------------- AvgPool2d
POOL_FIX = 'docs/backprop.md, section "Pooling"'


def _avg_share(self, grad_out):
    """Each window entry's share of the window's gradient, 1/(kh kw), over (kh, kw)."""
    kh, kw = self.cache.kernel_size
    return np.broadcast_to((grad_out / (kh * kw))[..., None, None], (*grad_out.shape, kh, kw))


@mistake("avg_pool2d", "not_divided_by_window_size",
         "the gradient is not divided by kh * kw",
         "each output is the mean of kh * kw entries, so each entry gets 1/(kh kw) of its "
         "gradient",
         "share = grad_out / (kh * kw), repeated over the window; " + POOL_FIX)
def avg_not_divided_by_window_size(self, grad_out):
    x_shape, (kh, kw), stride, padding = self.cache
    grad_windows = np.broadcast_to(grad_out[..., None, None], (*grad_out.shape, kh, kw))
    return col2im(grad_windows, padded_shape(x_shape, padding), stride, padding)


@mistake("avg_pool2d", "col2im_assigns",
         "the windows' gradients are put back with `=` instead of `+=`",
         OVERLAP_WHY,
         "add each kernel offset's slab with += (npnet/windows.py: col2im); " + POOL_FIX)
def avg_col2im_assigns(self, grad_out):
    x_shape, _, stride, padding = self.cache
    return col2im_assigning(_avg_share(self, grad_out), padded_shape(x_shape, padding),
                            stride, padding)


@mistake("avg_pool2d", "padding_not_cropped",
         "the input gradient keeps the padding's border: shape (N, C, H + 2 ph, W + 2 pw)",
         "the padded zeros are not inputs; the gradient that lands on them is dropped",
         "cut ph rows and pw columns off each side of dL/dx_padded; " + POOL_FIX)
def avg_padding_not_cropped(self, grad_out):
    x_shape, _, stride, padding = self.cache
    return col2im_uncropped(_avg_share(self, grad_out), padded_shape(x_shape, padding), stride)


# ---------------------------------------------------------------------------- MaxPool2d
# The exercise's forward keeps the windows (npnet.exercises.catalogue.MaxPool2dKeepingWindows):
# cache = (windows (N, C, Ho, Wo, kh, kw), x_shape).
def _first_maximum(windows):
    """One-hot over each window: 1 at its first maximum in row-major order (the library's)."""
    N, C, Ho, Wo, kh, kw = windows.shape
    winner = windows.reshape(N, C, Ho, Wo, kh * kw).argmax(axis=4)
    return (winner[..., None] == np.arange(kh * kw)).reshape(windows.shape)


def _route(self, grad_out, share, put_back=col2im):
    """grad_out times ``share`` (N, C, Ho, Wo, kh, kw), back onto dL/dx."""
    windows, x_shape = self.cache
    grad_windows = grad_out[..., None, None] * share
    return put_back(grad_windows, padded_shape(x_shape, self.padding), self.stride, self.padding)


@mistake("max_pool2d", "every_tied_maximum",
         "the gradient goes to every entry equal to the window's maximum, not to one",
         "where several entries tie for the maximum, `windows == max` marks them all and the "
         "gradient is counted several times; npnet (as PyTorch) gives it to the first one, in "
         "row-major order",
         "mark the first maximum only: argmax over the flattened window, then a one-hot; "
         + POOL_FIX + ', "Max pooling"')
def max_every_tied_maximum(self, grad_out):
    windows, _ = self.cache
    return _route(self, grad_out, windows == windows.max(axis=(4, 5), keepdims=True))


@mistake("max_pool2d", "shared_among_tied_maxima",
         "the gradient is split evenly among the tied maxima of a window",
         "a valid choice at a tie, but not npnet's (nor PyTorch's): it gives the whole "
         "gradient to the first maximum, in row-major order",
         "mark the first maximum only: argmax over the flattened window, then a one-hot; "
         + POOL_FIX + ', "Max pooling"')
def max_shared_among_tied_maxima(self, grad_out):
    windows, _ = self.cache
    is_max = windows == windows.max(axis=(4, 5), keepdims=True)
    return _route(self, grad_out, is_max / is_max.sum(axis=(4, 5), keepdims=True))


@mistake("max_pool2d", "col2im_assigns",
         "the windows' gradients are put back with `=` instead of `+=`",
         OVERLAP_WHY + " (a pixel can be the maximum of several overlapping windows)",
         "add each kernel offset's slab with += (npnet/windows.py: col2im); " + POOL_FIX)
def max_col2im_assigns(self, grad_out):
    return _route(self, grad_out, _first_maximum(self.cache.windows), col2im_assigning)


@mistake("max_pool2d", "spread_over_the_window",
         "the gradient is spread evenly over the window, as in average pooling",
         "the output is one entry of the window (the maximum), so only that entry moves it",
         "route the whole gradient to the first maximum of each window; " + POOL_FIX)
def max_spread_over_the_window(self, grad_out):
    kh, kw = self.kernel_size
    return _route(self, grad_out, np.full(self.cache.windows.shape, 1 / (kh * kw)))


@mistake("max_pool2d", "routed_to_the_minimum",
         "the gradient goes to the window's minimum (argmin) instead of its maximum",
         "the output is the maximum entry, so only that entry moves it",
         "argmax, not argmin; " + POOL_FIX)
def max_routed_to_the_minimum(self, grad_out):
    return _route(self, grad_out, _first_maximum(-self.cache.windows))


# ------------------------------------------------------------------------------ Sigmoid
SIGMOID_FIX = ('dL/dx = dL/dy * y * (1 - y), with y the output the forward kept; '
               'docs/backprop.md, section "Activations"')


@mistake("sigmoid", "slope_s",
         "the slope is written s instead of s (1 - s)",
         "sigma'(x) = sigma(x) (1 - sigma(x)); the factor (1 - y) is missing",
         SIGMOID_FIX)
def sigmoid_slope_s(self, grad_out):
    return grad_out * self.cache


def _forward_keeping_x(self, x):
    """A Sigmoid forward that keeps its input x instead of its output y."""
    x = self.checked_input(x)
    self.cache = x
    return sigmoid(x)


@mistake("sigmoid", "slope_from_the_input",
         "the slope is x (1 - x), from the input x, instead of y (1 - y) from the output",
         "the derivative is sigma(x) (1 - sigma(x)) = y (1 - y): it needs y, not x "
         "(examples/break_a_layer.py, --layer sigmoid)",
         "keep y in the forward (self.cache = y) and use y (1 - y); " + SIGMOID_FIX,
         forward=_forward_keeping_x)
def sigmoid_slope_from_the_input(self, grad_out):
    x = self.cache
    return grad_out * x * (1 - x)


@mistake("sigmoid", "sigmoid_of_the_output",
         "the sigmoid is applied again to the cached output: sigma(y) (1 - sigma(y))",
         "the cache already holds y = sigma(x); sigma(y) is sigma(sigma(x))",
         "use the cached y directly: y * (1 - y); " + SIGMOID_FIX)
def sigmoid_sigmoid_of_the_output(self, grad_out):
    s = sigmoid(self.cache)
    return grad_out * s * (1 - s)


@mistake("sigmoid", "tanh_slope",
         "the slope is 1 - y^2, the derivative of tanh",
         "tanh'(x) = 1 - tanh(x)^2, but sigma'(x) = sigma(x) (1 - sigma(x))",
         SIGMOID_FIX)
def sigmoid_tanh_slope(self, grad_out):
    return grad_out * (1 - self.cache * self.cache)


# ------------------------------------------------------------------------ cross-entropy
CE_FIX = ('dL/dz = (softmax(z) - one_hot(labels)) / N, softmax(z) = np.exp(log_probs); '
          'docs/backprop.md, section "Softmax cross-entropy"')


def _one_hot(log_probs, labels):
    one_hot = np.zeros_like(log_probs)
    one_hot[np.arange(len(labels)), labels] = 1
    return one_hot


@mistake("cross_entropy", "missing_1_over_n",
         "the 1/N of the mean is missing: softmax(z) - one_hot",
         "the loss is the mean over N samples, so each sample's gradient carries a factor 1/N",
         "divide by N = len(labels); " + CE_FIX)
def ce_missing_1_over_n(self, grad_losses=None):
    log_probs, labels = self.cache
    return np.exp(log_probs) - _one_hot(log_probs, labels)


@mistake("cross_entropy", "divided_by_the_number_of_entries",
         "divided by N K (every entry of the logits) instead of N",
         "the loss averages N per-sample losses, not the N K logits",
         "divide by N = log_probs.shape[0]; " + CE_FIX)
def ce_divided_by_the_number_of_entries(self, grad_losses=None):
    log_probs, labels = self.cache
    return (np.exp(log_probs) - _one_hot(log_probs, labels)) / log_probs.size


@mistake("cross_entropy", "one_hot_not_subtracted",
         "the one-hot of the labels is not subtracted: softmax(z) / N",
         "d(-log p[label]) / dz[k] = p[k] - [k = label]: the label's entry gets p - 1",
         "subtract 1 at each row's label, grad[np.arange(N), labels] -= 1; " + CE_FIX)
def ce_one_hot_not_subtracted(self, grad_losses=None):
    log_probs, labels = self.cache
    return np.exp(log_probs) / len(labels)


@mistake("cross_entropy", "softmax_missing",
         "the one-hot is subtracted without the softmax: -one_hot / N",
         "every logit moves the softmax, so every entry gets p[k], not only the label's",
         "start from softmax(z) = np.exp(log_probs); " + CE_FIX)
def ce_softmax_missing(self, grad_losses=None):
    log_probs, labels = self.cache
    return -_one_hot(log_probs, labels) / len(labels)


@mistake("cross_entropy", "log_probabilities_for_probabilities",
         "the log-probabilities are used where the probabilities belong (np.exp is missing)",
         "the cache holds log softmax(z); the gradient needs softmax(z) = exp of it",
         "p = np.exp(log_probs); " + CE_FIX)
def ce_log_probabilities_for_probabilities(self, grad_losses=None):
    log_probs, labels = self.cache
    return (log_probs - _one_hot(log_probs, labels)) / len(labels)


@mistake("cross_entropy", "sign_flipped",
         "the sign is flipped: (one_hot - softmax(z)) / N",
         "that is the gradient of +log p[label]: gradient descent would make the loss grow",
         CE_FIX)
def ce_sign_flipped(self, grad_losses=None):
    log_probs, labels = self.cache
    return (_one_hot(log_probs, labels) - np.exp(log_probs)) / len(labels)


# ---------------------------------------------------------------------------- BatchNorm
BN_FIX = ('docs/backprop.md, section "BatchNorm": with g = gamma * dL/dy, training mode '
          'dL/dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), evaluation mode '
          'dL/dx = inv_std * g; dL/dgamma = sum(dL/dy * x_hat), dL/dbeta = sum(dL/dy)')


def _bn_cache(self):
    """x_hat, inv_std, gamma, training and the axes of the statistics."""
    x_hat, inv_std, gamma, training = self.cache
    return x_hat, inv_std, gamma, training, ((0,) if x_hat.ndim == 2 else (0, 2, 3))


def _bn_parameter_gradients(self, grad_out, x_hat, axes, reduce="sum", use_x_hat=True):
    def total(values):
        return getattr(values, reduce)(axis=axes, keepdims=True)
    self.gamma.grad += total(grad_out * x_hat if use_x_hat else grad_out)
    self.beta.grad += total(grad_out)


def _bn_grad_x(g, x_hat, inv_std, axes, mean_term=True, variance_term=True):
    grad_x_hat = g
    if mean_term:
        grad_x_hat = grad_x_hat - g.mean(axis=axes, keepdims=True)
    if variance_term:
        grad_x_hat = grad_x_hat - x_hat * (g * x_hat).mean(axis=axes, keepdims=True)
    return inv_std * grad_x_hat


@mistake("batch_norm", "frozen_batch_statistics",
         "the batch-statistics terms are missing: the evaluation-mode formula in training mode",
         "in training mode every x[m] moves the batch mean and variance that normalize all the "
         "others; dL/dx = inv_std * g treats them as constants "
         "(examples/break_a_layer.py, --layer batchnorm)",
         "subtract mean(g) (the path through batch_mean) and x_hat * mean(g * x_hat) (through "
         "batch_var) when cache.training; " + BN_FIX)
def bn_frozen_batch_statistics(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes)
    return grad_out * gamma * inv_std


@mistake("batch_norm", "variance_term_missing",
         "the path through the batch variance is missing: only mean(g) is subtracted",
         "x[m] moves batch_var too, which scales every x_hat: the term x_hat * mean(g * x_hat)",
         "subtract x_hat * mean(g * x_hat) as well; " + BN_FIX)
def bn_variance_term_missing(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes)
    return _bn_grad_x(grad_out * gamma, x_hat, inv_std, axes, mean_term=training,
                      variance_term=False)


@mistake("batch_norm", "mean_term_missing",
         "the path through the batch mean is missing: only x_hat * mean(g * x_hat) is "
         "subtracted",
         "x[m] moves batch_mean, which is subtracted from every x: the term mean(g)",
         "subtract mean(g) as well; " + BN_FIX)
def bn_mean_term_missing(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes)
    return _bn_grad_x(grad_out * gamma, x_hat, inv_std, axes, mean_term=False,
                      variance_term=training)


@mistake("batch_norm", "gamma_not_applied",
         "gamma is missing from dL/dx: the gradient reaching x_hat is dL/dy, not gamma * dL/dy",
         "y = gamma * x_hat + beta, so dL/dx_hat = gamma * dL/dy (invisible while gamma is 1, "
         "as it starts)",
         "g = grad_out * gamma, then the formula with g; " + BN_FIX)
def bn_gamma_not_applied(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes)
    return _bn_grad_x(grad_out, x_hat, inv_std, axes, training, training)


@mistake("batch_norm", "gamma_gradient_without_x_hat",
         "dL/dgamma is sum(dL/dy), without the factor x_hat",
         "gamma multiplies x_hat, so its gradient is sum(dL/dy * x_hat); sum(dL/dy) is beta's",
         "dL/dgamma = (grad_out * x_hat).sum(axes); " + BN_FIX)
def bn_gamma_gradient_without_x_hat(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes, use_x_hat=False)
    return _bn_grad_x(grad_out * gamma, x_hat, inv_std, axes, training, training)


@mistake("batch_norm", "parameter_gradients_mean",
         "dL/dgamma and dL/dbeta are means over the batch instead of sums",
         "gamma and beta are broadcast over the M values of a feature: each one's gradient "
         "reaches them, and they add up",
         "sum over the axes, (0,) or (0, 2, 3); " + BN_FIX)
def bn_parameter_gradients_mean(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes, reduce="mean")
    return _bn_grad_x(grad_out * gamma, x_hat, inv_std, axes, training, training)


@mistake("batch_norm", "statistics_over_the_batch_axis_only",
         "the sums and means run over axis 0 only; for (N, C, H, W) the statistics are per "
         "channel, over (0, 2, 3)",
         "after a convolution, BatchNorm normalizes each channel over the batch and every "
         "pixel: M = N H W values share one mean and variance",
         "axes = (0,) for (N, C), (0, 2, 3) for (N, C, H, W), with keepdims=True; " + BN_FIX)
def bn_statistics_over_the_batch_axis_only(self, grad_out):
    x_hat, inv_std, gamma, training, _ = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, (0,))
    return _bn_grad_x(grad_out * gamma, x_hat, inv_std, (0,), training, training)


@mistake("batch_norm", "training_formula_in_evaluation_mode",
         "the training-mode formula is used in evaluation mode too",
         "in evaluation mode x_hat uses the moving averages, constants that do not depend on "
         "x: only the direct path inv_std * g is left",
         "if not cache.training: return inv_std * g; " + BN_FIX)
def bn_training_formula_in_evaluation_mode(self, grad_out):
    x_hat, inv_std, gamma, training, axes = _bn_cache(self)
    _bn_parameter_gradients(self, grad_out, x_hat, axes)
    return _bn_grad_x(grad_out * gamma, x_hat, inv_std, axes)
