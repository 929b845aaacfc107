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
# # 1. The shape trace: LeNet with batch normalization, layer by layer
#
# The seed of npnet is section 7.5 of *Dive into Deep Learning*, "Batch Normalization". It
# writes batch normalization from scratch, puts a `BatchNorm` layer after every convolution
# and every fully connected layer of LeNet (but the last), and then, before any training,
# sends one random 224x224 image through the network and prints the shape each layer
# outputs. This notebook does the same in npnet.
#
# **Look at**: how each layer changes the shape `(N, C, H, W)`; that BatchNorm and Sigmoid
# never change it; where `Flatten` turns the images into feature vectors `(N, F)`.

# %%
import numpy as np

import npnet
from npnet.models import lenet, lenet_224

# %% [markdown]
# The seed's network, layer for layer (`npnet/models.py: lenet_224`). `BatchNorm(6,
# num_dims=4)` follows a convolution (input `(N, C, H, W)`, statistics per channel);
# `BatchNorm(120, num_dims=2)` follows a fully connected layer (input `(N, F)`, statistics
# per feature). The second pooling is `AvgPool2d(kernel_size=5)`: its stride defaults to the
# kernel size.

# %%
npnet.manual_seed(0)
net = lenet_224()
net

# %% [markdown]
# One image, as in the seed: `X = rand(1, 1, 224, 224)`. We run it in **evaluation mode**.
# In training mode a BatchNorm normalizes with the statistics of the batch, and a batch of
# one image has, after the fully connected layers, one value per feature: its variance is 0
# and the output would be exactly `beta` whatever the input. (The seed's own function
# computes on regardless; npnet, like PyTorch, refuses. The shapes are the same in either
# mode.)

# %%
net.eval()
X = np.random.default_rng(0).random((1, 1, 224, 224), dtype=np.float32)
shapes = []
for layer in net:
    X = layer(X)
    shapes.append((type(layer).__name__, X.shape))
    print(type(layer).__name__, "output shape:\t", X.shape)

# %% [markdown]
# The seed prints exactly these lines (with `torch.Size([...])` for the tuples). Each
# convolution with a 5x5 kernel and no padding takes 4 pixels off each side length
# (224 -> 220, 110 -> 106), each pooling divides it (by 2, then by 5: 106 // 5 = 21), and
# `Flatten` leaves 16 * 21 * 21 = 7056 features, which is why the first `Linear` is
# `Linear(7056, 120)`.

# %%
SEED_TRACE = [
    ("Conv2d", (1, 6, 220, 220)), ("BatchNorm", (1, 6, 220, 220)),
    ("Sigmoid", (1, 6, 220, 220)), ("AvgPool2d", (1, 6, 110, 110)),
    ("Conv2d", (1, 16, 106, 106)), ("BatchNorm", (1, 16, 106, 106)),
    ("Sigmoid", (1, 16, 106, 106)), ("AvgPool2d", (1, 16, 21, 21)),
    ("Flatten", (1, 7056)),
    ("Linear", (1, 120)), ("BatchNorm", (1, 120)), ("Sigmoid", (1, 120)),
    ("Linear", (1, 84)), ("BatchNorm", (1, 84)), ("Sigmoid", (1, 84)),
    ("Linear", (1, 10)),
]
assert shapes == SEED_TRACE
assert 16 * 21 * 21 == 7056

# %% [markdown]
# What happens in training mode with that single image: the first BatchNorm after a
# fully connected layer has one value per feature, and says so.

# %%
net.train()
try:
    net(np.random.default_rng(0).random((1, 1, 224, 224), dtype=np.float32))
except npnet.BatchTooSmallError as error:
    refused = error
    print(error)
assert isinstance(refused, npnet.BatchTooSmallError)

# %% [markdown]
# With two images there are two values per feature, and training mode works: the shapes
# are the same, with N = 2.

# %%
out = net(np.random.default_rng(1).random((2, 1, 224, 224), dtype=np.float32))
print(out.shape)
assert out.shape == (2, 10)

# %% [markdown]
# ## The book's LeNet for 28x28 images
#
# The book itself trains a smaller variant on 28x28 images (Fashion-MNIST; we use MNIST
# digits): `AvgPool2d(2, stride=2)` in both stages, so 16 * 4 * 4 = 256 features reach the
# first `Linear`. `net.summary(input_shape)` traces the shapes and counts the parameters:
# `gamma` and `beta` of each BatchNorm are 2 numbers per channel or feature; the moving mean
# and variance are buffers, not parameters.
#
# **Look at**: the parameter column. The `Linear(256, 120)` layer holds two thirds of all
# weights; the two BatchNorms after convolutions hold 12 and 32.

# %%
npnet.manual_seed(0)
small = lenet()
report = small.summary((1, 28, 28))
print(report)

# %%
assert [row.output_shape for row in report.rows][:9] == [
    (1, 6, 24, 24), (1, 6, 24, 24), (1, 6, 24, 24), (1, 6, 12, 12),
    (1, 16, 8, 8), (1, 16, 8, 8), (1, 16, 8, 8), (1, 16, 4, 4), (1, 256)]
assert report.total_params == sum(p.data.size for p in small.parameters()) == 44_878
batchnorm_params = [2 * layer.num_features for layer in small
                    if isinstance(layer, npnet.BatchNorm)]
assert batchnorm_params == [12, 32, 240, 168]

# %% [markdown]
# The parameters of a BatchNorm have the shape that broadcasts against its input:
# `(1, C, 1, 1)` after a convolution, `(1, F)` after a fully connected layer.

# %%
for layer in small:
    if isinstance(layer, npnet.BatchNorm):
        print(layer.short_name(), "gamma", layer.gamma.shape, "moving_var", layer.moving_var.shape)
assert small[1].gamma.shape == (1, 6, 1, 1) and small[10].gamma.shape == (1, 120)
