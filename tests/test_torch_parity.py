"""npnet against PyTorch: the same layer, the same weights, the same numbers.

Every test builds an npnet layer, copies its weights into the PyTorch layer (or into the
seed notebook's own PyTorch code, for batch normalization), runs both forward and backward in
float64 with the same random upstream gradient ``grad_out``, and compares:

- the output y,
- the input gradient dL/dx,
- every parameter gradient (and, for BatchNorm, the updated moving statistics).

PyTorch is only the oracle: npnet never imports it, and this file is skipped without it.

Each ``case_*`` function returns a list of ``(label, npnet_value, torch_value)`` triples; the
tests assert on them and ``tests/parity_report.py`` prints their errors as a table.

Tolerances were measured (``python tests/parity_report.py``) and set with margin: the
largest float64 differences are about 1e-14 absolute and 1e-15 relative to the array's scale
(rounding noise of a few units in the last place), so ``rtol=1e-11, atol=1e-13``
(elementwise) leaves a factor of about 200 for a different BLAS or summation order, while any
wrong formula gives errors of order one.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import npnet  # noqa: E402
from npnet.models import lenet  # noqa: E402

RTOL, ATOL = 1e-11, 1e-13  # float64
RTOL_32 = 1e-5  # float32, relative to the output's largest entry


# --------------------------------------------------------------------------- the seed's code
# Copied from the seed notebook (/work/shared/seed/batch_norm_lenet.txt, d2l 7.5), comments
# translated. One change: an optional ``training`` argument. The seed decides the mode with
# ``torch.is_grad_enabled()`` -- prediction mode only inside ``torch.no_grad()`` -- so it can
# never give the *gradient* of prediction mode. ``training=None`` (the default) keeps the seed's
# rule exactly; the tests pass ``training=False`` only to differentiate prediction mode, and
# check that it gives the same y as the seed's own ``torch.no_grad()`` path.
def batch_norm(X, gamma, beta, moving_mean, moving_var, eps, momentum, training=None):
    if training is None:
        training = torch.is_grad_enabled()  # the seed's rule
    # is_grad_enabled tells whether we are in training mode or in prediction mode
    if not training:
        # prediction mode: use the moving averages that were passed in
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
    else:
        assert len(X.shape) in (2, 4)
        if len(X.shape) == 2:
            # fully connected layer: mean and variance over the feature dimension
            mean = X.mean(dim=0)
            var = ((X - mean) ** 2).mean(dim=0)
        else:
            # 2-D convolution: mean and variance per channel (axis=1), keepdim so they
            # broadcast against X
            mean = X.mean(dim=(0, 2, 3), keepdim=True)
            var = ((X - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        # training mode: standardize with the batch mean and variance
        X_hat = (X - mean) / torch.sqrt(var + eps)
        # update the moving averages of mean and variance
        moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
        moving_var = momentum * moving_var + (1.0 - momentum) * var
    Y = gamma * X_hat + beta  # scale and shift
    return Y, moving_mean.data, moving_var.data


class BatchNorm(nn.Module):
    """The seed's BatchNorm class. One change in ``forward``: the mode is the seed's rule
    (``torch.is_grad_enabled()``) *and* ``self.training``, so ``net.eval()`` gives prediction
    mode with gradients enabled. In ``net.train()`` it is exactly the seed's behaviour."""

    # num_features: outputs of a fully connected layer, or output channels of a convolution
    # num_dims: 2 for a fully connected layer, 4 for a convolution
    def __init__(self, num_features, num_dims):
        super().__init__()
        if num_dims == 2:
            shape = (1, num_features)
        else:
            shape = (1, num_features, 1, 1)
        # scale and shift take part in gradients and updates; initialized to 1 and 0
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        # not model parameters: initialized to 0 and 1
        self.moving_mean = torch.zeros(shape)
        self.moving_var = torch.ones(shape)

    def forward(self, X):
        # if X is not in main memory, copy moving_mean and moving_var to X's device
        if self.moving_mean.device != X.device:
            self.moving_mean = self.moving_mean.to(X.device)
            self.moving_var = self.moving_var.to(X.device)
        # keep the updated moving_mean and moving_var
        Y, self.moving_mean, self.moving_var = batch_norm(
            X, self.gamma, self.beta, self.moving_mean,
            self.moving_var, eps=1e-5, momentum=0.9,
            training=torch.is_grad_enabled() and self.training)
        return Y


# ------------------------------------------------------------------------------ helpers
def T(array: np.ndarray, requires_grad: bool = False):
    """A torch tensor with its own copy of a NumPy array (dtype kept)."""
    return torch.tensor(np.array(array), requires_grad=requires_grad)


def N(tensor) -> np.ndarray:
    return tensor.detach().numpy().copy()


def errors(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |actual - expected|, that divided by max |expected|): the error on the array's
    own scale, which stays meaningful for entries near zero. The relative error is nan for
    an array that is zero up to rounding (max |expected| < 1e-12), such as the gradient of a
    bias followed by BatchNorm in training mode: there both sides are rounding noise."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    abs_err = float(np.abs(actual - expected).max(initial=0.0))
    scale = float(np.abs(expected).max(initial=0.0))
    return abs_err, abs_err / scale if scale >= 1e-12 else float("nan")


def assert_parity(triples, rtol=RTOL, atol=ATOL):
    for label, actual, expected in triples:
        assert np.shape(actual) == np.shape(expected), \
            f"{label}: npnet shape {np.shape(actual)}, torch shape {np.shape(expected)}"
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=label)


def run_layer(layer: npnet.Module, torch_layer, x: np.ndarray, rng, torch_params: dict):
    """Forward and backward through both layers with one random grad_out.

    torch_params maps npnet parameter names to the torch tensors holding the same values.
    Returns triples for y, dL/dx and every parameter gradient.
    """
    layer.zero_grad()
    y = layer(x)
    grad_out = rng.standard_normal(y.shape)
    grad_x = layer.backward(grad_out)

    x_t = T(x, requires_grad=True)
    y_t = torch_layer(x_t)
    y_t.backward(T(grad_out))
    triples = [("y", y, N(y_t)), ("dL/dx", grad_x, N(x_t.grad))]
    for name, param in layer.named_parameters():
        triples.append((f"dL/d{name}", param.grad, N(torch_params[name].grad)))
    return triples


# ----------------------------------------------------------------------------- Conv2d
CONV_CONFIGS = {
    # name: (C, O, kernel, stride, padding, bias, (H, W))
    "3x3": (3, 4, 3, 1, 0, True, (8, 8)),
    "stride 2, padding 1": (3, 5, 3, 2, 1, True, (9, 9)),
    "stride 2, unused last row/col": (2, 3, 3, 2, 0, True, (8, 10)),
    "non-square k/s/p, odd input": (2, 3, (2, 3), (2, 1), (1, 2), True, (7, 11)),
    "non-square, bias=False": (3, 2, (3, 5), (1, 2), (2, 1), False, (5, 9)),
    "1x1 kernel": (4, 6, 1, 1, 0, True, (5, 5)),
    "kernel = input": (2, 3, (5, 4), 1, 0, True, (5, 4)),
}


def case_conv2d(config: str, seed: int = 0):
    C, O, kernel, stride, padding, bias, (H, W) = CONV_CONFIGS[config]
    rng = np.random.default_rng(seed)
    layer = npnet.Conv2d(C, O, kernel, stride=stride, padding=padding, bias=bias)
    layer.astype(np.float64)
    layer.weight.data[...] = rng.standard_normal(layer.weight.shape)
    torch_layer = nn.Conv2d(C, O, kernel, stride=stride, padding=padding, bias=bias,
                            dtype=torch.float64)
    with torch.no_grad():
        torch_layer.weight.copy_(T(layer.weight.data))
        if bias:
            layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
            torch_layer.bias.copy_(T(layer.bias.data))
    x = rng.standard_normal((2, C, H, W))
    return run_layer(layer, torch_layer, x, rng,
                     {"weight": torch_layer.weight, "bias": torch_layer.bias})


@pytest.mark.parametrize("config", list(CONV_CONFIGS))
def test_conv2d(config):
    assert_parity(case_conv2d(config))


# ----------------------------------------------------------------------------- Linear
def case_linear(bias: bool, seed: int = 1):
    rng = np.random.default_rng(seed)
    layer = npnet.Linear(7, 4, bias=bias).astype(np.float64)
    layer.weight.data[...] = rng.standard_normal(layer.weight.shape)
    torch_layer = nn.Linear(7, 4, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        torch_layer.weight.copy_(T(layer.weight.data))
        if bias:
            layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
            torch_layer.bias.copy_(T(layer.bias.data))
    x = rng.standard_normal((5, 7))
    return run_layer(layer, torch_layer, x, rng,
                     {"weight": torch_layer.weight, "bias": torch_layer.bias})


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    assert_parity(case_linear(bias))


# ---------------------------------------------------------------------------- Pooling
POOL_CONFIGS = {
    # name: (kernel, stride, padding, (H, W))
    "2, default stride": (2, None, 0, (8, 8)),
    "3, stride 2, padding 1": (3, 2, 1, (9, 8)),
    "(2, 3), stride (1, 2), padding (1, 1)": ((2, 3), (1, 2), (1, 1), (7, 9)),
    "3, stride 1 (overlapping)": (3, 1, 0, (6, 7)),
    "5, default stride, 21x21": (5, None, 0, (21, 21)),
}


def case_pool(kind: str, config: str, seed: int = 2):
    kernel, stride, padding, (H, W) = POOL_CONFIGS[config]
    rng = np.random.default_rng(seed)
    ours = {"avg": npnet.AvgPool2d, "max": npnet.MaxPool2d}[kind]
    theirs = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[kind]  # count_include_pad=True
    layer = ours(kernel, stride=stride, padding=padding)
    torch_layer = theirs(kernel, stride=stride, padding=padding)
    # continuous random values: no ties, so the max is unique and both pick the same one
    x = rng.standard_normal((2, 3, H, W))
    return run_layer(layer, torch_layer, x, rng, {})


@pytest.mark.parametrize("config", list(POOL_CONFIGS))
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_pool(kind, config):
    assert_parity(case_pool(kind, config))


# ------------------------------------------------------------------------ Activations
ACTIVATIONS = {"Sigmoid": (npnet.Sigmoid, nn.Sigmoid), "Tanh": (npnet.Tanh, nn.Tanh),
               "ReLU": (npnet.ReLU, nn.ReLU)}


def case_activation(name: str, seed: int = 3):
    rng = np.random.default_rng(seed)
    ours, theirs = ACTIVATIONS[name]
    x = rng.uniform(-6, 6, size=(3, 4, 5, 6))
    x[np.abs(x) < 1e-3] = 0.5  # ReLU: no input at (or next to) the kink at 0
    return run_layer(ours(), theirs(), x, rng, {})


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation(name):
    assert_parity(case_activation(name))


# ---------------------------------------------------------------------------- Flatten
def case_flatten(seed: int = 4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4, 5))
    return run_layer(npnet.Flatten(), nn.Flatten(), x, rng, {})


def test_flatten():
    assert_parity(case_flatten())


# ------------------------------------------------------------------ CrossEntropyLoss
CE_CASES = {
    "ordinary logits": lambda rng: rng.standard_normal((6, 5)),
    "large logits (+-1000)": lambda rng: np.array(
        [[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0], [-1000.0, -999.0, -1000.0],
         [1000.0, 1000.0, 1000.0]]),
    "large logits, random": lambda rng: 1000 * rng.standard_normal((8, 10)),
}


def case_cross_entropy(name: str, seed: int = 5):
    rng = np.random.default_rng(seed)
    logits = CE_CASES[name](rng)
    labels = rng.integers(0, logits.shape[1], size=logits.shape[0])
    criterion = npnet.CrossEntropyLoss()
    loss = criterion(logits, labels)
    grad = criterion.backward()

    logits_t = T(logits, requires_grad=True)
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    return [("loss", np.array(loss), N(loss_t)), ("dL/dlogits", grad, N(logits_t.grad))]


@pytest.mark.parametrize("name", list(CE_CASES))
def test_cross_entropy(name):
    triples = case_cross_entropy(name)
    assert all(np.all(np.isfinite(actual)) for _, actual, _ in triples)
    assert_parity(triples)


# -------------------------------------------------------------------------------- SGD
SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum 0.9": dict(lr=0.1, momentum=0.9),
    "momentum 0.9, weight_decay 0.01": dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    "weight_decay 0.1": dict(lr=0.1, weight_decay=0.1),
}


def case_sgd(name: str, steps: int = 5, seed: int = 6):
    """Minimize f(p) = 1/2 p^T A p - b^T p (gradient A p - b) for a matrix and a vector
    parameter, with the gradient computed in NumPy and handed to both optimizers."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,)]
    start = [rng.standard_normal(shape) for shape in shapes]
    A = [np.diag(rng.uniform(0.5, 2.0, size=int(np.prod(shape)))) for shape in shapes]
    b = [rng.standard_normal(int(np.prod(shape))) for shape in shapes]

    def gradient(k, p):
        return (A[k] @ p.reshape(-1) - b[k]).reshape(p.shape)

    params = [npnet.Parameter(p.copy()) for p in start]
    optimizer = npnet.SGD(params, **SGD_CASES[name])
    params_t = [torch.nn.Parameter(T(p)) for p in start]
    optimizer_t = torch.optim.SGD(params_t, **SGD_CASES[name])
    triples = []
    for step in range(steps):
        optimizer.zero_grad()
        optimizer_t.zero_grad()
        for k, (p, p_t) in enumerate(zip(params, params_t)):
            p.grad += gradient(k, p.data)
            p_t.grad = T(gradient(k, N(p_t)))
        optimizer.step()
        optimizer_t.step()
        for k, (p, p_t) in enumerate(zip(params, params_t)):
            triples.append((f"step {step + 1}, param {k}", p.data.copy(), N(p_t)))
    return triples


@pytest.mark.parametrize("name", list(SGD_CASES))
def test_sgd(name):
    assert_parity(case_sgd(name))


# -------------------------------------------------------------------------- BatchNorm
def case_batch_norm(num_dims: int, training: bool, seed: int = 7):
    """npnet.BatchNorm against the seed's torch ``batch_norm`` with non-trivial gamma, beta
    and moving statistics. Training mode runs the seed function with gradients enabled (its
    training branch). Evaluation mode runs it inside ``torch.no_grad()`` for y and the moving
    statistics, exactly as the seed does, and once more with ``training=False`` and gradients
    enabled, only to get the gradients (its y must be the no_grad y)."""
    rng = np.random.default_rng(seed)
    F_ = 5
    shape = (1, F_) if num_dims == 2 else (1, F_, 1, 1)
    layer = npnet.BatchNorm(F_, num_dims).astype(np.float64).train(training)
    layer.gamma.data[...] = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
    layer.beta.data[...] = rng.standard_normal(shape)
    layer.moving_mean = rng.standard_normal(shape)
    layer.moving_var = rng.uniform(0.5, 2.0, shape)
    x_shape = (16, F_) if num_dims == 2 else (4, F_, 3, 5)
    # per-feature offset and scale, so the statistics are far from 0 and 1
    x = 3.0 + 2.0 * rng.standard_normal(x_shape) * rng.uniform(0.5, 3.0, shape)

    gamma_t, beta_t = T(layer.gamma.data, True), T(layer.beta.data, True)
    moving_mean_t, moving_var_t = T(layer.moving_mean), T(layer.moving_var)
    x_t = T(x, requires_grad=True)
    triples = []
    if training:
        y_t, new_mean_t, new_var_t = batch_norm(x_t, gamma_t, beta_t, moving_mean_t,
                                                moving_var_t, eps=1e-5, momentum=0.9)
    else:
        with torch.no_grad():  # the seed's prediction mode
            y_seed, new_mean_t, new_var_t = batch_norm(x_t, gamma_t, beta_t, moving_mean_t,
                                                       moving_var_t, eps=1e-5, momentum=0.9)
        y_t, _, _ = batch_norm(x_t, gamma_t, beta_t, moving_mean_t, moving_var_t,
                               eps=1e-5, momentum=0.9, training=False)
        triples.append(("y (seed, no_grad) vs y (training=False)", N(y_seed), N(y_t)))

    layer.zero_grad()
    y = layer(x)
    grad_out = rng.standard_normal(y.shape)
    grad_x = layer.backward(grad_out)
    y_t.backward(T(grad_out))
    triples += [
        ("y", y, N(y_t)),
        ("moving_mean", layer.moving_mean, N(new_mean_t)),
        ("moving_var", layer.moving_var, N(new_var_t)),
        ("dL/dx", grad_x, N(x_t.grad)),
        ("dL/dgamma", layer.gamma.grad, N(gamma_t.grad)),
        ("dL/dbeta", layer.beta.grad, N(beta_t.grad)),
    ]
    return triples


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("num_dims", [2, 4])
def test_batch_norm(num_dims, training):
    triples = case_batch_norm(num_dims, training)
    labels = [label for label, _, _ in triples]
    if not training:  # evaluation leaves the moving statistics as they were
        assert "moving_mean" in labels
    assert_parity(triples)


def test_batch_norm_moving_statistics_follow_the_seed_not_pytorch():
    """The seed's momentum 0.9 weights the *old* value and its variance is biased;
    nn.BatchNorm1d (momentum 0.1 on the *new* value, unbiased running_var) ends elsewhere."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3)) * 2 + 1
    layer = npnet.BatchNorm(3, 2).astype(np.float64)
    layer(x)
    torch_bn = nn.BatchNorm1d(3, dtype=torch.float64)
    torch_bn(T(x))
    np.testing.assert_allclose(layer.moving_mean.ravel(), N(torch_bn.running_mean), rtol=1e-12)
    biased, unbiased = x.var(axis=0), x.var(axis=0, ddof=1)
    np.testing.assert_allclose(layer.moving_var.ravel(), 0.9 + 0.1 * biased, rtol=1e-12)
    np.testing.assert_allclose(N(torch_bn.running_var), 0.9 + 0.1 * unbiased, rtol=1e-12)
    assert not np.allclose(layer.moving_var.ravel(), N(torch_bn.running_var))


# ----------------------------------------------------------------------------- LeNet-BN
def torch_lenet(dtype=torch.float64):
    """npnet.models.lenet() (batch_norm=True) in torch, with the seed's BatchNorm class."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), BatchNorm(6, num_dims=4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
        nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(),
        nn.Linear(84, 10),
    ).to(dtype)


def copy_lenet(net: npnet.Sequential, torch_net, rng):
    """Give npnet's LeNet non-trivial BatchNorm state and copy everything into torch_net.
    Returns {npnet parameter name: torch parameter}."""
    dtype = net.dtype
    for layer in net:
        if isinstance(layer, npnet.BatchNorm):
            shape = layer.gamma.shape
            layer.gamma.data[...] = rng.uniform(0.5, 1.5, shape)
            layer.beta.data[...] = 0.2 * rng.standard_normal(shape)
            layer.moving_mean = (0.1 * rng.standard_normal(shape)).astype(dtype)
            layer.moving_var = rng.uniform(0.5, 1.5, shape).astype(dtype)
    torch_dtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype.type]
    names = {}
    for layer, torch_layer, position in zip(net, torch_net, range(len(net))):
        for name, param in layer.named_parameters():
            torch_param = getattr(torch_layer, name)
            with torch.no_grad():
                torch_param.copy_(T(param.data))
            names[f"{position}.{name}"] = torch_param
        if isinstance(layer, npnet.BatchNorm):
            torch_layer.moving_mean = T(layer.moving_mean).to(torch_dtype)
            torch_layer.moving_var = T(layer.moving_var).to(torch_dtype)
    return names


def case_lenet(training: bool, seed: int = 9):
    rng = np.random.default_rng(seed)
    npnet.manual_seed(seed)
    net = lenet(batch_norm=True).astype(np.float64).train(training)
    torch_net = torch_lenet().train(training)
    torch_params = copy_lenet(net, torch_net, rng)
    x = rng.uniform(0, 1, size=(8, 1, 28, 28))
    labels = rng.integers(0, 10, size=8)

    criterion = npnet.CrossEntropyLoss()
    net.zero_grad()
    logits = net(x)
    loss = criterion(logits, labels)
    net.backward(criterion.backward())

    logits_t = torch_net(T(x))
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels))
    loss_t.backward()
    triples = [("logits", logits, N(logits_t)), ("loss", np.array(loss), N(loss_t))]
    for name, param in net.named_parameters():
        triples.append((f"dL/d{name}", param.grad, N(torch_params[name].grad)))
    for position, (layer, torch_layer) in enumerate(zip(net, torch_net)):
        if isinstance(layer, npnet.BatchNorm):
            triples.append((f"{position}.moving_mean", layer.moving_mean,
                            N(torch_layer.moving_mean)))
            triples.append((f"{position}.moving_var", layer.moving_var,
                            N(torch_layer.moving_var)))
    if not training:  # the seed's own prediction mode: training net, gradients off
        torch_net.train()
        with torch.no_grad():
            triples.append(("logits (seed, no_grad)", logits, N(torch_net(T(x)))))
    return triples


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_lenet_batch_norm(training):
    triples = case_lenet(training)
    gradients = {label: actual for label, actual, _ in triples if label.startswith("dL/d")}
    assert len(gradients) == 18  # weight and bias of 5 layers, gamma and beta of 4 BatchNorms
    if training:
        # a bias followed by BatchNorm is subtracted out again with the batch mean: in training
        # mode its gradient is zero (both sides are rounding noise, well inside ATOL)
        for position in (0, 4, 9, 12):
            assert np.abs(gradients[f"dL/d{position}.bias"]).max() < 1e-14
    assert_parity(triples)


# ------------------------------------------------------------------------------ float32
def case_float32(which: str, seed: int = 10):
    """Forward only, float32 on both sides: npnet stays float32 and agrees to ~1e-6."""
    rng = np.random.default_rng(seed)
    npnet.manual_seed(seed)
    if which == "Conv2d":
        net = npnet.Conv2d(3, 8, 3, stride=2, padding=1)
        torch_net = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            torch_net.weight.copy_(T(net.weight.data))
            torch_net.bias.copy_(T(net.bias.data))
        x = rng.standard_normal((4, 3, 15, 15)).astype(np.float32)
    else:
        net = lenet(batch_norm=True).train(which == "LeNet-BN training")
        torch_net = torch_lenet(torch.float32).train(which == "LeNet-BN training")
        copy_lenet(net, torch_net, rng)
        x = rng.uniform(0, 1, size=(8, 1, 28, 28)).astype(np.float32)
    y = net(x)
    with torch.no_grad() if which == "Conv2d" else torch.enable_grad():
        y_t = torch_net(T(x))
    return [("y", y, N(y_t))]


FLOAT32_CASES = ["Conv2d", "LeNet-BN training", "LeNet-BN evaluation"]


@pytest.mark.parametrize("which", FLOAT32_CASES)
def test_float32_forward(which):
    (label, y, y_t), = case_float32(which)
    assert y.dtype == np.float32 and y_t.dtype == np.float32
    scale = np.abs(y_t).max()
    np.testing.assert_allclose(y, y_t, rtol=RTOL_32, atol=RTOL_32 * scale, err_msg=which)


# ------------------------------------------------------------------ the table's contents
def all_cases():
    """(layer, case, triples) for every comparison above; used by tests/parity_report.py."""
    for config in CONV_CONFIGS:
        yield "Conv2d", config, case_conv2d(config)
    for bias in (True, False):
        yield "Linear", f"bias={bias}", case_linear(bias)
    for kind in ("avg", "max"):
        for config in POOL_CONFIGS:
            yield f"{kind.capitalize()}Pool2d", config, case_pool(kind, config)
    for name in ACTIVATIONS:
        yield name, "", case_activation(name)
    yield "Flatten", "", case_flatten()
    for name in CE_CASES:
        yield "CrossEntropyLoss", name, case_cross_entropy(name)
    for name in SGD_CASES:
        yield "SGD (5 steps)", name, case_sgd(name)
    for num_dims in (2, 4):
        for training in (True, False):
            yield "BatchNorm", f"{num_dims}-D, {'training' if training else 'evaluation'}", \
                case_batch_norm(num_dims, training)
    for training in (True, False):
        yield "LeNet-BN", "training" if training else "evaluation", case_lenet(training)
    for which in FLOAT32_CASES:
        yield "float32 forward", which, case_float32(which)
