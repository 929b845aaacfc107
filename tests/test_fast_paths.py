"""The fast path against the textbook path, layer by layer and for the whole network.

``Sequential`` runs layers through ``forward_batch_last`` / ``backward_batch_last``: the same
math on arrays stored with the batch as the last axis, (C, H, W, N) or (F, N). Each layer's
plain ``forward`` / ``backward`` (the textbook form, e.g. ``conv2d_forward`` with ``col2im``)
is the reference here: for the same input, parameters and upstream gradient, both paths must
give the same output, input gradient, parameter gradients and moving statistics, in float64
(to rounding, 1e-10) and in float32 (to float32 rounding, and still float32).
"""

import inspect

import numpy as np
import pytest

import npnet
from npnet import activation, batchnorm, container, conv, flatten, linear, pool, windows
from npnet.models import lenet
from npnet.windows import from_batch_last, to_batch_last

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-10, np.float32: 2e-5}


def assert_close(actual, expected, dtype, what, scale=None):
    """Equal to rounding: relative to ``scale``, by default the largest |expected|."""
    assert actual.dtype == np.dtype(dtype), f"{what}: {actual.dtype}, expected {dtype}"
    if scale is None:
        scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale,
                               err_msg=what)


def nontrivial(layer, rng):
    """Give BatchNorm parameters and moving statistics that are not ones and zeros."""
    if isinstance(layer, npnet.BatchNorm):
        shape = layer.gamma.shape
        dtype = layer.gamma.dtype
        layer.gamma.data[...] = rng.uniform(0.5, 2.0, shape)
        layer.beta.data[...] = rng.standard_normal(shape)
        layer.moving_mean = rng.standard_normal(shape).astype(dtype)
        layer.moving_var = rng.uniform(0.5, 2.0, shape).astype(dtype)
    return layer


def both_paths(make_layer, x, dtype, training=True, seed=0):
    """Run the textbook path and the batch-last path on twin layers; return both results as
    dicts of batch-first arrays: output, input gradient, every parameter gradient, buffers."""
    results = []
    for fast in (False, True):
        npnet.manual_seed(seed)
        layer = nontrivial(make_layer(), np.random.default_rng(seed)).astype(dtype)
        layer.train(training)
        rng = np.random.default_rng(seed + 1)
        x_typed = np.asarray(x, dtype=dtype)
        if fast:
            y = from_batch_last(layer.forward_batch_last(to_batch_last(x_typed)))
        else:
            y = layer.forward(x_typed)
        grad_out = rng.standard_normal(y.shape).astype(dtype)
        layer.zero_grad()
        if fast:
            grad_x = from_batch_last(layer.backward_batch_last(to_batch_last(grad_out)))
        else:
            grad_x = layer.backward(grad_out)
        result = {"output": np.asarray(y), "input gradient": np.asarray(grad_x)}
        for name, param in layer.named_parameters():
            result[f"dL/d{name}"] = param.grad.copy()
        result.update(dict(layer.named_buffers()))
        results.append(result)
    return results


def assert_same(reference, fast, dtype):
    """Every array equal to rounding. Gradients are judged on the scale of the largest
    gradient: a convolution bias before a BatchNorm has a gradient that is zero up to
    rounding (~1e-17), which neither path computes more exactly than the other."""
    assert reference.keys() == fast.keys()
    gradient_scale = max(float(np.abs(array).max(initial=0.0))
                         for key, array in reference.items() if key.startswith("dL/d")) \
        if any(key.startswith("dL/d") for key in reference) else None
    for key in reference:
        assert fast[key].shape == reference[key].shape, key
        scale = gradient_scale if key.startswith("dL/d") else None
        assert_close(fast[key], reference[key], dtype, key, scale)


def randn(*shape, seed=3):
    return np.random.default_rng(seed).standard_normal(shape)


# ------------------------------------------------------------------------- layer by layer
LAYERS = {
    "Conv2d(1, 6, 5) (LeNet's first)": (lambda: npnet.Conv2d(1, 6, 5), (4, 1, 12, 12)),
    "Conv2d(6, 16, 5) (LeNet's second)": (lambda: npnet.Conv2d(6, 16, 5), (3, 6, 12, 12)),
    "Conv2d stride 2 padding 1": (lambda: npnet.Conv2d(3, 4, 3, stride=2, padding=1),
                                  (2, 3, 7, 9)),
    "Conv2d rectangular, no bias": (
        lambda: npnet.Conv2d(2, 3, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0),
                             bias=False), (3, 2, 5, 8)),
    "Conv2d, more columns than a block": (lambda: npnet.Conv2d(2, 3, 3), (70, 2, 10, 10)),
    "BatchNorm 4-D": (lambda: npnet.BatchNorm(4, 4), (3, 4, 5, 3)),
    "BatchNorm 2-D": (lambda: npnet.BatchNorm(5, 2), (6, 5)),
    "Sigmoid": (npnet.Sigmoid, (2, 3, 4, 5)),
    "Tanh": (npnet.Tanh, (2, 3, 4, 5)),
    "ReLU": (npnet.ReLU, (2, 3, 4, 5)),
    "AvgPool2d(2, 2)": (lambda: npnet.AvgPool2d(2, 2), (3, 2, 8, 8)),
    "AvgPool2d(3, stride 2), overlapping": (lambda: npnet.AvgPool2d(3, stride=2), (2, 3, 7, 8)),
    "AvgPool2d(3, padding 1)": (lambda: npnet.AvgPool2d(3, stride=1, padding=1),
                                (2, 2, 5, 6)),
    "Flatten": (npnet.Flatten, (3, 4, 2, 5)),
    "Linear": (lambda: npnet.Linear(7, 5), (4, 7)),
    "Linear, no bias": (lambda: npnet.Linear(3, 6, bias=False), (5, 3)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_batch_last_matches_textbook(name, training, dtype):
    make_layer, shape = LAYERS[name]
    reference, fast = both_paths(make_layer, randn(*shape) * 2 + 0.5, dtype, training)
    assert_same(reference, fast, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_im2col_and_col2im_batch_last_match_the_textbook(dtype):
    x = randn(3, 2, 7, 9).astype(dtype)
    kernel, stride, padding = (3, 2), (2, 1), (1, 1)
    x_padded = windows.pad(x, padding)
    reference = windows.im2col(x_padded, kernel, stride)  # (N, C, Ho, Wo, kh, kw) view
    cols = windows.im2col_batch_last(to_batch_last(x_padded), kernel, stride)
    assert cols.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(cols, reference.transpose(1, 4, 5, 2, 3, 0))

    grad_windows = randn(*reference.shape, seed=5).astype(dtype)
    expected = windows.col2im(grad_windows, x_padded.shape, stride, padding)
    grad_x = windows.col2im_batch_last(np.ascontiguousarray(grad_windows.transpose(
        1, 4, 5, 2, 3, 0)), to_batch_last(x_padded).shape, stride, padding)
    assert_close(from_batch_last(grad_x), expected, dtype, "col2im")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_blocked_matrix_products_equal_the_plain_ones(dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 25)).astype(dtype)
    b = rng.standard_normal((25, 10000)).astype(dtype)
    g = rng.standard_normal((6, 10000)).astype(dtype)
    assert_close(conv.matmul_blocked(a, b), a @ b, dtype, "a @ b")
    assert_close(conv.matmul_transposed_blocked(g, b), g @ b.T, dtype, "g @ b.T")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("config", [((3, 5), (1, 1), (0, 0)), ((3, 3), (2, 1), (1, 2)),
                                    ((2, 3), (2, 2), (1, 0))], ids=str)
@pytest.mark.parametrize("block_bytes", [1, 2000, 10 ** 9], ids=["one row", "some rows", "all"])
def test_blocked_convolution_equals_the_whole_one(config, block_bytes, dtype):
    """The convolution and its parameter gradients a few output rows at a time (evaluation,
    and a first layer) against im2col of the whole input; block_bytes=1 forces a block per
    output row."""
    kernel, stride, padding = config
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 11, 9, 5)).astype(dtype)  # (C, H, W, N)
    weight = rng.standard_normal((4, 2, *kernel)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    expected, cols = conv.conv2d_forward_batch_last(x, weight, bias, stride, padding)
    y = conv.conv2d_forward_blocked(x, weight, bias, stride, padding, block_bytes)
    assert_close(y, expected, dtype, f"blocked convolution, block_bytes={block_bytes}")

    grad_out = rng.standard_normal(y.shape).astype(dtype)
    _, grad_weight, grad_bias = conv.conv2d_backward_batch_last(
        grad_out, cols, weight, x.shape, stride, padding, input_grad=False)
    blocked = conv.conv2d_weight_grad_blocked(grad_out, x, weight.shape, stride, padding,
                                              block_bytes)
    assert_close(blocked[0], grad_weight, dtype, "blocked dL/dW")
    assert_close(blocked[1], grad_bias, dtype, "blocked dL/db")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_a_convolution_asked_for_its_input_gradient_only_after_the_forward(dtype):
    """The forward of a layer without ``requires_input_grad`` keeps x, not its windows; if
    the flag is turned on before backward, dL/dx must still come out right."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 7, 8)).astype(dtype)
    grad_out = rng.standard_normal((3, 4, 7, 4)).astype(dtype)
    results = []
    for switch in (False, True):
        npnet.manual_seed(0)
        layer = npnet.Conv2d(2, 4, 3, stride=(1, 2), padding=1).astype(dtype)
        layer.requires_input_grad = not switch
        y = layer.forward_batch_last(to_batch_last(x))
        layer.requires_input_grad = True
        grad_x = layer.backward_batch_last(to_batch_last(grad_out))
        results.append((y, grad_x, layer.weight.grad.copy(), layer.bias.grad.copy()))
    for name, kept, rebuilt in zip(["y", "dL/dx", "dL/dW", "dL/db"], *results):
        assert_close(rebuilt, kept, dtype, name)


# ------------------------------------------------------------------------ whole networks
def run_network(net, x, labels, fast, requires_input_grad=True):
    net.use_batch_last = fast
    net.requires_input_grad = requires_input_grad
    criterion = npnet.CrossEntropyLoss()
    net.zero_grad()
    logits = net(x)
    loss = criterion(logits, labels)
    grad_x = net.backward(criterion.backward())
    result = {"logits": logits, "loss": np.array(loss, dtype=logits.dtype)}
    if grad_x is not None:
        result["input gradient"] = grad_x
    for name, param in net.named_parameters():
        result[f"dL/d{name}"] = param.grad.copy()
    result.update(net.named_buffers())
    return result


def twin_lenets(dtype, training, seed=4, **kwargs):
    nets = []
    for _ in range(2):
        npnet.manual_seed(seed)
        net = lenet(**kwargs)
        rng = np.random.default_rng(seed)
        for layer in net:
            nontrivial(layer, rng)
        nets.append(net.astype(dtype).train(training))
    return nets


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("batch_norm", [True, False], ids=["LeNet-BN", "LeNet"])
def test_lenet_fast_path_matches_textbook(batch_norm, training, dtype):
    rng = np.random.default_rng(7)
    x = rng.random((10, 1, 28, 28)).astype(dtype)
    labels = rng.integers(0, 10, size=10)
    textbook, fast = twin_lenets(dtype, training, batch_norm=batch_norm)
    reference = run_network(textbook, x, labels, fast=False)
    result = run_network(fast, x, labels, fast=True)
    assert_same(reference, result, dtype)
    assert reference["logits"].flags.c_contiguous and result["logits"].flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_skipping_the_input_gradient_changes_no_parameter_gradient(dtype):
    rng = np.random.default_rng(8)
    x, labels = rng.random((6, 1, 28, 28)).astype(dtype), rng.integers(0, 10, size=6)
    full, skipping = twin_lenets(dtype, training=True)
    reference = run_network(full, x, labels, fast=True)
    result = run_network(skipping, x, labels, fast=True, requires_input_grad=False)
    assert "input gradient" not in result
    del reference["input gradient"]
    assert_same(reference, result, dtype)
    # the textbook path honours the flag too
    assert run_network(skipping, x, labels, fast=False, requires_input_grad=False).keys() \
        == result.keys()


def test_requires_input_grad_is_the_first_layers():
    net = lenet()
    assert net.requires_input_grad and net[0].requires_input_grad
    net.requires_input_grad = False
    assert not net[0].requires_input_grad and not net.requires_input_grad
    assert npnet.Conv2d(1, 2, 3).requires_input_grad  # a standalone layer computes it


def test_a_layer_the_fast_path_does_not_know_sits_between_fast_ones():
    """MaxPool2d has no batch-last form: the activations move back and forth around it."""
    def make():
        npnet.manual_seed(2)
        return npnet.Sequential(npnet.Conv2d(2, 3, 3, padding=1), npnet.MaxPool2d(2),
                                npnet.Conv2d(3, 2, 3), npnet.Flatten(),
                                npnet.Linear(8, 3)).astype(np.float64)
    x = randn(4, 2, 8, 8)
    labels = np.array([0, 1, 2, 1])
    reference = run_network(make(), x, labels, fast=False)
    assert_same(reference, run_network(make(), x, labels, fast=True), np.float64)


def test_hooks_fire_per_layer_with_batch_first_arrays():
    net = lenet()
    x = np.random.default_rng(0).random((5, 1, 28, 28)).astype(np.float32)
    seen_forward, seen_backward = [], []
    for layer in net:
        layer.register_forward_hook(
            lambda module, inp, out: seen_forward.append((module, inp.shape, out.shape)))
        layer.register_backward_hook(
            lambda module, g_out, g_in: seen_backward.append(
                (module, g_out.shape, None if g_in is None else g_in.shape)))
    net.requires_input_grad = False
    logits = net(x)
    net.backward(np.ones_like(logits))
    assert [m for m, _, _ in seen_forward] == list(net)
    assert [m for m, _, _ in seen_backward] == list(net)[::-1]
    assert seen_forward[0][1:] == ((5, 1, 28, 28), (5, 6, 24, 24))
    assert seen_forward[8][1:] == ((5, 16, 4, 4), (5, 256))
    assert seen_backward[-1][1:] == ((5, 6, 24, 24), None)  # the first layer skipped it


# ------------------------------------------------------- BatchNorm -> Sigmoid -> AvgPool2d
def block_net(pool):
    return npnet.Sequential(npnet.Conv2d(2, 3, 3, padding=1), npnet.BatchNorm(3, 4),
                            npnet.Sigmoid(), pool, npnet.Flatten())


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("pool", [(2, 2), (3, 2), (3, 1)],
                         ids=["AvgPool2d(2, 2)", "AvgPool2d(3, stride 2)", "AvgPool2d(3, 1)"])
def test_fused_batchnorm_sigmoid_pool_matches_the_three_layers(pool, training, dtype):
    """Everything the three layers give one after another (fast path, not fused), the fused
    step gives too: output, dL/dx, every parameter gradient, the moving statistics."""
    x = randn(4, 2, 7, 8, seed=11) * 3 + 1
    labels = np.arange(4) % 3
    results = []
    for fusion in (False, True):
        npnet.manual_seed(5)
        net = block_net(npnet.AvgPool2d(pool[0], stride=pool[1]))
        nontrivial(net[1], np.random.default_rng(6))
        net = net.astype(dtype).train(training)
        net.use_fusion = fusion
        results.append(run_network(net, x.astype(dtype), labels, fast=True))
        fused = [type(step).__name__ for step, _ in net.cache]
        assert ("BatchNormSigmoidPool" in fused) == fusion, fused
    assert_same(results[0], results[1], dtype)


def test_lenet_bn_runs_both_of_its_blocks_fused():
    net = lenet(batch_norm=True)
    net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    kinds = [type(step).__name__ for step, _ in net.cache]
    assert kinds.count("BatchNormSigmoidPool") == 2, kinds
    assert len(kinds) == len(net) - 4  # two triples became two steps


def test_fusion_steps_aside_for_a_hook_padding_or_a_lone_layer():
    x = np.random.default_rng(0).random((2, 2, 6, 6)).astype(np.float32)
    net = block_net(npnet.AvgPool2d(2))
    seen = []
    net[2].register_forward_hook(lambda module, inp, out: seen.append(out.shape))
    net(x)
    assert seen == [(2, 3, 6, 6)]  # the hook saw the sigmoid's own output
    assert not any(type(step).__name__ == "BatchNormSigmoidPool" for step, _ in net.cache)
    padded = block_net(npnet.AvgPool2d(3, stride=1, padding=1))
    padded(x)
    assert not any(type(step).__name__ == "BatchNormSigmoidPool" for step, _ in padded.cache)


def test_after_a_fused_pass_the_single_layers_refuse_a_stale_backward():
    net = lenet(batch_norm=True)
    logits = net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    net.backward(np.ones_like(logits))
    with pytest.raises(RuntimeError, match="forward"):
        net[2].backward(np.ones((2, 6, 24, 24), dtype=np.float32))


def test_backward_of_the_other_layout_is_refused():
    conv_layer = npnet.Conv2d(1, 2, 3)
    conv_layer.forward_batch_last(np.zeros((1, 5, 5, 2), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"backward called after forward_batch_last"):
        conv_layer.backward(np.zeros((2, 2, 3, 3), dtype=np.float32))


def test_batch_last_errors_name_the_batch_first_shapes():
    net = lenet()
    with pytest.raises(ValueError, match=r"Conv2d\(1, 6, kernel_size=5\) expects input "
                                         r"\(N, 1, H, W\); got \(2, 3, 28, 28\)"):
        net(np.zeros((2, 3, 28, 28), dtype=np.float32))
    logits = net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Linear\(84, 10\)\.backward expects grad_out of "
                                         r"shape \(2, 10\).*got \(3, 10\)"):
        net.backward(np.zeros((3, 10), dtype=logits.dtype))


def test_gradcheck_through_the_fast_path():
    """gradcheck converts the network to float64 and runs Sequential, hence the fast path."""
    npnet.manual_seed(0)
    net = npnet.Sequential(npnet.Conv2d(2, 3, 3, padding=1), npnet.BatchNorm(3, 4),
                           npnet.Sigmoid(), npnet.AvgPool2d(2), npnet.Flatten(),
                           npnet.Linear(12, 4), npnet.BatchNorm(4, 2), npnet.Tanh())
    result = npnet.gradcheck(net, randn(3, 2, 4, 4), seed=1)
    assert result.max_error < 1e-6, str(result)


# ----------------------------------------------------------------------- the rules
def test_the_layers_call_no_add_at():
    for module in (activation, batchnorm, container, conv, flatten, linear, pool, windows):
        assert "add.at(" not in inspect.getsource(module), module.__name__
