"""Bad input gets a clear error naming the layer, what it expected and what it got."""

import re

import numpy as np
import pytest

import npnet
from conftest import randn32


# ---------------------------------------------------------------- wrong number of dimensions
def test_conv2d_wrong_ndim():
    with pytest.raises(ValueError, match=r"Conv2d\(1, 6, kernel_size=5\) expects input "
                                         r"\(N, 1, H, W\); got \(28, 28\)"):
        npnet.Conv2d(1, 6, 5)(randn32(28, 28))


def test_linear_wrong_ndim_suggests_the_shape():
    with pytest.raises(ValueError, match=r"Linear\(256, 120\) expects input \(N, 256\); "
                                         r"got \(2, 16, 4, 4\)"):
        npnet.Linear(256, 120)(randn32(2, 16, 4, 4))


def test_pool_wrong_ndim():
    with pytest.raises(ValueError, match=r"AvgPool2d\(kernel_size=2, stride=2\) expects input "
                                         r"\(N, C, H, W\); got \(3, 8, 8\)"):
        npnet.AvgPool2d(2)(randn32(3, 8, 8))


def test_batchnorm_wrong_ndim():
    with pytest.raises(ValueError, match=r"BatchNorm\(6, num_dims=4\) expects input "
                                         r"\(N, 6, H, W\); got \(4, 6\)"):
        npnet.BatchNorm(6, 4)(randn32(4, 6))


def test_flatten_needs_a_batch_axis():
    with pytest.raises(ValueError, match=r"Flatten expects input \(N, \.\.\.\)"):
        npnet.Flatten()(randn32(5))


# ------------------------------------------------------------ wrong channel / feature count
def test_conv2d_wrong_channels():
    with pytest.raises(ValueError, match=r"expects input \(N, 3, H, W\); got \(2, 1, 8, 8\)"):
        npnet.Conv2d(3, 4, 3)(randn32(2, 1, 8, 8))


def test_linear_wrong_features():
    with pytest.raises(ValueError, match=r"Linear\(10, 2\) expects input \(N, 10\); "
                                         r"got \(4, 9\)"):
        npnet.Linear(10, 2)(randn32(4, 9))


def test_batchnorm_wrong_features():
    with pytest.raises(ValueError, match=r"BatchNorm\(120, num_dims=2\) expects input "
                                         r"\(N, 120\); got \(4, 84\)"):
        npnet.BatchNorm(120, 2)(randn32(4, 84))


# ------------------------------------------------------------------- input too small
def test_conv2d_input_smaller_than_kernel():
    with pytest.raises(ValueError, match=r"Conv2d\(1, 6, kernel_size=5\) needs an input at "
                                         r"least as large as its kernel \(5, 5\).*got 4x9"):
        npnet.Conv2d(1, 6, 5)(randn32(1, 1, 4, 9))


def test_pool_input_smaller_than_kernel():
    with pytest.raises(ValueError, match=r"AvgPool2d\(kernel_size=5, stride=5\) needs an input "
                                         r"at least as large"):
        npnet.AvgPool2d(5)(randn32(1, 2, 4, 4))


# ------------------------------------------------------------------ bad constructor args
@pytest.mark.parametrize("kwargs, message", [
    ({"kernel_size": 0}, r"kernel_size >= 1; got 0"),
    ({"kernel_size": 3, "stride": 0}, r"stride >= 1; got 0"),
    ({"kernel_size": 3, "stride": -1}, r"stride >= 1; got -1"),
    ({"kernel_size": 3, "padding": -1}, r"padding >= 0; got -1"),
    ({"kernel_size": 2.5}, r"kernel_size as an int or a pair of ints; got 2.5"),
    ({"kernel_size": (3, 3, 3)}, r"kernel_size as an int or a pair of ints"),
])
def test_conv2d_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=r"Conv2d\(1, 2, .*" + message):
        npnet.Conv2d(1, 2, **kwargs)


@pytest.mark.parametrize("layer", [npnet.AvgPool2d, npnet.MaxPool2d])
def test_pool_bad_arguments(layer):
    with pytest.raises(ValueError, match=r"kernel_size >= 1; got 0"):
        layer(0)
    with pytest.raises(ValueError, match=r"stride >= 1; got 0"):
        layer(2, stride=0)
    with pytest.raises(ValueError, match=r"padding at most half the kernel size"):
        layer(2, padding=2)


def test_batchnorm_num_dims_must_be_2_or_4():
    with pytest.raises(ValueError, match=r"BatchNorm\(6, num_dims=3\): num_dims must be 2 .* "
                                         r"or 4"):
        npnet.BatchNorm(6, 3)


# --------------------------------------------------------------------- backward misuse
@pytest.mark.parametrize("layer", [
    npnet.Conv2d(1, 2, 3), npnet.Linear(3, 2), npnet.AvgPool2d(2), npnet.MaxPool2d(2),
    npnet.Sigmoid(), npnet.ReLU(), npnet.Tanh(), npnet.Flatten(), npnet.BatchNorm(3, 2),
], ids=lambda layer: type(layer).__name__)
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(randn32(2, 2))


@pytest.mark.parametrize("layer, x", [
    (npnet.Conv2d(1, 2, 3), randn32(2, 1, 5, 5)),
    (npnet.Linear(3, 2), randn32(4, 3)),
    (npnet.AvgPool2d(2), randn32(1, 2, 4, 4)),
    (npnet.MaxPool2d(2), randn32(1, 2, 4, 4)),
    (npnet.Sigmoid(), randn32(3, 4)),
    (npnet.BatchNorm(3, 2), randn32(4, 3)),
    (npnet.Flatten(), randn32(2, 3, 4)),
], ids=lambda v: type(v).__name__ if not isinstance(v, np.ndarray) else "")
def test_gradient_of_the_wrong_shape(layer, x):
    y = layer(x)
    wrong = np.zeros((y.shape[0] + 1,) + y.shape[1:], dtype=y.dtype)
    with pytest.raises(ValueError, match=r"backward expects grad_out of shape "
                                         + re.escape(str(y.shape))):
        layer.backward(wrong)


# ------------------------------------------------------------------------------ dtypes
def test_integer_input_is_refused_with_how_to_scale_it():
    with pytest.raises(TypeError, match=r"Linear\(3, 2\) expects a float32 or float64 input; "
                                        r"got uint8; if these are images stored as integers "
                                        r"0-255, scale them to \[0, 1\] first: "
                                        r"x.astype\(np.float32\) / 255"):
        npnet.Linear(3, 2)(np.ones((2, 3), dtype=np.uint8))


def test_float64_and_lists_are_converted_at_the_networks_entry():
    """NumPy habits: np.random.rand gives float64, the network is float32 (as Keras does)."""
    npnet.manual_seed(0)
    net = npnet.Sequential(npnet.Conv2d(1, 2, 3), npnet.Flatten(), npnet.Linear(18, 2))
    x64 = np.random.default_rng(0).random((2, 1, 5, 5))
    out = net(x64)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, net(x64.astype(np.float32)))
    np.testing.assert_array_equal(net(x64.tolist()), out)  # a list too
    np.testing.assert_allclose(npnet.FastNet(net)(x64), out, rtol=1e-5, atol=1e-6)
    layer = npnet.Linear(3, 2)  # a layer alone is a network too
    assert layer([[1, 2, 3]]).dtype == np.float32


def test_dtype_mismatch_inside_a_network_is_refused_not_converted():
    class ReturnsFloat64(npnet.Identity):
        def forward(self, x):
            return super().forward(x).astype(np.float64)  # the mistake: a layer keeps dtypes

    net = npnet.Sequential(npnet.Linear(3, 3), ReturnsFloat64(), npnet.Linear(3, 2))
    with pytest.raises(TypeError, match=r"ReturnsFloat64\(\) \(layer 1\) was given float32 "
                                        r"and returned float64: a layer must return the dtype "
                                        r"it is given"):
        net(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match=r"holds float32 parameters but got a float64 input"):
        npnet.Conv2d(1, 2, 3).forward(np.ones((1, 1, 5, 5)))  # forward itself does not convert


# ---------------------------------------------------------------------------- the loss
def test_labels_out_of_range():
    with pytest.raises(ValueError, match=r"labels in \[0, 10\) for 10 classes; got 10"):
        npnet.CrossEntropyLoss()(randn32(3, 10), np.array([0, 10, 2]))
    with pytest.raises(ValueError, match=r"got -1"):
        npnet.CrossEntropyLoss()(randn32(3, 10), np.array([0, -1, 2]))


def test_labels_not_integers():
    with pytest.raises(TypeError, match=r"integer class labels .* got dtype float64"):
        npnet.CrossEntropyLoss()(randn32(3, 10), np.array([0.0, 1.0, 2.0]))


def test_labels_of_the_wrong_count():
    with pytest.raises(ValueError, match=r"labels of shape \(3,\), one per row of the logits "
                                         r"\(3, 10\); got \(4,\)"):
        npnet.CrossEntropyLoss()(randn32(3, 10), np.array([0, 1, 2, 3]))


def test_loss_backward_before_forward():
    with pytest.raises(RuntimeError, match=r"CrossEntropyLoss.backward called before"):
        npnet.CrossEntropyLoss().backward()


# ------------------------------------------------------------------------ containers
def test_sequential_refuses_a_non_layer():
    with pytest.raises(TypeError, match=r"Sequential expects layers .*argument 1 is ufunc"):
        npnet.Sequential(npnet.Linear(2, 2), np.tanh)


def test_sgd_refuses_arrays():
    with pytest.raises(TypeError, match=r"SGD expects Parameter objects"):
        npnet.SGD([np.zeros(3)], lr=0.1)


def test_load_state_dict_that_does_not_fit():
    from npnet.models import lenet

    net = lenet()
    state = net.state_dict()
    state["9.weight"] = np.zeros((120, 300), dtype=np.float32)
    with pytest.raises(ValueError, match=r"entry '9.weight' expects shape \(120, 256\); "
                                         r"got \(120, 300\)"):
        net.load_state_dict(state)
    del state["9.weight"]
    with pytest.raises(KeyError, match=r"missing entries \['9.weight'\]"):
        net.load_state_dict(state)


