"""Module bookkeeping, Sequential, dtypes, BatchNorm's semantics, the loss and SGD —
each compared with an answer computed independently (by hand or with plain loops)."""

import numpy as np
import pytest

import npnet
from conftest import randn, randn32
from npnet.models import lenet


# ---------------------------------------------------------------------------- Sequential
def test_sequential_is_iterable_indexable_and_sized():
    layers = [npnet.Linear(4, 3), npnet.Sigmoid(), npnet.Linear(3, 2)]
    net = npnet.Sequential(*layers)
    assert len(net) == 3
    assert list(net) == layers
    assert net[0] is layers[0] and net[-1] is layers[2]
    assert isinstance(net[1:], npnet.Sequential) and list(net[1:]) == layers[1:]


def test_sequential_repr_reads_like_pytorch():
    text = repr(lenet())
    assert text.splitlines()[0] == "Sequential("
    assert "  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))" in text
    assert "  (1): BatchNorm(6, num_dims=4, eps=1e-05, momentum=0.9)" in text
    assert "  (3): AvgPool2d(kernel_size=2, stride=2)" in text
    assert "  (15): Linear(in_features=84, out_features=10, bias=True)" in text


def test_sequential_backward_runs_the_layers_in_reverse():
    order = []
    net = npnet.Sequential(npnet.Linear(3, 3), npnet.Tanh(), npnet.Linear(3, 2))
    for layer in net:
        layer.register_backward_hook(lambda module, g_out, g_in: order.append(module))
    net(randn32(2, 3))
    net.backward(randn32(2, 2))
    assert order == list(reversed(net.layers))


def test_forward_hooks_see_input_and_output_and_can_be_removed():
    seen = []
    layer = npnet.Sigmoid()
    handle = layer.register_forward_hook(lambda m, x, y: seen.append((x, y)))
    x = randn32(2, 3)
    y = layer(x)
    assert seen[0][0] is x and seen[0][1] is y
    handle.remove()
    layer(x)
    assert len(seen) == 1


# ------------------------------------------------------------------- parameters, state
def test_parameter_names_follow_pytorch():
    names = [name for name, _ in lenet().named_parameters()]
    assert names[:4] == ["0.weight", "0.bias", "1.gamma", "1.beta"]
    assert names[-2:] == ["15.weight", "15.bias"]
    buffers = [name for name, _ in lenet().named_buffers()]
    assert buffers[:2] == ["1.moving_mean", "1.moving_var"]


def test_parameter_count_of_the_books_lenet_bn():
    count = sum(p.data.size for p in lenet().parameters())
    # conv 6*25+6, bn 12, conv 16*6*25+16, bn 32, fc 256*120+120, bn 240, 120*84+84, bn 168,
    # 84*10+10
    assert count == 156 + 12 + 2416 + 32 + 30840 + 240 + 10164 + 168 + 850


def test_state_dict_round_trip_restores_parameters_and_moving_statistics():
    npnet.manual_seed(1)
    source = lenet()
    source(randn32(8, 1, 28, 28))  # moves the BatchNorm averages away from 0 and 1
    npnet.manual_seed(2)
    target = lenet()
    target.load_state_dict(source.state_dict())
    source.eval(), target.eval()
    x = randn32(4, 1, 28, 28, seed=3)
    np.testing.assert_array_equal(source(x), target(x))


def test_state_dict_is_a_copy():
    layer = npnet.Linear(2, 2)
    state = layer.state_dict()
    state["weight"][...] = 7
    assert not np.any(layer.weight.data == 7)


def test_train_and_eval_reach_every_layer():
    net = lenet()
    net.eval()
    assert all(not m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_and_gradients_accumulate_like_pytorch():
    layer = npnet.Linear(3, 2)
    x, g = randn32(4, 3), randn32(4, 2)
    layer(x), layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x), layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once, rtol=1e-6)
    layer.zero_grad()
    assert not np.any(layer.weight.grad)


def test_manual_seed_makes_initialization_reproducible():
    npnet.manual_seed(42)
    first = lenet().state_dict()
    npnet.manual_seed(42)
    second = lenet().state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_default_and_xavier_initialization_bounds():
    npnet.manual_seed(0)
    conv = npnet.Conv2d(6, 16, 5)
    bound = 1 / np.sqrt(6 * 25)
    assert np.abs(conv.weight.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound  # uses the whole range
    npnet.init_xavier(npnet.Sequential(conv))
    xavier = np.sqrt(6 / (6 * 25 + 16 * 25))
    assert 0.9 * xavier < np.abs(conv.weight.data).max() <= xavier


# ----------------------------------------------------------------------------- dtypes
LAYERS = {
    "conv": (lambda: npnet.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 7, 6)),
    "linear": (lambda: npnet.Linear(5, 4), (3, 5)),
    "avgpool": (lambda: npnet.AvgPool2d(3, 2, 1), (2, 2, 7, 6)),
    "maxpool": (lambda: npnet.MaxPool2d(3, 2, 1), (2, 2, 7, 6)),
    "sigmoid": (npnet.Sigmoid, (2, 3, 4)),
    "tanh": (npnet.Tanh, (2, 3, 4)),
    "relu": (npnet.ReLU, (2, 3, 4)),
    "flatten": (npnet.Flatten, (2, 3, 4)),
    "bn2": (lambda: npnet.BatchNorm(5, 2), (4, 5)),
    "bn4": (lambda: npnet.BatchNorm(3, 4), (4, 3, 2, 5)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_keeps_the_dtype_it_is_given(name, dtype):
    make, shape = LAYERS[name]
    layer = make().astype(dtype)
    for training in (True, False):
        layer.train(training)
        y = layer(randn(*shape, dtype=dtype))
        grad_x = layer.backward(randn(*y.shape, dtype=dtype, seed=1))
        assert y.dtype == dtype and grad_x.dtype == dtype
        for param in layer.parameters():
            assert param.data.dtype == dtype and param.grad.dtype == dtype
        for _, buffer in layer.named_buffers():
            assert buffer.dtype == dtype


def test_whole_network_trains_in_float32_without_upcasting():
    net = lenet()
    crit = npnet.CrossEntropyLoss()
    opt = npnet.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        opt.zero_grad()
        logits = net(randn32(8, 1, 28, 28))
        crit(logits, np.arange(8))
        net.backward(crit.backward())
        opt.step()
    assert logits.dtype == np.float32
    assert all(v.dtype == np.float32 for v in net.state_dict().values())


# ------------------------------------------------------------------- layers vs loops
def naive_conv2d(x, weight, bias, stride, padding):
    """The definition, one output element at a time."""
    N, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[n, o, i, j] = (window * weight[o]).sum() + bias[o]
    return y


def test_conv2d_forward_matches_the_definition():
    conv = npnet.Conv2d(3, 4, 3, stride=2, padding=1).astype(np.float64)
    x = randn(2, 3, 7, 9)
    expected = naive_conv2d(x, conv.weight.data, conv.bias.data, 2, 1)
    np.testing.assert_allclose(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_pools_match_the_definition():
    x = randn(2, 3, 7, 8)
    avg, mx = npnet.AvgPool2d(3, stride=2)(x), npnet.MaxPool2d(3, stride=2)(x)
    for i in range(avg.shape[2]):
        for j in range(avg.shape[3]):
            window = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            np.testing.assert_allclose(avg[:, :, i, j], window.mean(axis=(2, 3)), rtol=1e-12)
            np.testing.assert_array_equal(mx[:, :, i, j], window.max(axis=(2, 3)))


# --------------------------------------------------------------------------- BatchNorm
def test_batchnorm_training_follows_the_seed():
    layer = npnet.BatchNorm(3, 4).astype(np.float64)
    x = randn(5, 3, 4, 2) * 2 + 1
    y = layer(x)
    for c in range(3):
        values = x[:, c]
        mean, var = values.mean(), ((values - values.mean()) ** 2).mean()  # biased
        np.testing.assert_allclose(y[:, c], (values - mean) / np.sqrt(var + 1e-5), rtol=1e-10)
        assert layer.moving_mean[0, c, 0, 0] == pytest.approx(0.9 * 0 + 0.1 * mean)
        assert layer.moving_var[0, c, 0, 0] == pytest.approx(0.9 * 1 + 0.1 * var)


def test_batchnorm_evaluation_uses_the_moving_averages_and_leaves_them():
    layer = npnet.BatchNorm(4, 2).astype(np.float64)
    layer.moving_mean = np.array([[1.0, 2.0, 3.0, 4.0]])
    layer.moving_var = np.array([[4.0, 1.0, 0.25, 9.0]])
    layer.gamma.data[...] = 2.0
    layer.beta.data[...] = -1.0
    layer.eval()
    x = randn(3, 4)
    expected = 2.0 * (x - layer.moving_mean) / np.sqrt(layer.moving_var + 1e-5) - 1.0
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.moving_mean, [[1.0, 2.0, 3.0, 4.0]])


def test_batchnorm_refuses_the_seeds_batch_of_one_when_training():
    """The seed runs its trace on one image in training mode; the 2-D statistics are then
    a mean of one value and a variance of 0, so its output is beta. npnet refuses that, as
    PyTorch does, and runs one image in evaluation mode (tests/test_misuse.py has more)."""
    layer = npnet.BatchNorm(3, 2)
    with pytest.raises(ValueError, match="expected more than 1 value per channel"):
        layer(randn32(1, 3))
    layer.eval()
    np.testing.assert_allclose(layer(randn32(1, 3)), randn32(1, 3) / np.sqrt(1 + 1e-5),
                               rtol=1e-6)


# -------------------------------------------------------------------------------- loss
def test_cross_entropy_is_stable_and_matches_the_definition():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    labels = np.array([0, 2])
    crit = npnet.CrossEntropyLoss()
    loss = crit(logits, labels)
    second = -np.log(np.exp(3.0) / np.exp([1.0, 2.0, 3.0]).sum())
    assert np.isfinite(loss) and loss == pytest.approx((0.0 + second) / 2, rel=1e-12)
    grad = crit.backward()
    softmax = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(grad[1], (softmax - [0, 0, 1]) / 2, rtol=1e-12)
    np.testing.assert_allclose(grad[0], [0, 0, 0], atol=1e-300)


def test_cross_entropy_returns_a_float_and_keeps_float32_gradients():
    crit = npnet.CrossEntropyLoss()
    assert isinstance(crit(randn32(4, 10), np.array([1, 2, 3, 4])), float)
    assert crit.backward().dtype == np.float32


# --------------------------------------------------------------------------------- SGD
def test_sgd_plain_momentum_and_weight_decay_by_hand():
    param = npnet.Parameter(np.array([1.0, -2.0]))
    opt = npnet.SGD([param], lr=0.1, momentum=0.9, weight_decay=0.01)
    param.grad[...] = [0.5, 0.5]
    opt.step()
    # g = 0.5 + 0.01 p;  v = g;  p = p - 0.1 v
    g1 = np.array([0.5 + 0.01, 0.5 - 0.02])
    np.testing.assert_allclose(param.data, [1.0, -2.0] - 0.1 * g1)
    p1 = param.data.copy()
    opt.step()  # same grad; v = 0.9 v + g
    g2 = 0.5 + 0.01 * p1
    np.testing.assert_allclose(param.data, p1 - 0.1 * (0.9 * g1 + g2))
    opt.zero_grad()
    assert not np.any(param.grad)
