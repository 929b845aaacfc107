"""Check every layer's backward pass against finite differences, and print a table.

The same configurations as tests/test_gradcheck.py, as a report a learner can read:

    python examples/gradcheck_all.py

Each row is one layer: the worst relative error over its input gradient and every parameter
gradient, and which array it was in. Below 1e-6 passes; a broken backward shows up near 1.
Change a layer's backward (say, drop a term in npnet/batchnorm.py) and run it again.

The last rows check the whole LeNet-BN with its loss twice in each mode: its layers as written
(each layer's own forward and backward, what ``Sequential`` runs) and through
``npnet.FastNet``, the fast backend that ``fit`` and ``evaluate`` use, built with
``input_grad=True`` so that it returns dL/dx for the check. Both must pass. (Had you broken a
layer, the backend would warn that it disagrees with its kernel and run it as written: both
rows would then fail alike.)
"""

import numpy as np

import npnet
from npnet.models import lenet


def randn(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def batchnorm(num_features, num_dims, training):
    layer = npnet.BatchNorm(num_features, num_dims).train(training)
    rng = np.random.default_rng(2)
    layer.gamma.data[...] = rng.uniform(0.5, 2.0, layer.gamma.shape)
    layer.beta.data[...] = rng.standard_normal(layer.beta.shape)
    layer.moving_mean = rng.standard_normal(layer.gamma.shape).astype(np.float32)
    layer.moving_var = rng.uniform(0.5, 2.0, layer.gamma.shape).astype(np.float32)
    return layer


def away_from_zero(x):
    """ReLU has no derivative at 0: keep every entry clear of the kink."""
    return np.where(np.abs(x) < 0.05, 0.5, x)


def distinct(*shape):
    """Well-separated values, so no max-pooling window has a near tie."""
    values = np.random.default_rng(3).permutation(int(np.prod(shape))) * 0.05
    return values.reshape(shape)


def warmed_up_lenet(training):
    npnet.manual_seed(0)  # the same weights in every LeNet-BN row
    net = lenet(batch_norm=True).astype(np.float64)
    rng = np.random.default_rng(4)
    for _ in range(30):  # realistic moving statistics for evaluation mode
        net(rng.random((8, 1, 28, 28)))
    return net.train(training)


CASES = [
    ("Linear(7, 5)", lambda: npnet.Linear(7, 5), randn(4, 7), {}),
    ("Conv2d(3, 4, 3, stride=2, padding=1), 7x9 input",
     lambda: npnet.Conv2d(3, 4, 3, stride=2, padding=1), randn(2, 3, 7, 9), {}),
    ("AvgPool2d(3, stride=2)", lambda: npnet.AvgPool2d(3, stride=2), randn(2, 3, 7, 8), {}),
    ("MaxPool2d(3, stride=2)", lambda: npnet.MaxPool2d(3, stride=2), distinct(2, 3, 7, 8), {}),
    ("Sigmoid", npnet.Sigmoid, randn(3, 4, 5), {}),
    ("Tanh", npnet.Tanh, randn(3, 4, 5), {}),
    ("ReLU", npnet.ReLU, away_from_zero(randn(3, 4, 5)), {}),
    ("Flatten", npnet.Flatten, randn(3, 2, 4), {}),
    ("BatchNorm(5, 2), training", lambda: batchnorm(5, 2, True), randn(6, 5) * 3 + 1, {}),
    ("BatchNorm(5, 2), evaluation", lambda: batchnorm(5, 2, False), randn(6, 5) * 3 + 1, {}),
    ("BatchNorm(4, 4), training", lambda: batchnorm(4, 4, True), randn(3, 4, 5, 3), {}),
    ("BatchNorm(4, 4), evaluation", lambda: batchnorm(4, 4, False), randn(3, 4, 5, 3), {}),
] + [
    (f"LeNet-BN + CrossEntropyLoss, {mode}, {how}", make,
     np.random.default_rng(5).random((8, 1, 28, 28)),
     {"loss": npnet.CrossEntropyLoss(), "labels": np.arange(8), "max_entries": 25})
    for mode, training in (("training", True), ("evaluation", False))
    for how, make in (
        ("as written", lambda training=training: warmed_up_lenet(training)),
        ("FastNet", lambda training=training: npnet.FastNet(warmed_up_lenet(training),
                                                             input_grad=True)))
]


def main():
    npnet.manual_seed(0)
    print(f"{'layer':<52} {'worst rel. error':>16}  where")
    for name, make, x, kwargs in CASES:
        result = npnet.gradcheck(make(), x, **kwargs)
        worst = result.worst
        print(f"{name:<52} {result.max_error:>16.2e}  {worst.name} {worst.worst_index}")


if __name__ == "__main__":
    main()
