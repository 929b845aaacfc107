"""The small layers ResNet and DenseNet need: AdaptiveAvgPool2d, Conv2d(padding='same') and
Identity.

Each is checked against an answer computed another way (a mean written with numpy, AvgPool2d,
Conv2d with the padding written as numbers), against finite differences in float64
(``npnet.gradcheck``, the 1e-6 bar of tests/test_gradcheck.py), and against PyTorch in float64
(skipped without torch; npnet never imports it), with the tolerances of
tests/test_torch_parity.py.
"""

import numpy as np
import pytest

import npnet
from conftest import randn

BAR = 1e-6  # gradcheck, as in tests/test_gradcheck.py
RTOL, ATOL = 1e-11, 1e-13  # PyTorch parity in float64, as in tests/test_torch_parity.py


def check(layer, x, **kwargs):
    result = npnet.gradcheck(layer, x, **kwargs)
    assert result.max_error < BAR, str(result)
    return result


@pytest.fixture(autouse=True)
def _seed():
    npnet.manual_seed(0)


def forward_backward(layer, x, seed=3):
    """y, a random upstream gradient and dL/dx."""
    y = layer(x)
    grad_out = randn(*y.shape, seed=seed, dtype=y.dtype)
    return y, grad_out, layer.backward(grad_out)


# ------------------------------------------------------------------- AdaptiveAvgPool2d
def test_global_average_pooling_is_the_mean_and_sends_back_an_equal_share():
    x = randn(3, 4, 5, 6) * 2 + 1
    y, grad_out, grad_x = forward_backward(npnet.AdaptiveAvgPool2d(1), x)
    assert y.shape == (3, 4, 1, 1)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3), keepdims=True), rtol=1e-13)
    # every one of the 5 * 6 pixels of (n, c) gets dL/dy[n, c] / 30
    np.testing.assert_allclose(grad_x, np.broadcast_to(grad_out / 30, x.shape), rtol=1e-13)


@pytest.mark.parametrize("output_size", [1, (1, 1)], ids=["1", "(1, 1)"])
def test_output_size_1_and_1_by_1_are_the_same_layer(output_size):
    layer = npnet.AdaptiveAvgPool2d(output_size)
    assert layer.output_size == (1, 1)
    assert repr(layer) == "AdaptiveAvgPool2d(output_size=1)"


@pytest.mark.parametrize("output_size, shape", [((2, 3), (2, 3, 8, 9)), (4, (2, 2, 4, 8))],
                         ids=["(2, 3) of 8x9", "4 of 4x8"])
def test_a_dividing_output_size_is_avgpool2d_with_kernel_and_stride_the_ratio(output_size,
                                                                            shape):
    x = randn(*shape)
    adaptive = npnet.AdaptiveAvgPool2d(output_size)
    Ho, Wo = adaptive.output_size
    ratio = (shape[2] // Ho, shape[3] // Wo)
    y, grad_out, grad_x = forward_backward(adaptive, x)
    pool = npnet.AvgPool2d(ratio, stride=ratio)
    np.testing.assert_allclose(y, pool(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad_x, pool.backward(grad_out), rtol=1e-13, atol=1e-15)


def test_uneven_windows_follow_pytorchs_rule_floor_and_ceil():
    """H = 5 into 3 rows: rows 0-1, 1-3 and 3-4 (start = floor(i*5/3), end = ceil((i+1)*5/3));
    W = 7 into 2 columns: 0-3 and 3-6. Neighbouring windows overlap by one."""
    x = randn(2, 3, 5, 7)
    y = npnet.AdaptiveAvgPool2d((3, 2))(x)
    rows, cols = [(0, 2), (1, 4), (3, 5)], [(0, 4), (3, 7)]
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            np.testing.assert_allclose(y[:, :, i, j], x[:, :, r0:r1, c0:c1].mean(axis=(2, 3)),
                                       rtol=1e-13)


ADAPTIVE_CASES = {
    # name: (output_size, input shape)
    "global, 1": (1, (3, 4, 5, 6)),
    "global, (1, 1), odd input": (1, (2, 3, 7, 3)),
    "dividing, (2, 3)": ((2, 3), (2, 3, 6, 9)),
    "uneven windows, (3, 4) of 5x7": ((3, 4), (2, 2, 5, 7)),
    "larger than the input, 4 of 3x3": (4, (2, 2, 3, 3)),
}


@pytest.mark.parametrize("name", list(ADAPTIVE_CASES))
def test_adaptive_avg_pool2d_gradcheck(name):
    output_size, shape = ADAPTIVE_CASES[name]
    check(npnet.AdaptiveAvgPool2d(output_size), randn(*shape) * 2 + 0.5)


@pytest.mark.parametrize("output_size", [1, (2, 3), (3, 4)], ids=["global", "dividing", "uneven"])
def test_adaptive_avg_pool2d_keeps_float32(output_size):
    layer = npnet.AdaptiveAvgPool2d(output_size)
    y, _, grad_x = forward_backward(layer, randn(2, 3, 6, 9, dtype=np.float32))
    assert y.dtype == np.float32 and grad_x.dtype == np.float32
    assert y.shape[2:] == layer.output_size and grad_x.shape == (2, 3, 6, 9)


@pytest.mark.parametrize("output_size, error, message", [
    (0, ValueError, r"AdaptiveAvgPool2d\(0\) expects output_size >= 1; got 0"),
    ((None, 7), TypeError, r"AdaptiveAvgPool2d\(\(None, 7\)\) expects output_size as an int "
                           r"or a pair of ints; got \(None, 7\)"),
    ("global", TypeError, r"expects output_size as an int or a pair of ints; got 'global'"),
], ids=["zero", "None", "a string"])
def test_adaptive_avg_pool2d_refuses_an_output_size_it_cannot_make(output_size, error,
                                                                   message):
    with pytest.raises(error, match=message):
        npnet.AdaptiveAvgPool2d(output_size)


def test_adaptive_avg_pool2d_errors_name_the_layer_what_it_expected_and_what_came():
    layer = npnet.AdaptiveAvgPool2d(1)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d\(output_size=1\) expects input "
                                         r"\(N, C, H, W\); got \(3, 8, 8\)"):
        layer(randn(3, 8, 8))
    with pytest.raises(TypeError, match=r"AdaptiveAvgPool2d\(output_size=1\) expects a "
                                        r"float32 or float64 input; got int64"):
        layer(np.ones((1, 2, 3, 3), dtype=np.int64))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(randn(2, 3, 1, 1))
    layer(randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"expects grad_out of shape \(2, 3, 1, 1\) \(the "
                                         r"shape of its last output\); got \(2, 3, 4, 4\)"):
        layer.backward(randn(2, 3, 4, 4))


# --------------------------------------------------------------- Conv2d(padding='same')
SAME_KERNELS = [1, 3, 5, (3, 5), (5, 1)]


@pytest.mark.parametrize("kernel_size", SAME_KERNELS, ids=str)
def test_same_padding_keeps_height_and_width_and_is_half_the_kernel(kernel_size):
    conv = npnet.Conv2d(2, 3, kernel_size, padding="same")
    kh, kw = conv.kernel_size
    assert conv.padding == ((kh - 1) // 2, (kw - 1) // 2)
    y = conv(randn(2, 2, 6, 7, dtype=np.float32))
    assert y.shape == (2, 3, 6, 7) and y.dtype == np.float32


@pytest.mark.parametrize("kernel_size", SAME_KERNELS, ids=str)
def test_conv2d_same_gradcheck(kernel_size):
    conv = npnet.Conv2d(2, 3, kernel_size, padding="same")
    check(conv, randn(2, 2, 5, 6))


def test_same_and_valid_are_the_numbers_they_stand_for():
    x = randn(2, 3, 6, 5)
    for word, numbers in [("same", (1, 2)), ("valid", 0)]:
        npnet.manual_seed(1)
        by_word = npnet.Conv2d(3, 4, (3, 5), padding=word)
        npnet.manual_seed(1)
        by_numbers = npnet.Conv2d(3, 4, (3, 5), padding=numbers)
        np.testing.assert_array_equal(by_word(x.astype(np.float32)),
                                      by_numbers(x.astype(np.float32)))
        assert repr(by_word) == repr(by_numbers)


def test_same_padding_shows_as_numbers_in_repr_and_summary():
    conv = npnet.Conv2d(1, 4, 3, padding="same")
    assert repr(conv) == "Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert conv.short_name() == "Conv2d(1, 4, kernel_size=3)"
    table = npnet.Sequential(conv, npnet.AdaptiveAvgPool2d(1), npnet.Flatten(),
                             npnet.Identity()).summary((1, 8, 8))
    assert [row.output_shape for row in table.rows] == [(1, 4, 8, 8), (1, 4, 1, 1), (1, 4),
                                                        (1, 4)]
    assert [row.layer for row in table.rows][1:] == ["AdaptiveAvgPool2d(output_size=1)",
                                                     "Flatten()", "Identity()"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=3, stride=2), r"Conv2d\(3, 4, kernel_size=3\) supports padding='same' "
                                    r"only with stride 1.*got stride=\(2, 2\)"),
    (dict(kernel_size=3, stride=(1, 2)), r"only with stride 1.*got stride=\(1, 2\)"),
    (dict(kernel_size=4), r"Conv2d\(3, 4, kernel_size=4\) supports padding='same' only for "
                          r"odd kernel sizes.*got kernel_size=\(4, 4\)"),
    (dict(kernel_size=(3, 2)), r"only for odd kernel sizes.*got kernel_size=\(3, 2\)"),
], ids=["stride 2", "stride (1, 2)", "even kernel", "one even side"])
def test_same_padding_refuses_strides_and_even_kernels(kwargs, message):
    with pytest.raises(ValueError, match=message):
        npnet.Conv2d(3, 4, padding="same", **kwargs)


def test_conv2d_refuses_a_padding_word_it_does_not_know():
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4, kernel_size=3\) expects padding as an "
                                         r"int, a pair of ints, 'same' or 'valid'; got 'full'"):
        npnet.Conv2d(3, 4, 3, padding="full")


# ----------------------------------------------------------------------------- Identity
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (2, 3, 4, 5)], ids=str)
def test_identity_returns_its_input_and_the_upstream_gradient(shape):
    layer = npnet.Identity()
    x = randn(*shape, dtype=np.float32)
    y, grad_out, grad_x = forward_backward(layer, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(grad_x, grad_out)
    assert y.dtype == grad_x.dtype == np.float32


def test_identity_gradcheck():
    check(npnet.Identity(), randn(3, 2, 4, 5))


def test_identity_errors():
    layer = npnet.Identity()
    with pytest.raises(TypeError, match=r"Identity\(\) expects a float32 or float64 input; got "
                                        r"int64"):
        layer(np.arange(6).reshape(2, 3))
    with pytest.raises(RuntimeError, match=r"Identity\(\).backward called before forward"):
        layer.backward(randn(2, 3))
    layer(randn(2, 3))
    with pytest.raises(ValueError, match=r"Identity\(\).backward expects grad_out of shape "
                                         r"\(2, 3\)"):
        layer.backward(randn(3, 2))
    layer.backward(randn(2, 3))
    with pytest.raises(RuntimeError, match="called twice"):
        layer.backward(randn(2, 3))


# ----------------------------------------------------------------------------- PyTorch
def torch_parity(layer, torch_layer, x, torch_params=()):
    """Forward and backward through both in float64 with one random upstream gradient;
    asserts y, dL/dx and each parameter gradient agree (``torch_params``: pairs of an npnet
    Parameter and the torch tensor that holds the same values)."""
    torch = pytest.importorskip("torch")
    y = layer(x)
    grad_out = np.random.default_rng(5).standard_normal(y.shape)
    grad_x = layer.backward(grad_out)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = torch_layer(x_t)
    y_t.backward(torch.tensor(grad_out))
    pairs = [("y", y, y_t), ("dL/dx", grad_x, x_t.grad)]
    pairs += [(f"dL/d{name}", param.grad, tensor.grad) for name, param, tensor in torch_params]
    for label, ours, theirs in pairs:
        theirs = theirs.detach().numpy()
        assert np.shape(ours) == theirs.shape, label
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=label)


@pytest.mark.parametrize("name", list(ADAPTIVE_CASES))
def test_adaptive_avg_pool2d_matches_pytorch(name):
    torch = pytest.importorskip("torch")
    output_size, shape = ADAPTIVE_CASES[name]
    x = np.random.default_rng(2).standard_normal(shape)
    torch_parity(npnet.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size),
                 x)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel_size", SAME_KERNELS, ids=str)
def test_conv2d_same_and_valid_match_pytorch(kernel_size, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = npnet.Conv2d(3, 4, kernel_size, padding=padding).astype(np.float64)
    layer.weight.data[...] = rng.standard_normal(layer.weight.shape)
    layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    torch_layer = torch.nn.Conv2d(3, 4, kernel_size, padding=padding, dtype=torch.float64)
    with torch.no_grad():
        torch_layer.weight.copy_(torch.tensor(layer.weight.data))
        torch_layer.bias.copy_(torch.tensor(layer.bias.data))
    torch_parity(layer, torch_layer, rng.standard_normal((2, 3, 7, 6)),
                 [("weight", layer.weight, torch_layer.weight),
                  ("bias", layer.bias, torch_layer.bias)])
