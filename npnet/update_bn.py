"""Re-estimate BatchNorm's moving averages at the network's current weights.

In evaluation mode a BatchNorm layer normalizes with ``moving_mean`` and ``moving_var``,
updated after every training batch as

    moving = momentum * moving + (1 - momentum) * batch_stat          (momentum = 0.9)

so they are a weighted average of the last ~1 / (1 - momentum) = 10 batches' statistics (the
weights 0.1, 0.09, 0.081, ...; 0.9^10 = 0.35 of the total is older than that). Each of those
statistics was computed under the weights of its own step. When the weights still move a lot
from step to step (lr 1.0), the averages describe weights that are gone, and the network
evaluates with statistics that do not fit it: its test accuracy jumps from epoch to epoch.

``update_bn(model, data)`` computes them again from training data at the weights as they are,
as PyTorch's ``torch.optim.swa_utils.update_bn`` does: it runs the network forward over the
batches, its BatchNorm layers in training mode, and makes each moving average the average of
the batch statistics over all the batches:

    x_k (n_k, F) or (n_k, F, H, W): the input that batch k brings to a BatchNorm layer
    mean_k = mean(x_k, axes),  var_k = mean((x_k - mean_k)^2, axes)       (1, F[, 1, 1])
    moving_mean = sum_k n_k mean_k / sum_k n_k                            (n_k: images in
    moving_var  = sum_k n_k var_k  / sum_k n_k                             batch k)

(with batches of one size, the plain average over the batches, PyTorch's). No new formula is
needed for it: the layers' own training-mode forward does it, with ``momentum`` set before
batch k to the share the earlier batches have, s / (s + n_k) with s = n_1 + ... + n_(k-1):

    moving <- s / (s + n_k) * moving + n_k / (s + n_k) * batch_stat

which turns the running average of the first k - 1 batches into that of the first k
(momentum is 0 for the first batch, so the old averages are forgotten). A deeper BatchNorm
sees the input its earlier BatchNorms give in training mode, normalized with each batch's own
statistics, as in training.

Only the moving averages change: no weight, no ``.grad``, no optimizer state. Every layer's
mode and every BatchNorm's momentum are put back afterwards (and the old averages on an error).
The BatchNorm layers run in training mode, every other layer in evaluation mode (a Dropout
then passes everything, as it will in the evaluation the statistics are for, and draws no
random numbers; PyTorch's update_bn puts the whole model in training mode).

Cost: one forward pass over the data, in training mode (about what evaluating the same images
costs; README, "Why the test accuracy jumps", for LeNet-BN's numbers). ``num_batches`` uses the
first batches only.
"""

from __future__ import annotations

import numpy as np

from .batchnorm import BatchNorm
from .datasets import DataLoader
from .fast import FastNet
from .train import check_float_images, runner_for

SHUFFLE_SEED = 0  # the fixed order in which update_bn visits the images of (x, y) arrays


def update_bn(model, data, batch_size: int = 256, num_batches: int | None = None,
              fast: bool | None = None) -> int:
    """Set the moving averages of every BatchNorm in ``model`` to the average of its batch
    statistics over ``data``, at the current weights. Returns the number of images used.

    Inputs:
    - model: an npnet Module (or a FastNet over one) holding at least one BatchNorm
    - data: training images x (N, C, H, W) as an array, a pair ``(x, y)`` of arrays (y is not
      used), a ``DataLoader``, or any iterable of batches ``(x, y)`` or ``x``. Arrays are cut
      into batches of ``batch_size`` images in a fixed shuffled order (a data set sorted by
      class still gives batches like training's); a DataLoader and an iterable are used as
      they are (the DataLoader's epoch counter is put back, so its next epoch keeps its order).
      Images must be floats (scaled to [0, 1]); a float dtype other than the model's is cast.
    - batch_size: images per batch for arrays; best the batch size of training, the size whose
      statistics the layers were trained to normalize with
    - num_batches: use only the first ``num_batches`` batches (None: all of them)
    - fast: run the forward passes on the fast backend (npnet.fast), by default unless
      NPNET_FAST=0; False runs every layer's own forward, as written. A FastNet is used as
      it is (``fast=False`` runs its network as written)

    Raises ValueError for a model without BatchNorm, for data with no images, and for a
    ``num_batches`` below 1; TypeError for integer images; ``BatchTooSmallError`` for a batch
    of one image before a 2-D BatchNorm (a last one of (x, y) arrays is left out).
    """
    net = model.net if isinstance(model, FastNet) else model
    layers = [module for module in net.modules() if isinstance(module, BatchNorm)]
    if not layers:
        raise ValueError(f"update_bn: the model has no BatchNorm layer, so there are no moving "
                         f"averages to re-estimate ({type(net).__name__} of "
                         f"{len(list(net.modules()))} modules)")
    if num_batches is not None and (isinstance(num_batches, bool) or num_batches < 1):
        raise ValueError(f"update_bn: num_batches must be a positive integer or None; "
                         f"got {num_batches!r}")
    runner = runner_for(model, fast)
    dtype = net.dtype or np.float32
    modes = [(module, module.training) for module in net.modules()]
    momenta = [(layer, layer.momentum) for layer in layers]
    old_averages = [(layer, layer.moving_mean, layer.moving_var) for layer in layers]
    loader_epoch = data.epoch if isinstance(data, DataLoader) else None
    seen = 0
    try:
        net.eval()
        for layer in layers:
            layer.train()  # batch statistics, and the moving averages updated from them
            # start afresh (as torch's reset_running_stats): momentum 0 for the first batch
            # forgets them anyway, but 0 * NaN would keep a NaN
            layer.moving_mean = np.zeros_like(layer.moving_mean)
            layer.moving_var = np.ones_like(layer.moving_var)
        for step, x in enumerate(image_batches(data, batch_size, dtype), start=1):
            # the earlier batches' share: the running average of k - 1 becomes that of k
            for layer in layers:
                layer.momentum = seen / (seen + len(x))
            runner(x)  # training-mode forward: each BatchNorm updates its moving averages
            seen += len(x)
            if num_batches is not None and step >= num_batches:
                break
        if seen == 0:
            raise ValueError("update_bn got no images: the data gave no batch, so the "
                             "statistics cannot be estimated")
    except BaseException:
        for layer, moving_mean, moving_var in old_averages:
            layer.moving_mean, layer.moving_var = moving_mean, moving_var
        raise
    finally:
        for layer, momentum in momenta:
            layer.momentum = momentum
        for module, training in modes:
            object.__setattr__(module, "training", training)
        if loader_epoch is not None:
            data.set_epoch(loader_epoch)
    return seen


def image_batches(data, batch_size: int, dtype):
    """The batches of images in ``data`` (see ``update_bn``), each (n, C, H, W) of ``dtype``."""
    # a pair (x, y), not two batches: its labels have fewer axes than its images
    pair = (isinstance(data, (tuple, list)) and len(data) == 2
            and isinstance(data[0], np.ndarray) and not isinstance(data[1], tuple)
            and np.ndim(data[1]) < data[0].ndim)
    if isinstance(data, np.ndarray) or pair:
        x = data if isinstance(data, np.ndarray) else data[0]
        yield from _array_batches(x, batch_size, dtype)
        return
    if isinstance(data, DataLoader):
        check_float_images(data.x, "update_bn")
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = check_float_images(np.asarray(x), "update_bn")
        if len(x) > 0:
            yield x.astype(dtype, copy=False)


def _array_batches(x: np.ndarray, batch_size: int, dtype):
    """x (N, ...) in batches of ``batch_size`` in a fixed shuffled order; a last batch of one
    image is left out (BatchNorm cannot take batch statistics of one value)."""
    check_float_images(x, "update_bn")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"update_bn expects batch_size to be a positive integer; "
                         f"got {batch_size!r}")
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(x))
    for start in range(0, len(x), batch_size):
        indices = order[start:start + batch_size]
        if len(indices) == 1 and len(x) > 1:
            break
        yield x[indices].astype(dtype, copy=False)
