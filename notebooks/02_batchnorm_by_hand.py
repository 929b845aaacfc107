# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Batch normalization by hand: forward, backward, and a finite difference
#
# The seed writes `batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum)` in
# PyTorch and lets autograd find its gradient. npnet has no autograd: `npnet/batchnorm.py`
# holds the same function, `npnet.batch_norm`, and its gradient written out,
# `npnet.batch_norm_backward` (derived in `docs/backprop.md`, section "BatchNorm").
#
# Here we write both again, in a few lines of NumPy each, compare them with npnet's, and
# check the backward against the slope measured by nudging the input. Everything is in
# float64, so "equal" means equal to about 1e-15.
#
# **Look at**: the three paths by which an input reaches the output (directly, through the
# batch mean, through the batch variance), and what each adds to the gradient.

# %%
import numpy as np

import npnet

rng = np.random.default_rng(7)
N, C, H, W = 8, 3, 5, 5                       # a batch of 8 feature maps with 3 channels
x = rng.normal(2.0, 3.0, (N, C, H, W))        # deliberately not mean 0, std 1
gamma = rng.uniform(0.5, 2.0, (1, C, 1, 1))   # "stretch", one per channel
beta = rng.normal(size=(1, C, 1, 1))          # "shift", one per channel
moving_mean, moving_var = np.zeros((1, C, 1, 1)), np.ones((1, C, 1, 1))
eps, momentum = 1e-5, 0.9                     # the seed's values


def largest(differences):
    """Print each max |ours - npnet's|; return the largest."""
    for name, value in differences.items():
        print(f"{name:<24} {float(value):.1e}")
    return max(float(value) for value in differences.values())

# %% [markdown]
# ## Forward, training mode
#
# After a convolution the statistics are per channel: the mean over the batch **and** over
# every pixel, axes `(0, 2, 3)`, kept as `(1, C, 1, 1)` so they broadcast against x (after a
# fully connected layer it is axis 0 alone). The variance is the biased one, divided by the
# number of values M = N * H * W, as in the seed.

# %%
axes = (0, 2, 3)
M = N * H * W
batch_mean = x.mean(axis=axes, keepdims=True)                    # (1, C, 1, 1)
batch_var = ((x - batch_mean) ** 2).mean(axis=axes, keepdims=True)
inv_std = 1.0 / np.sqrt(batch_var + eps)
x_hat = (x - batch_mean) * inv_std                               # mean 0, std ~1 per channel
y = gamma * x_hat + beta                                          # scale and shift
new_moving_mean = momentum * moving_mean + (1 - momentum) * batch_mean
new_moving_var = momentum * moving_var + (1 - momentum) * batch_var

# %% [markdown]
# What the layer promises: per channel, the output has mean `beta` and standard deviation
# `gamma` (times `sqrt(var / (var + eps))`, a hair below 1), whatever the input's scale.

# %%
print("input  mean per channel:", x.mean(axis=axes).round(3), " std:", x.std(axis=axes).round(3))
print("output mean per channel:", y.mean(axis=axes).round(3), " std:", y.std(axis=axes).round(3))
print("beta:", beta.ravel().round(3), " gamma:", gamma.ravel().round(3))
assert np.abs(y.mean(axis=axes) - beta.ravel()).max() < 1e-12
shrink = np.sqrt(batch_var / (batch_var + eps)).ravel()
assert np.abs(y.std(axis=axes) - gamma.ravel() * shrink).max() < 1e-12

# %% [markdown]
# npnet's `batch_norm` takes the same arguments plus the mode, and returns the output, the
# new moving statistics and a cache for the backward. Ours and npnet's agree to rounding.

# %%
y_npnet, mm_npnet, mv_npnet, cache = npnet.batch_norm(
    x, gamma, beta, moving_mean, moving_var, eps, momentum, training=True)
differences = {
    "y": np.abs(y - y_npnet).max(),
    "moving_mean": np.abs(new_moving_mean - mm_npnet).max(),
    "moving_var": np.abs(new_moving_var - mv_npnet).max(),
}
assert largest(differences) < 1e-12

# %% [markdown]
# `momentum = 0.9` weights the **old** moving value, as in the seed: after one batch the
# moving mean has moved a tenth of the way from 0 to the batch mean. (PyTorch's
# `nn.BatchNorm2d` writes the same weights as `momentum=0.1` on the *new* value, and updates
# its running variance with the unbiased variance.)

# %%
print("batch mean:", batch_mean.ravel().round(4), " moving mean:", mm_npnet.ravel().round(4))
assert np.allclose(mm_npnet, 0.1 * batch_mean, rtol=1e-14, atol=0)

# %% [markdown]
# ## Backward, training mode, one path at a time
#
# Take any upstream gradient `grad_out` = dL/dy (here random: see the end of this notebook
# for why not all ones). Following the graph backward from y:
#
# 1. `gamma` and `beta` are broadcast over the M values of their channel, so their gradients
#    are sums: dL/dgamma = sum(grad_out * x_hat), dL/dbeta = sum(grad_out).
# 2. Into x_hat: g = dL/dx_hat = gamma * grad_out.
# 3. Through the variance: x_hat = (x - mean) (var + eps)^(-1/2), so
#    dL/dvar = sum(g * (x - mean)) * (-1/2) (var + eps)^(-3/2).
# 4. Through the mean: directly -inv_std per value (the path through var contributes
#    nothing, since sum(x - mean) = 0): dL/dmean = -inv_std * sum(g).
# 5. Collect the three paths into each x_k: directly (inv_std), through var
#    (d var / d x_k = 2 (x_k - mean) / M), through mean (d mean / d x_k = 1 / M).

# %%
grad_out = rng.standard_normal(x.shape)

grad_gamma = (grad_out * x_hat).sum(axis=axes, keepdims=True)                  # 1.
grad_beta = grad_out.sum(axis=axes, keepdims=True)
g = gamma * grad_out                                                           # 2.
grad_var = ((g * (x - batch_mean)).sum(axis=axes, keepdims=True)               # 3.
            * -0.5 * (batch_var + eps) ** -1.5)
grad_mean = -inv_std * g.sum(axis=axes, keepdims=True)                         # 4.
grad_x = g * inv_std + grad_var * 2 * (x - batch_mean) / M + grad_mean / M     # 5.

# %% [markdown]
# npnet's `batch_norm_backward` writes the same sum in its compact form (docs/backprop.md
# derives it): `inv_std * (g - mean(g) - x_hat * mean(g * x_hat))`. The two agree.

# %%
grad_x_npnet, grad_gamma_npnet, grad_beta_npnet = npnet.batch_norm_backward(grad_out, cache)
differences = {
    "dL/dx": np.abs(grad_x - grad_x_npnet).max(),
    "dL/dgamma": np.abs(grad_gamma - grad_gamma_npnet).max(),
    "dL/dbeta": np.abs(grad_beta - grad_beta_npnet).max(),
}
assert largest(differences) < 1e-12

# %% [markdown]
# ## Against a finite difference
#
# Both could share a mistake in the derivation. The independent answer is the slope itself:
# with f(x) = sum(batch_norm(x) * grad_out), whose gradient is what the backward claims,
# nudge one entry of x by +-h and measure (f(x + h) - f(x - h)) / 2h (error O(h^2)).
# Nudging one x moves the mean and variance of its whole channel: the finite difference
# sees all three paths.

# %%
def f(x_, gamma_=gamma, beta_=beta):
    y_, *_ = npnet.batch_norm(x_, gamma_, beta_, moving_mean, moving_var, eps, momentum, True)
    return float((y_ * grad_out).sum())


def slope(f, array, index, h=1e-5):
    """(f(v + h) - f(v - h)) / 2h for v = array[index], array nudged in place and restored."""
    original = array[index]
    array[index] = original + h
    f_plus = f()
    array[index] = original - h
    f_minus = f()
    array[index] = original
    return (f_plus - f_minus) / (2 * h)


errors = []
for index in [(0, 0, 0, 0), (3, 1, 2, 4), (7, 2, 4, 1), (5, 0, 3, 3), (1, 2, 0, 2)]:
    numeric = slope(lambda: f(x), x, index)
    analytic = grad_x[index]
    errors.append(abs(analytic - numeric) / max(abs(analytic), abs(numeric)))
    print(f"dL/dx{index}: analytic {analytic:+.10f}   numeric {numeric:+.10f}")
for c in range(C):
    index = (0, c, 0, 0)
    numeric = slope(lambda: f(x, gamma_=gamma), gamma, index)
    errors.append(abs(grad_gamma[index] - numeric) / max(abs(grad_gamma[index]), abs(numeric)))
    numeric = slope(lambda: f(x, beta_=beta), beta, index)
    errors.append(abs(grad_beta[index] - numeric) / max(abs(grad_beta[index]), abs(numeric)))
print(f"worst relative error: {max(errors):.1e}")
assert max(errors) < 1e-7

# %% [markdown]
# Had we forgotten the paths through the statistics (treated mean and var as constants, as
# in evaluation mode), the gradient would be `g * inv_std` alone, and the finite difference
# disagrees at once:

# %%
wrong = g * inv_std
index = (3, 1, 2, 4)
numeric = slope(lambda: f(x), x, index)
print(f"without the statistics' paths: {wrong[index]:+.6f}, numeric {numeric:+.6f}")
assert abs(wrong[index] - numeric) / abs(numeric) > 1e-2

# %% [markdown]
# ## Two consequences worth seeing
#
# **The gradient into each channel sums to zero.** Adding a constant to every x of a channel
# changes nothing (the mean subtracts it), so the gradient has no component along that
# direction. A bias just before a BatchNorm in training mode therefore gets gradient 0.

# %%
channel_sums = grad_x.sum(axis=axes)
print("sum of dL/dx per channel:", channel_sums)
assert np.abs(channel_sums).max() < 1e-12

# %% [markdown]
# **An upstream gradient of all ones gives dL/dx = 0.** Then g is constant per channel,
# g - mean(g) = 0 and sum(g * x_hat) = 0. That is why a gradient check on `sum(batch_norm(x))`
# proves nothing, and why npnet's checks (next notebook) use a random upstream gradient.

# %%
grad_x_ones, _, _ = npnet.batch_norm_backward(np.ones_like(x), cache)
print("largest |dL/dx| for grad_out = ones:", np.abs(grad_x_ones).max())
assert np.abs(grad_x_ones).max() < 1e-12

# %% [markdown]
# ## Evaluation mode
#
# At prediction time the layer normalizes with the moving statistics, which are constants:
# only the direct path is left, dL/dx = gamma * grad_out / sqrt(moving_var + eps).

# %%
y_eval, mm_eval, mv_eval, cache_eval = npnet.batch_norm(
    x, gamma, beta, mm_npnet, mv_npnet, eps, momentum, training=False)
by_hand = gamma * (x - mm_npnet) / np.sqrt(mv_npnet + eps) + beta
grad_x_eval, _, _ = npnet.batch_norm_backward(grad_out, cache_eval)
differences = {
    "y": np.abs(y_eval - by_hand).max(),
    "dL/dx": np.abs(grad_x_eval - gamma * grad_out / np.sqrt(mv_npnet + eps)).max(),
    "moving stats unchanged": max(np.abs(mm_eval - mm_npnet).max(),
                                  np.abs(mv_eval - mv_npnet).max()),
}
assert largest(differences) < 1e-12
