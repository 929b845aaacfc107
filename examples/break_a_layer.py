"""Break a layer's backward on purpose; watch the gradient check catch it, and training suffer.

A backward pass can be wrong and still run: the shapes fit, the loss even goes down a little.
This exercise plants one of three classic mistakes in a copy of LeNet-BN, as a subclass that
overrides ``backward`` (the library itself is not touched):

--layer batchnorm  (default) ``FrozenStatsBatchNorm``: in training mode, the backward treats
                   the batch mean and variance as constants, i.e. uses the evaluation-mode
                   formula dL/dx = gamma * inv_std * dL/dy. It drops the two terms that say
                   "moving x[n] also moves the mean and variance that normalize every other
                   x[m]" (batchnorm.py; docs/backprop.md, section "BatchNorm").
--layer sigmoid    ``XSigmoid``: keeps the input x instead of the output y, so its backward
                   computes dL/dy * x (1 - x) instead of dL/dy * y (1 - y).
--layer conv       ``SwappedKernelConv2d``: adds the weight gradient with the kernel's rows
                   and columns swapped, dW[o, c, b, a] where dW[o, c, a, b] belongs.

The script then
1. checks one broken layer alone, and the same layer unbroken, with ``npnet.gradcheck``
   (float64, central differences, a random upstream gradient), and prints the worst relative
   error and where it is;
2. checks the whole network end to end (loss included, a sample of entries per array):
   the arrays whose gradient passes *through* the broken layer's backward are wrong, the
   ones after it are right, and that boundary is where to look;
3. trains the correct and the broken network from the same initial weights on the shipped
   MNIST sample and prints loss and accuracy per epoch side by side.

Why the broken layer really trains broken: ``fit`` runs a network on npnet's fast backend
(npnet/fast), which uses kernels of its own in place of the layers' ``forward`` and
``backward``, but never for a layer that brings its own (a subclass that overrides them, as
here), and only where it has first shown, on a tiny float64 batch, that a kernel gives what
the layer as written gives (so an edit to npnet/batchnorm.py itself is caught too). The
backend announces each such layer with a ``FastPathWarning`` (one line naming it; this
script prints them under "training the broken network") and runs it as written. So the
backward written here is the one that trains. ``NPNET_FAST=0`` (or ``fit(..., fast=False)``)
runs every layer as written: slower, the same numbers.

Run:

    python examples/break_a_layer.py                   # the BatchNorm mistake
    python examples/break_a_layer.py --layer sigmoid
    python examples/break_a_layer.py --layer conv --epochs 5

What to expect (numbers from one run with the defaults; yours may differ a little):

- The checks. A correct backward has a worst relative error of 1e-8 or less (one layer alone:
  2e-10 for BatchNorm); every broken one is near 1 or 2 (a relative error of 2 means the sign
  is wrong), far above the 1e-6 bar of tests/test_gradcheck.py. In the whole network the
  mistake spoils every array whose gradient passes through a broken backward: for
  ``batchnorm``, all of them up to the last BatchNorm's input, while ``13.gamma``, ``13.beta``
  and ``15.*`` stay exact. Note ``0.bias``: numeric gradient 0 (a bias right before
  BatchNorm is subtracted again with the batch mean, so it cannot change the loss), analytic
  -1.2.
- Training, 3 epochs on the sample (test accuracy by epoch; correct: 0.72, 0.73, 0.89).
  Before the broken network's first step, the fast backend names each broken layer (for
  ``batchnorm``: "npnet.fast: FrozenStatsBatchNorm, a BatchNorm(6, num_dims=4) (layer 1) has
  its own forward or backward (a subclass of BatchNorm); running it as written", and the same
  for layers 5, 10 and 13); the correct network gets no notice.
  ``batchnorm``: 0.10, 0.10, 0.10, and the training loss rises again in epoch 3 (1.66, 1.52,
  2.94). The biases before each BatchNorm follow that nonexistent gradient and drift without
  bound (max |bias| of the first Conv2d after 2 epochs: 5.6, against 0.2 when correct), the
  very effect Ioffe and Szegedy (2015, section 2) use to argue that the gradient must
  account for the normalization; the moving averages lag behind the drifting batch means,
  so evaluation mode, which uses them, is at chance from the start.
  ``sigmoid``: the loss is NaN at step 4: diverged.
  ``conv``: 0.65, 0.65, 0.81: it still learns, only worse, which is why a mistake like this
  can survive for a long time without a gradient check.

Things to try:
- Which of the broken layer's own arrays does the check flag, and which not? Why is
  BatchNorm's ``gamma`` gradient still right when its input gradient is wrong?
- Check the broken BatchNorm in evaluation mode (``training=False``): the check passes. Why?
- The Conv2d mistake is invisible for a kernel that is symmetric (W[o, c, a, b] equal to
  W[o, c, b, a]) and gradients that are too. Does a check with a random input catch it
  anyway? What does that say about checking with special inputs (ones, zeros)?
- Write your own mistake, e.g. a Linear layer that forgets to add its bias gradient or an
  AvgPool2d that does not divide by kh * kw, and see what the check says, and what the fast
  backend says when ``fit`` trains it.
- Plant the BatchNorm mistake in the library itself instead: in npnet/batchnorm.py, make
  ``batch_norm_backward`` use the evaluation-mode formula in training mode too (or, without
  editing the file, ``npnet.batchnorm.batch_norm_backward = ...`` in a notebook). Train
  LeNet-BN with ``npnet.fit``: the backend now says each BatchNorm "differs from its fast
  kernel by ... in dL/dx (training mode)". Why does it not say so for evaluation mode?
  (Hint: the second exercise.)
"""

from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np

import npnet
from npnet.activation import sigmoid
from npnet.batchnorm import batch_norm_backward
from npnet.conv import conv2d_backward
from npnet.datasets import load_mnist_sample
from npnet.models import lenet
from npnet.train import DivergenceError, History, fit


class FrozenStatsBatchNorm(npnet.BatchNorm):
    """BatchNorm whose backward forgets that the batch statistics depend on x."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        grad_out = self.check_grad(grad_out, cache.x_hat.shape)
        # THE MISTAKE: training=False, the formula for constant (moving) statistics, used on
        # statistics that were computed from this very batch
        grad_x, grad_gamma, grad_beta = batch_norm_backward(grad_out,
                                                            cache._replace(training=False))
        self.gamma.grad += grad_gamma
        self.beta.grad += grad_beta
        return grad_x


class XSigmoid(npnet.Sigmoid):
    """Sigmoid that keeps its input x for backward, where the derivative needs its output y."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.checked_input(x)
        self.cache = x  # THE MISTAKE: the derivative y (1 - y) needs y, not x
        return sigmoid(x)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x = self.require_cache()
        grad_out = self.check_grad(grad_out, x.shape)
        return grad_out * x * (1 - x)


class SwappedKernelConv2d(npnet.Conv2d):
    """Conv2d whose weight gradient has the kernel's rows and columns swapped."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        cache = self.require_cache()
        N, _, Ho, Wo = cache.cols.shape[:4]
        grad_out = self.check_grad(grad_out, (N, self.out_channels, Ho, Wo))
        grad_x, grad_weight, grad_bias = conv2d_backward(grad_out, cache)
        # THE MISTAKE: oCab -> oCba, a transpose that keeps the shape of a square kernel
        self.weight.grad += grad_weight.transpose(0, 1, 3, 2)
        if self.bias is not None:
            self.bias.grad += grad_bias
        return grad_x


# --layer name -> (the layer type it replaces, how to build the broken twin of a layer)
BREAKS = {
    "batchnorm": (npnet.BatchNorm, lambda layer: FrozenStatsBatchNorm(
        layer.num_features, layer.num_dims, layer.eps, layer.momentum)),
    "sigmoid": (npnet.Sigmoid, lambda layer: XSigmoid()),
    "conv": (npnet.Conv2d, lambda layer: SwappedKernelConv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
        bias=layer.bias is not None)),
}


def break_network(net: npnet.Sequential, which: str) -> npnet.Sequential:
    """A copy of ``net``, same weights, with every layer of the chosen type replaced by its
    broken twin."""
    replaced_type, make_broken = BREAKS[which]
    broken = copy.deepcopy(net)
    for position, layer in enumerate(broken.layers):
        if type(layer) is replaced_type:
            twin = make_broken(layer)
            twin.load_state_dict(layer.state_dict())  # same weights and moving averages
            broken.layers[position] = twin
    return broken


def single_layer(which: str) -> tuple[npnet.Module, np.ndarray]:
    """(a correct layer of the chosen type, an input for it): small, so the check is quick."""
    rng = np.random.default_rng(1)
    if which == "batchnorm":
        return npnet.BatchNorm(3, num_dims=4), rng.standard_normal((4, 3, 5, 5))
    if which == "sigmoid":
        return npnet.Sigmoid(), rng.standard_normal((4, 7))
    return npnet.Conv2d(2, 3, kernel_size=3), rng.standard_normal((2, 2, 6, 6))


def check_gradients(which: str, net: npnet.Sequential, broken: npnet.Sequential,
                    x: np.ndarray, y: np.ndarray, max_entries: int) -> dict:
    """Print the checks of one layer and of the whole network; return the worst errors."""
    layer, layer_input = single_layer(which)
    replaced_type, make_broken = BREAKS[which]
    broken_layer = make_broken(layer)
    broken_layer.load_state_dict(layer.state_dict())
    worst = {}
    print(f"=== 1. One layer alone, training mode: {layer.short_name()}, input "
          f"{layer_input.shape}")
    for title, module in (("correct", layer), ("broken", broken_layer)):
        result = npnet.gradcheck(module, layer_input, training=True)
        worst[f"layer {title}"] = result.max_error
        print(f"--- {title} ({type(module).__name__}):")
        print(result)
    print(f"\n=== 2. The whole network with its loss, {len(x)} images, at most {max_entries} "
          f"entries per array")
    for title, model in (("correct", net), ("broken", broken)):
        result = npnet.gradcheck(model, x, loss=npnet.CrossEntropyLoss(), labels=y,
                                 training=True, max_entries=max_entries)
        worst[f"network {title}"] = result.max_error
        bad = [a.name for a in result.arrays if a.max_error > 1e-6]
        print(f"--- {title}: worst relative error {result.max_error:.2e} in "
              f"{result.worst.name} at {result.worst.worst_index}")
        print("    arrays above 1e-6: " + (", ".join(bad) if bad else "none"))
        if title == "broken":
            print(result)
    return worst


def train_both(net, broken, data, args) -> tuple[dict, dict]:
    """Train both networks the same way (same weights, same batches) with ``fit``, on the fast
    backend; return their histories, which stop early for a network whose loss became NaN or
    infinite, and the backend's notices (FastPathWarning) for each, printed as they come."""
    x_train, y_train, x_test, y_test = data
    histories, notices = {}, {}
    backend = npnet.fast.enabled_by_default()  # False when the environment has NPNET_FAST=0
    if not backend:
        print("(NPNET_FAST=0: fit runs every layer as written, without the fast backend, so "
              "no notices below)")
    for title, model in (("correct", net), ("broken", broken)):
        print(f"--- training the {title} network")
        histories[title] = History()  # fit appends to it epoch by epoch
        notices[title] = told = []
        show_other = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, npnet.FastPathWarning):
                return show_other(message, category, filename, lineno, file, line)
            told.append(str(message))
            print(f"    FastPathWarning: {message}")

        with warnings.catch_warnings():  # restores warnings.showwarning afterwards
            warnings.simplefilter("always", npnet.FastPathWarning)
            warnings.showwarning = show
            try:
                # a diverging run overflows on its way to NaN: let DivergenceError say so, once
                with np.errstate(over="ignore", invalid="ignore"):
                    fit(model, (x_train, y_train), (x_test, y_test), epochs=args.epochs,
                        lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                        progress=False, history=histories[title])
            except DivergenceError as error:
                print(f"    diverged: {error}")
        if told:
            print("    fit ran the layers named above as written, broken backward included: "
                  "the fast\n    backend found they disagree with its kernels (see the "
                  "docstring, \"Why the broken\n    layer really trains broken\")")
        elif backend:
            print("    no notice from the fast backend: every layer ran on a kernel shown to "
                  "agree with it")
    return histories, notices


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", choices=sorted(BREAKS), default="batchnorm",
                        help="which mistake to plant (see the docstring)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only the first N training images of the sample")
    parser.add_argument("--max-entries", type=int, default=20,
                        help="entries checked per array in the whole-network check")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = load_mnist_sample()
    x_train, y_train = data.x_train[:args.train_size], data.y_train[:args.train_size]

    npnet.manual_seed(args.seed)
    net = lenet(batch_norm=True)
    npnet.init_xavier(net)
    broken = break_network(net, args.layer)
    print(f"Planted mistake: --layer {args.layer}; broken layers: "
          + ", ".join(f"{k} {type(layer).__name__}" for k, layer in enumerate(broken)
                      if type(layer) is not type(net[k])) + "\n")

    worst = check_gradients(args.layer, net, broken, x_train[:4], y_train[:4],
                            args.max_entries)

    print(f"\n=== 3. Training, {len(x_train)} images of the shipped MNIST sample, "
          f"{args.epochs} epochs, lr {args.lr}, batch size {args.batch_size}")
    histories, notices = train_both(net, broken, (x_train, y_train, data.x_test, data.y_test),
                                    args)
    print("\nepoch   correct: loss  test acc    broken: loss  test acc")
    for epoch in range(args.epochs):
        columns = []
        for history in (histories["correct"], histories["broken"]):
            columns.append(f"{history.train_loss[epoch]:>9.3f} {history.test_acc[epoch]:>9.3f}"
                           if epoch < len(history) else f"{'diverged':>19}")
        print(f"{epoch + 1:>5}       " + "         ".join(columns))
    return {"worst": worst, "histories": histories, "notices": notices}


if __name__ == "__main__":
    main()
