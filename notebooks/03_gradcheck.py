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
# # 3. Gradient checking: every backward against the measured slope
#
# In the seed, PyTorch's autograd differentiates `batch_norm` for us. In npnet every layer
# writes its own `backward`, and `npnet.gradcheck` is the proof that each one is right: it
# nudges every entry of the input and of every parameter, measures the slope of
#
#     f = sum(layer.forward(x) * grad_out)        (grad_out: a fixed random array)
#
# by central differences in float64, and compares it with what `layer.backward(grad_out)`
# says, as a relative error `|analytic - numeric| / max(|analytic|, |numeric|, floor)`
# (`docs/backprop.md`, "Gradient checking"). A correct backward gives about 1e-8 or less; a
# wrong one gives errors near 1. We require < 1e-6.
#
# **Look at**: the worst error of each array (input and each parameter), in both modes of
# BatchNorm; then how large it gets when one term of the backward is left out.

# %%
import numpy as np

import npnet
from npnet.models import lenet

rng = np.random.default_rng(1)
TOLERANCE = 1e-6


def batchnorm(num_features, num_dims):
    """A BatchNorm whose gamma, beta and moving statistics are not the ones and zeros it
    starts with (a factor of 1 or a term of 0 would hide a mistake)."""
    layer = npnet.BatchNorm(num_features, num_dims)
    layer.gamma.data[...] = rng.uniform(0.5, 2.0, layer.gamma.shape)
    layer.beta.data[...] = rng.standard_normal(layer.beta.shape)
    layer.moving_mean = rng.standard_normal(layer.gamma.shape).astype(np.float32)
    layer.moving_var = rng.uniform(0.5, 2.0, layer.gamma.shape).astype(np.float32)
    return layer


# %% [markdown]
# ## BatchNorm after a convolution, training mode
#
# Input (N, C, H, W) = (4, 3, 5, 5). In training mode the gradient has the two extra terms
# through the batch mean and variance (notebook 2).

# %%
result = npnet.gradcheck(batchnorm(3, num_dims=4), rng.standard_normal((4, 3, 5, 5)),
                         training=True)
print(result)
assert result.max_error < TOLERANCE

# %% [markdown]
# The same layer in evaluation mode (the moving statistics are constants), and after a fully
# connected layer (`num_dims=2`, input (N, F)).

# %%
checks = {
    "BatchNorm(3, 4), eval": npnet.gradcheck(batchnorm(3, 4), rng.standard_normal((4, 3, 5, 5)),
                                             training=False),
    "BatchNorm(6, 2), train": npnet.gradcheck(batchnorm(6, 2), rng.standard_normal((5, 6)),
                                              training=True),
    "BatchNorm(6, 2), eval": npnet.gradcheck(batchnorm(6, 2), rng.standard_normal((5, 6)),
                                             training=False),
}
for name, check in checks.items():
    print(f"{name:<24} worst relative error {check.max_error:.1e}")
assert max(check.max_error for check in checks.values()) < TOLERANCE

# %% [markdown]
# ## The other layers of LeNet
#
# Each layer of the seed's network, checked alone on a small input.

# %%
layers = {
    "Conv2d(2, 3, kernel_size=5)": (npnet.Conv2d(2, 3, kernel_size=5), (2, 2, 8, 8)),
    "Sigmoid()": (npnet.Sigmoid(), (3, 4, 5)),
    "AvgPool2d(2, stride=2)": (npnet.AvgPool2d(kernel_size=2, stride=2), (2, 3, 6, 6)),
    "AvgPool2d(5)": (npnet.AvgPool2d(kernel_size=5), (2, 2, 10, 10)),
    "Flatten()": (npnet.Flatten(), (2, 3, 4, 4)),
    "Linear(7, 5)": (npnet.Linear(7, 5), (4, 7)),
}
errors = {}
for name, (layer, shape) in layers.items():
    errors[name] = npnet.gradcheck(layer, rng.standard_normal(shape)).max_error
    print(f"{name:<28} worst relative error {errors[name]:.1e}")
assert max(errors.values()) < TOLERANCE

# %% [markdown]
# ## A check that can fail
#
# A check that always passes proves nothing. Here is a BatchNorm whose backward forgets
# that, in training mode, the batch statistics depend on x: it returns the evaluation-mode
# gradient `inv_std * gamma * grad_out` in both modes. Its forward is exactly right.
#
# **Look at**: dL/dx fails (error near 1); dL/dgamma and dL/dbeta, which do not go through
# the statistics, still pass. The check says *which* array is wrong.

# %%
class FrozenStatsBatchNorm(npnet.BatchNorm):
    """A BatchNorm whose backward treats the batch mean and variance as constants."""

    def backward(self, grad_out):
        x_hat, inv_std, gamma, training = self.cache
        axes = (0,) if x_hat.ndim == 2 else (0, 2, 3)
        self.gamma.grad += (grad_out * x_hat).sum(axis=axes, keepdims=True)
        self.beta.grad += grad_out.sum(axis=axes, keepdims=True)
        return grad_out * gamma * inv_std        # missing: the paths through mean and var


broken = FrozenStatsBatchNorm(3, num_dims=4)
broken.gamma.data[...] = rng.uniform(0.5, 2.0, broken.gamma.shape)
broken_result = npnet.gradcheck(broken, rng.standard_normal((4, 3, 5, 5)), training=True)
print(broken_result)
errors = {array.name: array.max_error for array in broken_result.arrays}
assert errors["input"] > 1e-2
assert errors["gamma"] < TOLERANCE and errors["beta"] < TOLERANCE

# %% [markdown]
# In evaluation mode that backward *is* the right one, and the check passes: the mistake
# only exists where the statistics come from the batch.

# %%
eval_result = npnet.gradcheck(broken, rng.standard_normal((4, 3, 5, 5)), training=False)
print(f"evaluation mode: worst relative error {eval_result.max_error:.1e}")
assert eval_result.max_error < TOLERANCE

# %% [markdown]
# ## The whole LeNet-BN with its loss
#
# End to end, f is the cross-entropy loss of a batch of 4 images, and the check covers the
# input and every parameter of all 16 layers (10 random entries per array, to keep it
# quick). First the moving statistics see a few batches, so that evaluation mode is checked
# at realistic values.
#
# **Look at**: the biases of the convolutions and of the first two Linear layers. Each sits
# just before a BatchNorm, so in training mode its gradient is exactly 0 (notebook 2) and the
# check counts it as zero.

# %%
npnet.manual_seed(0)
net = lenet(batch_norm=True).astype(np.float64)
for _ in range(20):
    net(rng.random((8, 1, 28, 28)))
x, labels = rng.random((4, 1, 28, 28)), np.array([3, 1, 4, 1])
criterion = npnet.CrossEntropyLoss()

result = npnet.gradcheck(net, x, loss=criterion, labels=labels, training=True, max_entries=10)
print(result)
assert result.max_error < TOLERANCE

# %%
result_eval = npnet.gradcheck(net, x, loss=criterion, labels=labels, training=False,
                              max_entries=10)
print(f"evaluation mode: worst relative error {result_eval.max_error:.1e}")
assert result_eval.max_error < TOLERANCE

# %% [markdown]
# ### The result, displayed
#
# <!-- DISPLAYED RESULT (kept for gradcheck's notebook display): this cell's last expression
# is the result itself, so the notebook shows gradcheck's own display of it. -->
# The whole network's check above, as the last expression of a cell: the notebook shows the
# result as gradcheck displays it.

# %%
result
