"""The fast backend (npnet/fast) against the layers as written, kernel by kernel and for whole
networks.

The layers in npnet/*.py are the reference: for the same input, parameters and upstream
gradient, a kernel run on the batch-last layout must give the layers' output, input gradient,
parameter gradients and moving statistics, in float64 (to rounding, 1e-10) and in float32 (to
float32 rounding, and still float32). The kernels are built here directly, e.g.
``Conv2dKernel(layer, input_grad=True)``, and fed ``to_batch_last(x)``; the whole networks run
through ``FastNet`` next to the same network run by ``Sequential``.
"""

import inspect
import warnings

import numpy as np
import pytest

import npnet
from conftest import DTYPE_IDS, DTYPES, assert_close, assert_same, images, randn, step_results, \
    twins
from npnet import activation, batchnorm, container, conv, flatten, linear, pool, windows
from npnet.fast import FastNet, FastPathWarning, kernel_for
from npnet.fast import conv as fast_conv
from npnet.fast import layout
from npnet.fast.activation import SigmoidKernel
from npnet.fast.batchnorm import BatchNormKernel
from npnet.fast.conv import Conv2dKernel
from npnet.fast.conv_block import ConvBlockEvalKernel
from npnet.fast.fused import BatchNormSigmoidPoolKernel
from npnet.fast.kernel import AsWritten, LayoutFree
from npnet.fast.layout import from_batch_last, to_batch_last
from npnet.fast.linear import FlattenKernel, LinearKernel
from npnet.fast.pool import AdaptiveAvgPool2dKernel, AvgPool2dKernel
from npnet.models import lenet

MODES = [True, False]
MODE_IDS = ["training", "evaluation"]


def layers_of(module) -> list:
    return list(module) if isinstance(module, npnet.Sequential) else [module]


def results_of(layers, y, grad_x) -> dict:
    """Output, dL/dx (unless None), every parameter gradient and every buffer, batch first."""
    results = {"output": np.asarray(y)}
    if grad_x is not None:
        results["dL/dx"] = np.asarray(grad_x)
    for position, layer in enumerate(layers):
        for name, param in layer.named_parameters():
            results[f"dL/d{position}.{name}"] = param.grad.copy()
        for name, value in layer.named_buffers():
            results[f"{position}.{name}"] = np.array(value)
    return results


def kernel_and_layers(make, x, dtype, training, kernel_class=None, input_grad=True):
    """Twin layers (``make()`` gives a layer, or a Sequential of the layers one kernel stands
    for), one run as written, forward then backward, the other by its kernel on the batch-last
    layout, from the same upstream gradient. Returns (as written, by the kernel), each a dict
    as ``results_of`` makes it."""
    reference, twin = (layers_of(module) for module in twins(make, dtype, training))
    x = np.asarray(x, dtype=dtype)

    y = x
    for layer in reference:
        y = layer.forward(y)
    grad_out = randn(*y.shape, seed=7, dtype=dtype)
    grad = grad_out
    for layer in reversed(reference):
        grad = layer.backward(grad)
    expected = results_of(reference, y, grad)

    kernel = (kernel_class or kernel_for(twin[0]))(*twin, input_grad=input_grad)
    y = from_batch_last(kernel.forward(to_batch_last(x)))
    grad = kernel.backward(to_batch_last(grad_out))
    got = results_of(twin, y, None if grad is None else from_batch_last(grad))
    if not isinstance(kernel, LayoutFree):  # which runs the layer's own methods, cache and all
        assert all(layer.cache is None for layer in twin), "a kernel wrote a layer's cache"
    return expected, got


# ------------------------------------------------------------------------- layer by layer
# name: (make the layer, input shape, the kernel the backend runs it with)
LAYERS = {
    "Conv2d(1, 6, 5) (LeNet's first)": (lambda: npnet.Conv2d(1, 6, 5), (4, 1, 12, 12),
                                        Conv2dKernel),
    "Conv2d(6, 16, 5) (LeNet's second)": (lambda: npnet.Conv2d(6, 16, 5), (3, 6, 12, 12),
                                          Conv2dKernel),
    "Conv2d stride 2 padding 1": (lambda: npnet.Conv2d(3, 4, 3, stride=2, padding=1),
                                  (2, 3, 7, 9), Conv2dKernel),
    "Conv2d rectangular, no bias": (
        lambda: npnet.Conv2d(2, 3, kernel_size=(2, 3), stride=(1, 2), padding=(1, 0),
                             bias=False), (3, 2, 5, 8), Conv2dKernel),
    "Conv2d, more columns than a block": (lambda: npnet.Conv2d(2, 3, 3), (70, 2, 10, 10),
                                          Conv2dKernel),
    "Conv2d padding='same'": (lambda: npnet.Conv2d(3, 4, 3, padding="same"), (2, 3, 6, 7),
                              Conv2dKernel),
    "Conv2d padding='same', 5x1 kernel": (lambda: npnet.Conv2d(2, 3, (5, 1), padding="same"),
                                          (3, 2, 6, 5), Conv2dKernel),
    "BatchNorm 4-D": (lambda: npnet.BatchNorm(4, 4), (3, 4, 5, 3), BatchNormKernel),
    "BatchNorm 2-D": (lambda: npnet.BatchNorm(5, 2), (6, 5), BatchNormKernel),
    "Sigmoid": (npnet.Sigmoid, (2, 3, 4, 5), SigmoidKernel),
    "Tanh": (npnet.Tanh, (2, 3, 4, 5), LayoutFree),
    "ReLU": (npnet.ReLU, (2, 3, 4, 5), LayoutFree),
    "AvgPool2d(2, 2)": (lambda: npnet.AvgPool2d(2, 2), (3, 2, 8, 8), AvgPool2dKernel),
    "AvgPool2d(3, stride 2), overlapping": (lambda: npnet.AvgPool2d(3, stride=2),
                                            (2, 3, 7, 8), AvgPool2dKernel),
    "AvgPool2d(3, padding 1)": (lambda: npnet.AvgPool2d(3, stride=1, padding=1),
                                (2, 2, 5, 6), AvgPool2dKernel),
    "AdaptiveAvgPool2d(1), global": (lambda: npnet.AdaptiveAvgPool2d(1), (3, 4, 5, 6),
                                     AdaptiveAvgPool2dKernel),
    "AdaptiveAvgPool2d((2, 3)), dividing": (lambda: npnet.AdaptiveAvgPool2d((2, 3)),
                                            (3, 2, 8, 9), AdaptiveAvgPool2dKernel),
    "AdaptiveAvgPool2d((3, 4)), uneven windows": (lambda: npnet.AdaptiveAvgPool2d((3, 4)),
                                                  (2, 3, 5, 7), AdaptiveAvgPool2dKernel),
    "Identity": (npnet.Identity, (2, 3, 4, 5), LayoutFree),
    "Identity 2-D": (npnet.Identity, (4, 7), LayoutFree),
    "Flatten": (npnet.Flatten, (3, 4, 2, 5), FlattenKernel),
    "Linear": (lambda: npnet.Linear(7, 5), (4, 7), LinearKernel),
    "Linear, no bias": (lambda: npnet.Linear(3, 6, bias=False), (5, 3), LinearKernel),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("training", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_kernel_gives_what_its_layer_as_written_gives(name, training, dtype):
    """Output, dL/dx, every parameter gradient and the moving statistics, in the layer's
    dtype."""
    make, shape, kernel_class = LAYERS[name]
    assert kernel_for(make()) is kernel_class
    expected, got = kernel_and_layers(make, randn(*shape) * 2 + 0.5, dtype, training)
    assert_same(expected, got, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_a_kernel_told_no_input_gradient_is_needed_changes_no_parameter_gradient(name, dtype):
    make, shape, _ = LAYERS[name]
    expected, got = kernel_and_layers(make, randn(*shape) * 2 + 0.5, dtype, training=True,
                                      input_grad=False)
    del expected["dL/dx"]
    got.pop("dL/dx", None)  # a kernel may skip it (Conv2d, Linear) or compute it anyway
    assert_same(expected, got, dtype)


def test_kernels_leave_the_layers_own_cache_alone_and_refuse_a_backward_before_forward():
    layer = npnet.Conv2d(1, 2, 3)
    kernel = Conv2dKernel(layer)
    with pytest.raises(RuntimeError, match=r"npnet.fast: backward of Conv2d\(1, 2, "
                                           r"kernel_size=3\) called before forward"):
        kernel.backward(np.zeros((2, 3, 3, 1), dtype=np.float32))
    kernel.forward(np.zeros((1, 5, 5, 1), dtype=np.float32))
    assert layer.cache is None
    with pytest.raises(RuntimeError, match="before forward"):  # the layer's own backward
        layer.backward(np.zeros((1, 2, 3, 3), dtype=np.float32))


# ---------------------------------------------------------------- the layout's building blocks
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_im2col_and_col2im_batch_last_match_the_textbook(dtype):
    x = randn(3, 2, 7, 9, dtype=dtype)
    kernel, stride, padding = (3, 2), (2, 1), (1, 1)
    x_padded = windows.pad(x, padding)
    reference = windows.im2col(x_padded, kernel, stride)  # (N, C, Ho, Wo, kh, kw), a view
    x_padded_last = layout.pad(to_batch_last(x), padding)
    np.testing.assert_array_equal(x_padded_last, to_batch_last(x_padded))
    cols = layout.im2col(x_padded_last, kernel, stride)  # (C, kh, kw, Ho, Wo, N)
    assert cols.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(cols, reference.transpose(1, 4, 5, 2, 3, 0))
    np.testing.assert_array_equal(layout.window_view(x_padded_last, kernel, stride), cols)
    reused = np.empty_like(cols)
    assert layout.im2col(x_padded_last, kernel, stride, out=reused) is reused
    np.testing.assert_array_equal(reused, cols)

    grad_windows = randn(*reference.shape, seed=5, dtype=dtype)
    expected = windows.col2im(grad_windows, x_padded.shape, stride, padding)
    grad_x = layout.col2im(np.ascontiguousarray(grad_windows.transpose(1, 4, 5, 2, 3, 0)),
                           x_padded_last.shape, stride, padding)
    assert_close(from_batch_last(grad_x), expected, dtype, "col2im")


@pytest.mark.parametrize("block_bytes", [1, 2000, 10 ** 9], ids=["one row", "some rows", "all"])
def test_windows_by_rows_are_im2col_cut_into_output_rows(block_bytes):
    x_padded = layout.pad(to_batch_last(randn(5, 2, 11, 9)), (1, 2))
    kernel, stride = (3, 3), (2, 1)
    cols = layout.im2col(x_padded, kernel, stride)
    seen = []
    for i0, i1, block in layout.windows_by_rows(x_padded, kernel, stride, block_bytes):
        np.testing.assert_array_equal(block, cols[:, :, :, i0:i1])
        seen.append((i0, i1))
    assert seen[0][0] == 0 and seen[-1][1] == cols.shape[3]
    assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))  # consecutive, no row twice
    if block_bytes == 1:
        assert all(i1 - i0 == 1 for i0, i1 in seen)
    if block_bytes == 10 ** 9:
        assert len(seen) == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_blocked_matrix_products_equal_the_plain_ones(dtype):
    a = randn(6, 25, seed=1, dtype=dtype)
    b = randn(25, 10000, seed=2, dtype=dtype)
    g = randn(6, 10000, seed=3, dtype=dtype)
    assert_close(fast_conv.matmul_blocked(a, b), a @ b, dtype, "a @ b")
    assert_close(fast_conv.matmul_transposed_blocked(g, b), g @ b.T, dtype, "g @ b.T")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", [((3, 5), (1, 1), (0, 0)), ((3, 3), (2, 1), (1, 2)),
                                    ((2, 3), (2, 2), (1, 0))], ids=str)
@pytest.mark.parametrize("block_bytes", [1, 2000, 10 ** 9], ids=["one row", "some rows", "all"])
def test_blocked_convolution_equals_the_whole_one(config, block_bytes, dtype):
    """The convolution and its parameter gradients a few output rows at a time (evaluation,
    and a first layer) against im2col of the whole input; block_bytes=1 forces a block per
    output row."""
    kernel, stride, padding = config
    x = randn(2, 11, 9, 5, seed=2, dtype=dtype)  # (C, H, W, N)
    weight = randn(4, 2, *kernel, seed=3, dtype=dtype)
    bias = randn(4, seed=4, dtype=dtype)
    expected, cols = fast_conv.conv2d_forward(x, weight, bias, stride, padding)
    y = fast_conv.conv2d_forward_blocked(x, weight, bias, stride, padding, block_bytes)
    assert_close(y, expected, dtype, f"blocked convolution, block_bytes={block_bytes}")

    grad_out = randn(*y.shape, seed=5, dtype=dtype)
    grad_x, grad_weight, grad_bias = fast_conv.conv2d_backward(
        grad_out, cols, weight, x.shape, stride, padding, input_grad=False)
    assert grad_x is None
    blocked = fast_conv.conv2d_weight_grad_blocked(grad_out, x, weight.shape, stride, padding,
                                                   block_bytes)
    assert_close(blocked[0], grad_weight, dtype, "blocked dL/dW")
    assert_close(blocked[1], grad_bias, dtype, "blocked dL/db")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_convolution_kernel_without_input_gradient_keeps_x_and_gives_the_same_dW(dtype):
    """With input_grad=False (a first layer) the kernel keeps x, not its windows, and rebuilds
    the windows block by block for dL/dW; with input_grad=True it keeps the windows."""
    x = to_batch_last(randn(3, 2, 7, 8, seed=3, dtype=dtype))
    grad_out = to_batch_last(randn(3, 4, 7, 4, seed=4, dtype=dtype))
    results = {}
    for input_grad in (True, False):
        (layer,) = twins(lambda: npnet.Conv2d(2, 4, 3, stride=(1, 2), padding=1), dtype,
                         count=1)
        kernel = Conv2dKernel(layer, input_grad=input_grad)
        y = kernel.forward(x)
        kept = kernel.cache
        if input_grad:
            assert kept.x is None and kept.cols is not None
        else:
            assert kept.cols is None and kept.x is x
        grad_x = kernel.backward(grad_out)
        assert (grad_x is None) == (not input_grad)
        results[input_grad] = (y, layer.weight.grad.copy(), layer.bias.grad.copy())
    for what, kept_cols, kept_x in zip(["y", "dL/dW", "dL/db"], results[True], results[False]):
        assert_close(kept_x, kept_cols, dtype, what)


# ------------------------------------------------------- BatchNorm -> Sigmoid -> AvgPool2d
POOLS = [(2, 2), (3, 2), (3, 1)]
POOL_IDS = ["AvgPool2d(2, 2)", "AvgPool2d(3, stride 2)", "AvgPool2d(3, 1)"]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("training", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("pool_shape", POOLS, ids=POOL_IDS)
def test_the_fused_kernel_gives_what_the_three_layers_give(pool_shape, training, dtype):
    """BatchNorm, Sigmoid and AvgPool2d as written, one after another, against the fused
    kernel: output, dL/dx, dL/dgamma, dL/dbeta and the moving statistics."""
    kernel_size, stride = pool_shape

    def block():
        return npnet.Sequential(npnet.BatchNorm(3, 4), npnet.Sigmoid(),
                                npnet.AvgPool2d(kernel_size, stride=stride))
    assert BatchNormSigmoidPoolKernel.fits(list(block()))
    expected, got = kernel_and_layers(block, randn(4, 3, 7, 8, seed=11) * 3 + 1, dtype,
                                      training, kernel_class=BatchNormSigmoidPoolKernel)
    assert_same(expected, got, dtype)


# ------------------------------- Conv2d -> BatchNorm -> Sigmoid -> AvgPool2d, evaluation mode
CONV_BLOCKS = {
    "LeNet's first block": (lambda: npnet.Conv2d(1, 6, 5), 2, (3, 1, 28, 28)),
    "LeNet's second block": (lambda: npnet.Conv2d(6, 16, 5), 2, (3, 6, 12, 12)),
    # 7 rows of output: the pooling covers 6 of them, the last row is left out
    "padding, odd rows": (lambda: npnet.Conv2d(2, 3, 3, padding=1), 2, (2, 2, 7, 9)),
    "stride 2, no bias, pool 3": (lambda: npnet.Conv2d(3, 4, 3, stride=2, bias=False), 3,
                                  (2, 3, 15, 13)),
    "more rows than a block": (lambda: npnet.Conv2d(2, 3, 3), 2, (90, 2, 18, 18)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("input_grad", [True, False], ids=["dL/dx", "no dL/dx"])
@pytest.mark.parametrize("case", list(CONV_BLOCKS))
def test_the_evaluation_conv_block_gives_what_the_four_layers_give(case, input_grad, dtype):
    """Conv2d, BatchNorm (non-trivial moving statistics), Sigmoid and AvgPool2d as written, in
    evaluation mode, against ConvBlockEvalKernel: output, and (by its backward through the
    kernels it stands for) dL/dx and every parameter gradient."""
    make_conv, pool_size, shape = CONV_BLOCKS[case]

    def block():
        conv = make_conv()
        return npnet.Sequential(conv, npnet.BatchNorm(conv.out_channels, 4), npnet.Sigmoid(),
                                npnet.AvgPool2d(pool_size))
    assert ConvBlockEvalKernel.fits(list(block().eval()))
    expected, got = kernel_and_layers(block, randn(*shape, seed=12) * 2, dtype, False,
                                      kernel_class=ConvBlockEvalKernel, input_grad=input_grad)
    if not input_grad:
        expected.pop("dL/dx"), got.pop("dL/dx", None)
    assert_same(expected, got, dtype)


def test_the_evaluation_conv_block_fits_evaluation_mode_and_tiling_pools_only():
    def block(pool, training=False):
        return list(npnet.Sequential(npnet.Conv2d(1, 2, 3), npnet.BatchNorm(2, 4),
                                     npnet.Sigmoid(), pool).train(training))
    assert ConvBlockEvalKernel.fits(block(npnet.AvgPool2d(2)))
    assert not ConvBlockEvalKernel.fits(block(npnet.AvgPool2d(2), training=True))
    assert not ConvBlockEvalKernel.fits(block(npnet.AvgPool2d(3, stride=2)))  # overlapping
    assert not ConvBlockEvalKernel.fits(block(npnet.AvgPool2d(2, padding=1)))
    hooked = block(npnet.AvgPool2d(2))
    hooked[0].register_forward_hook(lambda *args: None)
    assert not ConvBlockEvalKernel.fits(hooked)


def block_net(pool_layer):
    return npnet.Sequential(npnet.Conv2d(2, 3, 3, padding=1), npnet.BatchNorm(3, 4),
                            npnet.Sigmoid(), pool_layer, npnet.Flatten())


def kinds(fast, x):
    return [type(kernel) for kernel in fast.plan(x)]


def test_lenet_bn_runs_both_of_its_blocks_fused():
    fast = FastNet(lenet(batch_norm=True))
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    head = [FlattenKernel, LinearKernel, BatchNormKernel, SigmoidKernel,
            LinearKernel, BatchNormKernel, SigmoidKernel, LinearKernel]
    assert kinds(fast.train(), x) == [Conv2dKernel, BatchNormSigmoidPoolKernel,
                                      Conv2dKernel, BatchNormSigmoidPoolKernel] + head
    # in evaluation mode each convolution joins its block (conv_block.py)
    assert kinds(fast.eval(), x) == [ConvBlockEvalKernel, ConvBlockEvalKernel] + head


def test_a_hook_or_padding_on_the_pool_stops_fusion():
    x = np.random.default_rng(0).random((2, 2, 6, 6)).astype(np.float32)
    assert BatchNormSigmoidPoolKernel in kinds(FastNet(block_net(npnet.AvgPool2d(2))), x)

    hooked = block_net(npnet.AvgPool2d(2))
    seen = []
    hooked[3].register_forward_hook(lambda module, inp, out: seen.append(inp.shape))
    fast = FastNet(hooked)
    assert kinds(fast, x) == [Conv2dKernel, BatchNormKernel, SigmoidKernel, AvgPool2dKernel,
                              FlattenKernel]
    fast(x)
    assert seen == [(2, 3, 6, 6)]  # the hook saw the sigmoid's output, batch first

    padded = block_net(npnet.AvgPool2d(3, stride=1, padding=1))
    assert BatchNormSigmoidPoolKernel not in kinds(FastNet(padded), x)
    assert AvgPool2dKernel in kinds(FastNet(padded), x)


# ------------------------------------------------------------------------ whole networks
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("training", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("batch_norm", [True, False], ids=["LeNet-BN", "LeNet"])
def test_lenet_through_fastnet_gives_what_sequential_gives(batch_norm, training, dtype):
    """Logits, loss, dL/dx, every parameter gradient and every moving statistic; with
    input_grad=False the same (to rounding: the first convolution then takes its blocked
    path), without dL/dx."""
    x, labels = images(10, seed=7, dtype=dtype)
    as_written, fast, fast_skipping = twins(lambda: lenet(batch_norm=batch_norm), dtype,
                                            training, count=3)
    expected = step_results(as_written, x, labels)
    fast_net = FastNet(fast, input_grad=True)
    assert AsWritten not in kinds(fast_net, x)  # every kernel was proven and runs
    got = step_results(fast_net, x, labels)
    assert_same(expected, got, dtype)
    assert got["logits"].flags.c_contiguous and got["dL/dx"].flags.c_contiguous

    # the images need no gradient: skipping it changes no parameter gradient
    skipped = step_results(FastNet(fast_skipping, input_grad=False), x, labels)
    assert "dL/dx" not in skipped
    del expected["dL/dx"], got["dL/dx"]
    assert_same(got, skipped, dtype)
    assert_same(expected, skipped, dtype)


def global_pool_net():
    """What ends a ResNet: 'same' convolution, BatchNorm, ReLU, an identity shortcut's layer,
    global average pooling, Flatten, Linear."""
    return npnet.Sequential(npnet.Conv2d(2, 4, 3, padding="same"), npnet.BatchNorm(4, 4),
                            npnet.ReLU(), npnet.Identity(), npnet.AdaptiveAvgPool2d(1),
                            npnet.Flatten(), npnet.Linear(4, 3))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("training", MODES, ids=MODE_IDS)
def test_a_global_pooling_head_through_fastnet_gives_what_sequential_gives(training, dtype):
    x, labels = randn(5, 2, 6, 7, seed=3, dtype=dtype), np.array([0, 2, 1, 1, 0])
    as_written, fast = twins(global_pool_net, dtype, training)
    fast_net = FastNet(fast, input_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)  # every kernel proven, none replaced
        assert kinds(fast_net, x) == [Conv2dKernel, BatchNormKernel, LayoutFree, LayoutFree,
                                      AdaptiveAvgPool2dKernel, FlattenKernel, LinearKernel]
        assert_same(step_results(as_written, x, labels), step_results(fast_net, x, labels),
                    dtype)


class Doubling(npnet.Module):
    """A learner's layer the backend has never heard of: y = 2x."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        return 2 * grad_out


def unknown_layer_net(middle):
    return npnet.Sequential(npnet.Conv2d(2, 3, 3, padding=1), middle, npnet.Conv2d(3, 2, 3),
                            npnet.Flatten(), npnet.Linear(8, 3))


def test_maxpool_runs_as_written_between_kernels_without_a_notice():
    """MaxPool2d has no kernel of its own yet: it runs as written, on batch-first arrays,
    between two convolution kernels, and that is no news."""
    x, labels = randn(4, 2, 8, 8), np.array([0, 1, 2, 1])
    as_written, fast = twins(lambda: unknown_layer_net(npnet.MaxPool2d(2)))
    fast_net = FastNet(fast, input_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        assert kinds(fast_net, x) == [Conv2dKernel, AsWritten, Conv2dKernel, FlattenKernel,
                                      LinearKernel]
        assert_same(step_results(as_written, x, labels), step_results(fast_net, x, labels),
                    np.float64)


def test_a_layer_without_a_kernel_runs_as_written_between_kernels_with_a_notice():
    x, labels = randn(4, 2, 4, 4), np.array([0, 1, 2, 1])
    as_written, fast = twins(lambda: unknown_layer_net(Doubling()))
    fast_net = FastNet(fast, input_grad=True)
    with pytest.warns(FastPathWarning, match=r"npnet.fast: Doubling\(\) \(layer 1\) has no "
                                             r"fast kernel; running it as written"):
        plan = fast_net.plan(x)
    assert [type(kernel) for kernel in plan] == [Conv2dKernel, AsWritten, Conv2dKernel,
                                                 FlattenKernel, LinearKernel]
    assert_same(step_results(as_written, x, labels), step_results(fast_net, x, labels),
                np.float64)


@pytest.mark.parametrize("input_grad", [False, True], ids=["input_grad=False", "input_grad=True"])
def test_hooks_fire_per_layer_with_batch_first_arrays_through_fastnet(input_grad):
    """Every layer's forward hook sees its own input and output, every backward hook its own
    dL/dy and dL/dx, batch first, as under Sequential; the first layer's dL/dx is None when
    FastNet skips it."""
    x, labels = images(5, dtype=np.float64)
    nets = twins(lenet, np.float64)
    seen = []
    for net in nets:
        record = {"forward": [], "backward": []}
        seen.append(record)
        for layer in net:
            layer.register_forward_hook(
                lambda module, inp, out, record=record:
                record["forward"].append((module, inp.copy(), out.copy())))
            layer.register_backward_hook(
                lambda module, g_out, g_in, record=record:
                record["backward"].append((module, g_out.copy(),
                                           None if g_in is None else g_in.copy())))
    step_results(nets[0], x, labels)
    step_results(FastNet(nets[1], input_grad=input_grad), x, labels)

    (as_written, fast), (net, fast_net) = seen, nets
    assert [m for m, _, _ in fast["forward"]] == list(fast_net)
    assert [m for m, _, _ in fast["backward"]] == list(fast_net)[::-1]
    assert fast["forward"][0][1].shape == (5, 1, 28, 28)
    assert (fast["forward"][8][1].shape, fast["forward"][8][2].shape) == \
        ((5, 16, 4, 4), (5, 256))  # what Flatten saw
    for position, (want, got) in enumerate(zip(as_written["forward"], fast["forward"])):
        assert_close(got[1], want[1], np.float64, f"input seen by layer {position}")
        assert_close(got[2], want[2], np.float64, f"output seen by layer {position}")
    for want, got in zip(as_written["backward"], fast["backward"]):
        position = list(fast_net).index(got[0])
        assert_close(got[1], want[1], np.float64, f"dL/dy seen by layer {position}")
        if position == 0 and not input_grad:
            assert got[2] is None  # the images' gradient was skipped
        else:
            assert_close(got[2], want[2], np.float64, f"dL/dx seen by layer {position}")


@pytest.mark.filterwarnings("ignore::npnet.FastPathWarning")  # the proof fails on it too
def test_fastnet_errors_name_the_batch_first_shapes():
    fast = FastNet(lenet())
    with pytest.raises(ValueError, match=r"Conv2d\(1, 6, kernel_size=5\) expects input "
                                         r"\(N, 1, H, W\); got \(2, 3, 28, 28\)"):
        fast(np.zeros((2, 3, 28, 28), dtype=np.float32))
    logits = fast(np.zeros((2, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match=r"FastNet.backward expects grad_out of shape "
                                         r"\(2, 10\).*got \(3, 10\)"):
        fast.backward(np.zeros((3, 10), dtype=logits.dtype))


def test_gradcheck_through_the_fast_backend():
    """gradcheck converts the network to float64 and runs it through FastNet's kernels."""
    npnet.manual_seed(0)
    net = npnet.Sequential(npnet.Conv2d(2, 3, 3, padding=1), npnet.BatchNorm(3, 4),
                           npnet.Sigmoid(), npnet.AvgPool2d(2), npnet.Flatten(),
                           npnet.Linear(12, 4), npnet.BatchNorm(4, 2), npnet.Tanh())
    fast = FastNet(net, input_grad=True)
    assert AsWritten not in kinds(fast, randn(3, 2, 4, 4))
    result = npnet.gradcheck(fast, randn(3, 2, 4, 4), seed=1)
    assert result.max_error < 1e-6, str(result)


# ----------------------------------------------------------------------- the rules
def test_the_layers_and_kernels_call_no_add_at():
    from npnet.fast import batchnorm as fast_batchnorm, fused, kernel, net, pool as fast_pool
    modules = (activation, batchnorm, container, conv, flatten, linear, pool, windows,
               layout, fast_conv, fast_batchnorm, fast_pool, fused, kernel, net)
    for module in modules:
        assert "add.at(" not in inspect.getsource(module), module.__name__


# ------------------------------------------------------------- float32 sums over long rows
@pytest.mark.parametrize("M", [7, 1024, 1025, 5000])
def test_blocked_row_sums_are_the_row_sums(M):
    from npnet.fast.batchnorm import row_dot, row_sum
    x, y = randn(3, M), randn(3, M, seed=2)
    np.testing.assert_allclose(row_sum(x), x.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(row_dot(x, y), (x * y).sum(axis=1, keepdims=True), rtol=1e-12,
                               atol=1e-11)


def test_float32_row_sums_do_not_grow_their_error_with_the_row():
    """LeNet's first BatchNorm at batch 256 sums 147,456 float32 values per feature. One
    running sum is off by about 1.6e-6 here (relative); sums of blocks, then of the
    partial sums, stay at the error of a block (measured 5e-8)."""
    from npnet.fast.batchnorm import row_dot, row_sum
    rng = np.random.default_rng(0)
    x = (rng.random((6, 256 * 24 * 24)) + 0.5).astype(np.float32)  # positive: no cancelling
    exact = x.astype(np.float64).sum(axis=1, keepdims=True)
    assert row_sum(x).dtype == np.float32
    assert np.abs(row_sum(x) / exact - 1).max() < 3e-7
    exact_squares = (x.astype(np.float64) ** 2).sum(axis=1, keepdims=True)
    assert np.abs(row_dot(x, x) / exact_squares - 1).max() < 3e-7
