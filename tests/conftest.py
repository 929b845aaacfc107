"""Shared test settings and helpers.

Hypothesis explores new random configurations on every local run; in CI (the CI environment
variable is set) it draws the same ones every time, so a submission's result does not depend
on luck.

The helpers below are plain functions (and one fixture) that several test files use; a test
file imports them with ``from conftest import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

import npnet
from npnet.datasets import load_mnist_sample
from npnet.models import lenet
from npnet.train import fit

# Every FastNet in the tests (and in the examples they run) splits its batches over two
# workers whenever it can: with the count not set, FastNet would pick by timing (npnet/fast/
# workers.py, WorkerChoice), and a run's last bits would depend on the machine's load.
# tests/test_workers.py tests that choice with the setting removed.
os.environ.setdefault("NPNET_THREADS", "2")

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# ------------------------------------------------------------------------------ arrays
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["float64", "float32"]
# equal "to rounding": float64 results agree to ~1e-15, float32 ones to ~1e-7
TOL = {np.float64: 1e-10, np.float32: 2e-5}


def randn(*shape, seed=12345, dtype=np.float64):
    """Standard normal values of the given shape and dtype, the same for the same seed.

    The default seed is not 0: gradcheck draws its upstream gradient with seed 0, and an
    upstream gradient equal to a multiple of x is exactly the direction BatchNorm's gradient
    removes (a degenerate check)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randn32(*shape, seed=12345):
    """``randn`` in float32, the dtype npnet's layers start in."""
    return randn(*shape, seed=seed, dtype=np.float32)


def images(n=8, seed=0, dtype=np.float32, classes=10):
    """n random 1x28x28 'images' in [0, 1) and n labels: a batch for LeNet."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, classes, n)


def assert_close(actual, expected, dtype, what, scale=None):
    """Equal to rounding in ``dtype`` (TOL), and of that dtype: relative to ``scale``, by
    default the largest |expected|."""
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), f"{what}: {actual.dtype}, expected {dtype}"
    assert actual.shape == np.shape(expected), f"{what}: shape {actual.shape}, " \
                                               f"expected {np.shape(expected)}"
    if scale is None:
        scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale,
                               err_msg=what)


def assert_same(expected: dict, actual: dict, dtype):
    """The same arrays under the same names, each equal to rounding and of ``dtype``.

    Gradients (names starting with "dL/d") are judged on the scale of the largest gradient:
    a convolution's bias before a BatchNorm has a gradient that is zero up to rounding
    (~1e-17), which neither computation gets more exactly than the other."""
    assert expected.keys() == actual.keys()
    gradients = [array for key, array in expected.items() if key.startswith("dL/d")]
    gradient_scale = max((float(np.abs(array).max(initial=0.0)) for array in gradients),
                         default=None)
    for key in expected:
        scale = gradient_scale if key.startswith("dL/d") else None
        assert_close(actual[key], expected[key], dtype, key, scale)


# ---------------------------------------------------------------------------- networks
def nontrivial(module, seed=0):
    """Give every BatchNorm in ``module`` parameters and moving statistics that are not the
    ones and zeros it starts with (behind which a missing factor of gamma, or a mix-up of
    batch and moving statistics, would hide). Returns the module."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    for layer in module.modules():
        if isinstance(layer, npnet.BatchNorm):
            shape, dtype = layer.gamma.shape, layer.gamma.dtype
            layer.gamma.data[...] = rng.uniform(0.5, 2.0, shape)
            layer.beta.data[...] = rng.standard_normal(shape)
            layer.moving_mean = rng.standard_normal(shape).astype(dtype)
            layer.moving_var = rng.uniform(0.5, 2.0, shape).astype(dtype)
    return module


def twins(make, dtype=np.float64, training=True, seed=4, count=2):
    """``count`` networks (or layers) built by ``make()`` with the same parameters and
    non-trivial BatchNorm state, in ``dtype`` and mode ``training``."""
    nets = []
    for _ in range(count):
        npnet.manual_seed(seed)
        nets.append(nontrivial(make(), seed).astype(dtype).train(training))
    return nets


def step_results(runner, x, labels) -> dict:
    """One forward and backward of ``runner`` (a network, or a FastNet running one) with the
    cross-entropy loss, from zeroed gradients. Returns its logits, loss, dL/dx (unless the
    runner returned None), every parameter gradient and every buffer, batch first."""
    criterion = npnet.CrossEntropyLoss()
    runner.zero_grad()
    logits = runner(x)
    loss = criterion(logits, labels)
    grad_x = runner.backward(criterion.backward())
    results = {"logits": logits, "loss": np.array(loss, dtype=logits.dtype)}
    if grad_x is not None:
        results["dL/dx"] = grad_x
    for name, param in runner.named_parameters():
        results[f"dL/d{name}"] = param.grad.copy()
    results.update({name: np.array(value) for name, value in runner.named_buffers()})
    return results


def lenet_bn_for_gradcheck(batch=8, warmup=30, seed=0):
    """A float64 LeNet-BN whose moving statistics have seen ``warmup`` random batches (so that
    evaluation mode is checked at realistic statistics), a batch x and its labels."""
    rng = np.random.default_rng(seed)
    npnet.manual_seed(seed)
    net = lenet(batch_norm=True).astype(np.float64)
    for _ in range(warmup):
        net(rng.random((8, 1, 28, 28)))
    x, labels = rng.random((batch, 1, 28, 28)), rng.permutation(10)[:batch]
    return net, x, labels


# ------------------------------------------------------------------------ MNIST sample
@pytest.fixture(scope="session")
def mnist_sample():
    """The real MNIST digits shipped with npnet (5,000 for training, 1,000 held out)."""
    return load_mnist_sample()


# How LeNet-BN is trained on the sample: 5 epochs, the last one with small steps (about 3 s).
MNIST_RECIPE = {"epochs": 5, "batch_size": 50, "lr": 0.05, "momentum": 0.9,
                "final_lr": 0.005, "train_size": None}


def train_lenet_bn_on_sample(sample, seed=0, **changes):
    """LeNet-BN with Xavier init, trained by ``fit`` with SGD and momentum on the sample's
    training digits (the first ``train_size`` of them, or all) with ``MNIST_RECIPE`` (or
    ``changes`` to it, which may include ``fast``); returns the model and its History."""
    recipe = {**MNIST_RECIPE, **changes}
    fast = recipe.pop("fast", None)
    npnet.manual_seed(seed)
    model = lenet(batch_norm=True)
    npnet.init_xavier(model)
    optimizer = npnet.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"])

    def slow_down_for_the_last_epoch(epoch, history):
        # Small final steps let the weights settle, and BatchNorm's moving averages with
        # them; the evaluation-mode accuracy then shows what the network has learned
        # instead of where the last big step happened to land.
        if epoch == recipe["epochs"] - 1:
            optimizer.lr = recipe["final_lr"]

    size = recipe["train_size"]
    history = fit(model, (sample.x_train[:size], sample.y_train[:size]),
                  (sample.x_test, sample.y_test), epochs=recipe["epochs"],
                  batch_size=recipe["batch_size"], optimizer=optimizer, seed=seed,
                  on_epoch_end=slow_down_for_the_last_epoch, progress=False, verbose=False,
                  fast=fast)
    return model, history
