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
# # 5. Looking inside: what batch normalization does to the layers' outputs
#
# The seed's summary says: batch normalization uses the minibatch mean and standard deviation
# to keep adjusting the intermediate outputs, so that every layer's outputs are more stable.
# Here we watch those intermediate outputs while two networks train, the book's LeNet
# without batch normalization (d2l 6.6) and with it (d2l 7.5), with the same data, the same
# learning rate (the book's 1.0), the same batch size (256), the same initialization and the
# same shuffling.
#
# An `npnet.instruments.Recorder` hangs a hook on each layer (nothing in the layers changes)
# and, every few training steps, writes down each layer's output mean, standard deviation and
# fraction of saturated units, and the norm of each weight gradient; with `sample_size` it
# also keeps some of the output values, for histograms. `npnet.plots_inside` draws them.
#
# **Look at**: the spread of each Sigmoid's output, in the two networks; and the held-out
# accuracy after two epochs.

# %%
import numpy as np

import npnet
from npnet.datasets import load_mnist_sample
from npnet.instruments import Recorder
from npnet.models import lenet
from npnet.plots_inside import (plot_activation_histograms, plot_activation_stats,
                                plot_gradient_norms)

x_train, y_train, x_test, y_test = load_mnist_sample()
EPOCHS, BATCH_SIZE, EVERY = 2, 256, 2
steps = EPOCHS * -(-len(x_train) // BATCH_SIZE)          # 20 steps per epoch
print(f"{steps} training steps per network, recorded every {EVERY}")

# %% [markdown]
# Train each network under a recorder. (The recorder's hooks cost a few milliseconds per
# recorded step; `Recorder.seconds` says how many in all.)

# %%
networks = {"without BatchNorm": False, "with BatchNorm": True}
recorders, histories = {}, {}
for title, batch_norm in networks.items():
    print(f"--- LeNet {title}")
    npnet.manual_seed(0)                                 # the same initial weights
    net = lenet(batch_norm=batch_norm)
    npnet.init_xavier(net)
    with Recorder(net, every=EVERY, sample_size=1000) as recorder:
        histories[title] = npnet.fit(net, (x_train, y_train), (x_test, y_test),
                                     epochs=EPOCHS, lr=1.0, batch_size=BATCH_SIZE, seed=0)
    recorders[title] = recorder
    print(recorder, f"hooks took {recorder.seconds:.2f} s")

# %%
for title, recorder in recorders.items():
    assert recorder.steps == list(range(0, steps, EVERY))
    assert len(histories[title]) == EPOCHS

# %% [markdown]
# ## The outputs of each Sigmoid, by step
#
# One line per Sigmoid layer (dark: near the input; light: near the output), one column per
# network. A Sigmoid's output lies in (0, 1); it is "saturated" below 0.01 or above 0.99,
# where its derivative is almost 0 and almost no gradient passes.
#
# **Look at**: the std row. Without BatchNorm the outputs of the first layers huddle around
# 0.5 (a std of a few hundredths): the Sigmoid's input is small, and the layer is nearly
# linear. With BatchNorm, every Sigmoid's input has mean `beta` and spread `gamma` per channel,
# and each layer's output spreads over the Sigmoid's curve alike, at about 0.2, from the
# first step on.

# %%
plot_activation_stats(recorders, layers=[npnet.Sigmoid])

# %%
stats = {title: recorder.to_arrays() for title, recorder in recorders.items()}
sigmoids = {title: [column for column, name in enumerate(recorder.names)
                    if isinstance(recorder.watched[name], npnet.Sigmoid)]
            for title, recorder in recorders.items()}
std = {title: stats[title]["std"][:, sigmoids[title]] for title in recorders}  # (steps, 4)
for title in recorders:
    print(f"{title:<18} Sigmoid output std, first step: {np.round(std[title][0], 3)}"
          f"   last: {np.round(std[title][-1], 3)}")
first_mean = stats["without BatchNorm"]["mean"][0, sigmoids["without BatchNorm"][0]]
print(f"without BatchNorm, first Sigmoid at the first step: mean {first_mean:.3f}, "
      f"std {std['without BatchNorm'][0, 0]:.3f}")
assert abs(first_mean - 0.5) < 0.05 and std["without BatchNorm"][0, 0] < 0.1
assert (std["with BatchNorm"] > 0.15).all()
assert (std["with BatchNorm"][0] > std["without BatchNorm"][0]).all()

# %% [markdown]
# ## The distributions themselves
#
# From the values the recorders kept: each Sigmoid's outputs at the first and at the last
# recorded step, on the Sigmoid's whole range (0, 1).

# %%
plot_activation_histograms(recorders, layers=[npnet.Sigmoid], value_range=(0, 1))

# %% [markdown]
# ## The weight gradients
#
# ||dL/dW|| of every Conv2d and Linear layer, by step, on a log scale.
#
# **Look at**: without BatchNorm the gradient reaching the first convolution is orders of
# magnitude smaller than the one at the last layer: each Sigmoid multiplies it by at most
# 0.25 on the way back. With BatchNorm the layers' gradients are much closer together.

# %%
plot_gradient_norms(recorders)

# %%
weights = {}
for title, recorder in recorders.items():
    grad_norms = stats[title]["grad_norm.weight"]                      # (steps, layers)
    with_weights = [column for column in range(len(recorder.names))
                    if not np.isnan(grad_norms[:, column]).all()]
    first, last = with_weights[0], with_weights[-1]        # Conv2d(1, 6), Linear(84, 10)
    weights[title] = np.median(grad_norms[:, last] / grad_norms[:, first])
    print(f"{title:<18} ||dL/dW|| of the last layer / of the first, median over steps: "
          f"{weights[title]:.1f}")
assert weights["without BatchNorm"] > 10 * weights["with BatchNorm"]

# %% [markdown]
# ## And the accuracy
#
# After two epochs at the book's learning rate, the network with batch normalization has
# learned most of the digits; the one without has not started yet (the book trains it for 10
# epochs, at learning rate 0.9, and its held-out accuracy stays at chance for the first few).

# %%
for title, history in histories.items():
    print(f"{title:<18} held-out accuracy by epoch: {np.round(history.test_acc, 3)}")
assert histories["with BatchNorm"].test_acc[-1] > 0.7
assert histories["with BatchNorm"].test_acc[-1] > histories["without BatchNorm"].test_acc[-1] + 0.3
