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
# # 4. Training LeNet with batch normalization
#
# The seed trains its LeNet-BN on Fashion-MNIST with the book's `train_ch6`: learning rate
# 1.0, batch size 256, 10 epochs. Here we train the same network (the 28x28 variant,
# `npnet.models.lenet()`) on the MNIST sample shipped with npnet, 5,000 training digits and
# 1,000 held-out ones, so the notebook runs offline in seconds. `npnet.fit` is the book's
# loop: for each mini-batch, `zero_grad`, forward, loss, backward, `step`; after each epoch,
# the accuracy on the held-out digits, in evaluation mode.
#
# **Look at**: the learning curves, and which digits the trained network still gets wrong.

# %%
import numpy as np

import npnet
from npnet.datasets import MNIST_CLASSES, load_mnist_sample
from npnet.models import lenet
from npnet.plots import plot_history, plot_predictions

x_train, y_train, x_test, y_test = load_mnist_sample()
print("train:", x_train.shape, x_train.dtype, " test:", x_test.shape,
      f" pixels in [{x_train.min()}, {x_train.max()}]")
print("digits per class in the training set:", np.bincount(y_train))
assert x_train.shape == (5000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
assert (np.bincount(y_train) == 500).all() and (np.bincount(y_test) == 100).all()

# %% [markdown]
# The network, with the book's initialization (Xavier-uniform weights). Before training, its
# predictions are guesses: about one in ten right. `plot_predictions` shows the first
# images with the predicted class above the true one, wrong ones in red; like every npnet
# plot it returns a matplotlib figure, which the notebook shows.

# %%
npnet.manual_seed(0)
model = lenet(batch_norm=True)
npnet.init_xavier(model)
accuracy_before = npnet.evaluate(model, x_test, y_test)
print(f"held-out accuracy before training: {accuracy_before:.3f}")
assert accuracy_before < 0.3
plot_predictions(model, x_test, y_test, MNIST_CLASSES, n=9)

# %% [markdown]
# ## Training
#
# On 5,000 digits, the book's batch size of 256 gives only 20 steps per epoch, and with
# learning rate 1.0 the held-out accuracy jumps around from epoch to epoch. We take smaller
# batches (50: 100 steps per epoch), SGD with momentum 0.9 at learning rate 0.05, and a last
# epoch with steps ten times smaller, which lets the weights, and BatchNorm's moving
# averages with them, settle. This is the recipe npnet's own tests train with
# (`tests/conftest.py: MNIST_RECIPE`); over seeds 0-9 it reaches 0.966-0.975.
#
# `fit` shows a progress bar while an epoch runs (a widget in Jupyter, removed when the
# epoch ends) and prints one line per epoch, as the book does.

# %%
EPOCHS = 5
optimizer = npnet.SGD(model.parameters(), lr=0.05, momentum=0.9)


def small_steps_for_the_last_epoch(epoch, history):
    if epoch == EPOCHS - 1:
        optimizer.lr = 0.005


history = npnet.fit(model, (x_train, y_train), (x_test, y_test), epochs=EPOCHS, batch_size=50,
                    optimizer=optimizer, seed=0, on_epoch_end=small_steps_for_the_last_epoch)

# %% [markdown]
# The learning curves, as the book's `Animator` draws them: training loss, training accuracy
# (measured on the fly, in training mode, while the weights change) and held-out accuracy
# after each epoch. `plot_history(history)` returns the figure; `plot_history(history,
# "curves.png")` would also save it.

# %%
plot_history(history, title="LeNet-BN on the MNIST sample")

# %%
for epoch in range(len(history)):
    print(f"epoch {epoch + 1}: loss {history.train_loss[epoch]:.3f}, "
          f"train acc {history.train_acc[epoch]:.3f}, test acc {history.test_acc[epoch]:.3f}")
assert len(history) == EPOCHS
assert history.train_loss[-1] < history.train_loss[0] / 3
assert history.test_acc[-1] >= 0.95, history.test_acc

# %% [markdown]
# `evaluate` measures the held-out accuracy again from scratch, in evaluation mode: each
# BatchNorm normalizes with its moving averages, not with the statistics of the batch, so an
# image's prediction does not depend on the other images in its batch.

# %%
accuracy = npnet.evaluate(model, x_test, y_test)
print(f"held-out accuracy: {accuracy:.3f}")
assert accuracy == history.test_acc[-1]

# %% [markdown]
# ## What it gets wrong
#
# The first 18 held-out digits the network misclassifies, with the predicted class above the
# true one. **Look at**: many are digits a person would hesitate over too.

# %%
plot_predictions(model, x_test, y_test, MNIST_CLASSES, n=18, only_mistakes=True)

# %%
model.eval()
predicted = model(x_test).argmax(axis=1)
mistakes = int((predicted != y_test).sum())
print(f"{mistakes} mistakes among {len(y_test)} held-out digits")
assert mistakes == round((1 - accuracy) * len(y_test))
