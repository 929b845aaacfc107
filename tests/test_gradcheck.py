"""Every backward pass, checked against finite differences in float64.

Each test builds a layer in a non-degenerate configuration, runs ``npnet.gradcheck`` (input
gradient and every parameter gradient, random upstream gradient) and requires the worst
relative error to stay below 1e-6. A correct backward lands near 1e-9; a wrong one near 1.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npnet
from conftest import lenet_bn_for_gradcheck, nontrivial, randn
from npnet.models import lenet

BAR = 1e-6


def check(layer, x, **kwargs):
    result = npnet.gradcheck(layer, x, **kwargs)
    assert result.max_error < BAR, str(result)
    return result


@pytest.fixture(autouse=True)
def _seed():
    npnet.manual_seed(0)


def test_linear():
    check(npnet.Linear(7, 5), randn(4, 7))


def test_linear_without_bias():
    check(npnet.Linear(3, 6, bias=False), randn(5, 3))


def test_conv2d_stride2_padding1_odd_nonsquare_input():
    check(npnet.Conv2d(3, 4, kernel_size=3, stride=2, padding=1), randn(2, 3, 7, 9))


def test_conv2d_rectangular_kernel_stride_padding_no_bias():
    conv = npnet.Conv2d(2, 3, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), bias=False)
    check(conv, randn(3, 2, 5, 8))


def test_conv2d_lenet_first_layer():
    check(npnet.Conv2d(1, 6, kernel_size=5), randn(2, 1, 12, 12), max_entries=60)


def test_avgpool_stride_differs_from_kernel():
    check(npnet.AvgPool2d(kernel_size=3, stride=2), randn(2, 3, 7, 8))


def test_avgpool_with_padding():
    check(npnet.AvgPool2d(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)), randn(2, 2, 6, 5))


def test_avgpool_seed_default_stride():
    check(npnet.AvgPool2d(kernel_size=5), randn(1, 2, 11, 10))


def distinct_values(*shape, seed=0):
    """A permutation of well-separated values: no ties, and no max flips under the nudges."""
    count = int(np.prod(shape))
    values = np.random.default_rng(seed).permutation(count) * 0.05 - count * 0.025
    return values.reshape(shape)


def test_maxpool_stride_differs_from_kernel():
    check(npnet.MaxPool2d(kernel_size=3, stride=2), distinct_values(2, 3, 7, 8))


def test_maxpool_with_padding():
    check(npnet.MaxPool2d(kernel_size=2, stride=1, padding=1), distinct_values(2, 2, 5, 4))


@pytest.mark.parametrize("layer", [npnet.Sigmoid(), npnet.Tanh(), npnet.Flatten()],
                         ids=["sigmoid", "tanh", "flatten"])
def test_elementwise_and_flatten(layer):
    check(layer, randn(3, 2, 4, 5))


def test_relu_away_from_the_kink():
    x = randn(3, 4, 5)
    x[np.abs(x) < 0.05] = 0.5  # the kink at 0 has no derivative; stay clear of it
    check(npnet.ReLU(), x)


def nontrivial_batchnorm(num_features, num_dims, seed=1):
    """A BatchNorm whose gamma, beta and moving statistics are not the initial 1/0."""
    return nontrivial(npnet.BatchNorm(num_features, num_dims), seed)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batchnorm_2d(training):
    x = randn(6, 5) * 3 + 1
    check(nontrivial_batchnorm(5, 2), x, training=training)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_batchnorm_4d(training):
    x = randn(3, 4, 5, 3) * 2 - 1
    check(nontrivial_batchnorm(4, 4), x, training=training)


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_lenet_bn_with_its_loss(training):
    net, x, labels = lenet_bn_for_gradcheck()  # moving statistics that have seen 30 batches
    check(net, x, loss=npnet.CrossEntropyLoss(), labels=labels, training=training,
          max_entries=10)


def test_plain_lenet_with_its_loss():
    rng = np.random.default_rng(0)
    net = lenet(batch_norm=False)
    npnet.init_xavier(net)
    # Its input gradient is ~1e-7 (it vanishes through four sigmoids): that is the rounding
    # floor of finite differences on a loss of ~2.3, so only the parameters are checked here.
    # Every layer's input gradient is checked in its own test above, and LeNet-BN's below.
    check(net, rng.random((4, 1, 28, 28)), loss=npnet.CrossEntropyLoss(),
          labels=np.array([3, 1, 4, 1]), max_entries=25, check_input=False)


def test_gradcheck_catches_a_wrong_backward():
    """The check can fail: BatchNorm with the batch statistics treated as constants."""

    class StatisticsAsConstants(npnet.BatchNorm):
        def forward(self, x):
            y, self.moving_mean, self.moving_var, self.saved = npnet.batch_norm(
                x, self.gamma.data, self.beta.data, self.moving_mean, self.moving_var,
                self.eps, self.momentum, self.training)
            return y

        def backward(self, grad_out):
            x_hat, inv_std, gamma, _ = self.saved
            self.gamma.grad += (grad_out * x_hat).sum(axis=0, keepdims=True)
            self.beta.grad += grad_out.sum(axis=0, keepdims=True)
            return grad_out * gamma * inv_std  # misses the paths through mean and variance

    result = npnet.gradcheck(StatisticsAsConstants(5, 2), randn(6, 5), training=True)
    assert result.max_error > 1e-2
    assert result.worst.name == "input"


def test_gradcheck_leaves_the_layer_as_it_was():
    layer = nontrivial_batchnorm(3, 4)
    before = layer.state_dict()
    layer.eval()
    npnet.gradcheck(layer, randn(2, 3, 4, 4), training=True)
    assert layer.training is False
    assert layer.gamma.data.dtype == np.float32
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert not np.any(layer.gamma.grad)


# ------------------------------------------------------------------ random configurations
conv_configs = st.fixed_dictionaries({
    "in_channels": st.integers(1, 3), "out_channels": st.integers(1, 3),
    "kh": st.integers(1, 3), "kw": st.integers(1, 3),
    "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "ph": st.integers(0, 2), "pw": st.integers(0, 2),
    "N": st.integers(1, 3), "extra_h": st.integers(0, 4), "extra_w": st.integers(0, 4),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_configs)
def test_conv2d_random_configurations(c):
    conv = npnet.Conv2d(c["in_channels"], c["out_channels"], (c["kh"], c["kw"]),
                        stride=(c["sh"], c["sw"]), padding=(c["ph"], c["pw"]))
    H = max(c["kh"] - 2 * c["ph"], 1) + c["extra_h"]
    W = max(c["kw"] - 2 * c["pw"], 1) + c["extra_w"]
    check(conv, randn(c["N"], c["in_channels"], H, W, seed=c["seed"]))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 1), st.integers(0, 3), st.booleans(), st.integers(0, 2**16))
def test_pooling_random_configurations(kh, kw, sh, sw, pad, extra, use_max, seed):
    pad = min(pad, kh // 2, kw // 2)
    layer = (npnet.MaxPool2d if use_max else npnet.AvgPool2d)((kh, kw), (sh, sw), pad)
    x = distinct_values(2, 2, kh + extra, kw + extra + 1, seed=seed)
    check(layer, x)


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 6), st.integers(1, 4), st.sampled_from([2, 4]), st.booleans(),
       st.integers(0, 2**16))
def test_batchnorm_random_configurations(N, F, num_dims, training, seed):
    shape = (N, F) if num_dims == 2 else (N, F, 3, 2)
    x = randn(*shape, seed=seed + 1) * 2 + 0.5  # seed 0 is grad_out's: see randn
    check(nontrivial_batchnorm(F, num_dims, seed=seed), x, training=training)
