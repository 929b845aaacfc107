"""Residual and Concat: gradients that add up and split, checked every way (d2l 7.6, 7.7).

- gradcheck in float64 of each block (both shortcut kinds; a dense layer) and of the whole
  small ResNet and DenseNet with their loss, in training and evaluation mode, with BatchNorm
  parameters and moving statistics that are not ones and zeros;
- planted mistakes that these checks must catch: the shortcut's gradient assigned instead of
  added, the concatenation's gradient split at the wrong channels;
- the fast backend: the same numbers as the blocks as written, a broken block run as written;
- summary, hooks, the Recorder and checkpoints through the blocks; clear errors.

ReLU has a kink at 0, where a finite difference straddling it measures neither slope. Each
check uses a batch on which no ReLU input lies within ``KINK_MARGIN`` of 0 (``kink_free``), a
hundred times more than any nudge of h = 1e-5 moves one, so the numbers compared are slopes.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import npnet
from npnet import (AdaptiveAvgPool2d, BatchNorm, Concat, Conv2d, CrossEntropyLoss, FastNet,
                   FastPathWarning, Flatten, Identity, Linear, ReLU, Residual, Sequential)
from npnet.fast.branches import ConcatKernel, ResidualKernel
from npnet.gradcheck import central_difference, relative_errors
from npnet.models import dense_block, densenet, residual_block, resnet

from conftest import assert_same, step_results, twins

H = 1e-5  # the finite-difference step
H_INPUT = 1e-4  # for a whole network's dL/dx, which is small enough to drown in rounding at H
BAR = 1e-6  # the bar for a correct backward
KINK_MARGIN = 1e-3


def relu_inputs_margin(net, x) -> float:
    """The smallest |input| of any ReLU in ``net`` on x (a forward in the net's mode)."""
    smallest = []
    handles = [layer.register_forward_hook(lambda _, inputs, __: smallest.append(
        float(np.abs(inputs).min()))) for layer in net.modules() if isinstance(layer, ReLU)]
    state = net.state_dict()
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
        net.load_state_dict(state)  # a training-mode forward moved the moving averages
    return min(smallest, default=np.inf)


def kink_free(net, shape, first_seed=0):
    """A standard-normal batch of ``shape`` on which every ReLU input is at least KINK_MARGIN
    away from 0, and labels for it (the first seed from ``first_seed`` that gives one)."""
    for seed in range(first_seed, first_seed + 200):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(shape)
        if relu_inputs_margin(net, x) > KINK_MARGIN:
            return x, rng.integers(0, 5, shape[0])
    raise AssertionError("no kink-free batch in 200 seeds: make the test network smaller")


def with_head(block, outputs):
    """block -> Flatten -> Linear(outputs, 5): checked with the loss, whose size (about 2)
    keeps rounding in the finite differences far below the bar."""
    return Sequential(block, Flatten(), Linear(outputs, 5))


BLOCKS = {
    # name: (make the block, the size of its output per sample, input shape)
    "residual, identity shortcut": (lambda: residual_block(3, 3), 3 * 5 * 5, (4, 3, 5, 5)),
    "residual, 1x1 stride-2 shortcut": (lambda: residual_block(3, 4, use_1x1conv=True,
                                                               stride=2), 4 * 3 * 3,
                                        (4, 3, 6, 6)),
    "dense block": (lambda: dense_block(2, 3, growth_rate=2), 7 * 5 * 5, (4, 3, 5, 5)),
}
NETWORKS = {
    "resnet": (lambda: resnet(channels=(2, 3, 4), num_classes=5), (4, 1, 8, 8)),
    "densenet": (lambda: densenet(stem_channels=4, growth_rate=2, convs_per_block=(2, 2),
                                  num_classes=5), (4, 1, 8, 8)),
}
MODES = pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])


def built(make, training=True):
    """make() in float64 with non-trivial BatchNorm state (conftest.twins), its shifts beta
    and moving means shrunk so that no ReLU channel is dead on every sample (a gradient that
    is exactly zero checks nothing), and its last Linear layer's weights scaled up."""
    (net,) = twins(make, training=training, count=1)
    for layer in net.modules():
        if isinstance(layer, BatchNorm):
            layer.beta.data *= 0.2
            layer.moving_mean = layer.moving_mean * 0.2
    # logits of a few units, not a few hundredths: the gradients reaching the first layers
    # then stand well above the rounding of the loss in the finite differences
    head = [layer for layer in net.modules() if isinstance(layer, Linear)][-1]
    head.weight.data *= 10
    return net


def check(net, shape, training, h=H, check_input=True, max_entries=None):
    """gradcheck of net with the cross-entropy loss, on a kink-free batch."""
    net.train(training)
    x, labels = kink_free(net, shape)
    return npnet.gradcheck(net, x, loss=CrossEntropyLoss(), labels=labels, h=h,
                           check_input=check_input, max_entries=max_entries)


@pytest.mark.parametrize("name", BLOCKS)
@MODES
def test_gradcheck_of_each_block(name, training):
    make, channels, shape = BLOCKS[name]
    net = built(lambda: with_head(make(), channels), training)
    result = check(net, shape, training)
    assert result.max_error < BAR, str(result)
    checked = {array.name for array in result.arrays}
    if "1x1" in name:  # the shortcut's own parameters are checked too
        assert {"0.0.shortcut.0.weight", "0.0.shortcut.1.gamma"} <= checked


def whole_network_errors(net, x, labels, entries=24, seed=0) -> dict:
    """{array name: worst relative error} of a whole network's gradients against five-point
    finite differences (npnet.gradcheck's), ``entries`` random entries per array, each
    parameter nudged by H and each input pixel by H_INPUT (a nudge of a weight moves many ReLU
    inputs at once, one of a pixel few). Every error is judged on the scale of the network's
    largest gradient (as proof.compare does): some BatchNorm parameters of a small random
    network get gradients a million times smaller than the rest, where the rounding of the loss
    alone would be a relative error of 1e-5 on their own scale."""
    rng = np.random.default_rng(seed)
    criterion = CrossEntropyLoss()
    buffers = {name: value.copy() for name, value in net.named_buffers()}

    def loss() -> float:
        net.load_state_dict({**net.state_dict(), **buffers})  # training mode moves them
        return criterion(net(x), labels)
    net.zero_grad()
    loss()
    grad_x = net.backward(criterion.backward())
    arrays = [("input", x, grad_x, H_INPUT)] + [
        (name, param.data, param.grad.copy(), H) for name, param in net.named_parameters()]
    largest = max(float(np.abs(analytic).max()) for _, _, analytic, _ in arrays)
    errors = {}
    for name, values, analytic, h in arrays:
        picked = rng.choice(values.size, min(entries, values.size), replace=False)
        numeric = np.array([central_difference(loss, values, np.unravel_index(flat, values.shape),
                                               h) for flat in picked])
        errors[name] = float(relative_errors(analytic.reshape(-1)[picked], numeric,
                                             largest).max())
    return errors


@pytest.mark.parametrize("name", NETWORKS)
@MODES
def test_gradcheck_of_the_whole_small_networks(name, training):
    make, shape = NETWORKS[name]
    net = built(make, training)
    x, labels = kink_free(net, shape)
    errors = whole_network_errors(net, x, labels)
    assert len(errors) == 1 + len(net.parameters())  # the input and every parameter
    assert max(errors.values()) < BAR, errors


# ------------------------------------------------------------------------- planted mistakes
def shortcut_gradient_assigned(self, grad_out):
    """Residual.backward with the mistake: the shortcut's gradient replaces the body's
    (``=`` where the two paths' gradients must be added)."""
    grad_out = self.check_grad(grad_out, self.require_cache())
    grad_x = self.body.run_backward(grad_out)
    grad_x = grad_out if self.shortcut is None else self.shortcut.run_backward(grad_out)
    return grad_x


def split_at_the_wrong_channels(self, grad_out):
    """Concat.backward with the mistake: each branch gets the channels counted from the other
    end (right sizes, wrong channels)."""
    channels, output_shape = self.require_cache()
    grad_out = self.check_grad(grad_out, output_shape)
    grad_x, end = None, grad_out.shape[1]
    for branch, size in zip(self.branches, channels):
        part = np.ascontiguousarray(grad_out[:, end - size:end])
        end -= size
        grad_branch = branch.run_backward(part)
        grad_x = grad_branch if grad_x is None else grad_x + grad_branch
    return grad_x


@pytest.mark.parametrize("name", ["residual, identity shortcut",
                                  "residual, 1x1 stride-2 shortcut"])
def test_gradcheck_catches_the_shortcut_gradient_assigned_instead_of_added(name, monkeypatch):
    make, channels, shape = BLOCKS[name]
    (net,) = twins(lambda: with_head(make(), channels), count=1)
    monkeypatch.setattr(Residual, "backward", shortcut_gradient_assigned)
    result = check(net, shape, training=True)
    assert result.max_error > 1e-2, str(result)
    assert result.worst.name == "input" or "body" in result.worst.name


def test_gradcheck_catches_a_concatenation_split_at_the_wrong_channels(monkeypatch):
    # two branches of the same width, so that the wrong split still has the right shapes
    block = Concat(Identity(), Sequential(BatchNorm(3, num_dims=4), ReLU(),
                                          Conv2d(3, 3, kernel_size=3, padding=1)))
    (net,) = twins(lambda: with_head(block, 6 * 5 * 5), count=1)
    monkeypatch.setattr(Concat, "backward", split_at_the_wrong_channels)
    result = check(net, (4, 3, 5, 5), training=True)
    assert result.max_error > 1e-2, str(result)


def test_a_split_with_the_wrong_sizes_is_refused_by_the_branch():
    block = Concat(Identity(), Conv2d(3, 2, kernel_size=1))
    y = block(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32))
    assert y.shape == (2, 5, 4, 4)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 2, kernel_size=1\)\.backward expects "
                                         r"grad_out of shape \(2, 2, 4, 4\)"):
        block.branches[1].backward(np.ones((2, 3, 4, 4)))


# ------------------------------------------------------------------------ the fast backend
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NETWORKS)
@MODES
def test_fast_backend_gives_the_numbers_of_the_blocks_as_written(name, training, dtype):
    make, shape = NETWORKS[name]
    as_written, running = twins(make, dtype=dtype, training=training)
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal(shape).astype(dtype), rng.integers(0, 5, shape[0])
    fast = FastNet(running, input_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)  # every kernel proven
        assert_same(step_results(as_written, x, labels), step_results(fast, x, labels), dtype)
    kinds = [type(kernel) for kernel in fast.plan(x)]
    assert (ResidualKernel if name == "resnet" else ConcatKernel) in kinds


def test_a_broken_residual_backward_runs_as_written_with_a_notice(monkeypatch):
    make, shape = NETWORKS["resnet"]
    (net,) = twins(make, count=1)
    monkeypatch.setattr(Residual, "backward", shortcut_gradient_assigned)
    fast = FastNet(net, input_grad=True)
    x, labels = kink_free(net, shape)
    with pytest.warns(FastPathWarning, match=r"Residual \(layer 3\.0\) differs from its fast "
                                             r"kernel by .* in dL/d"):
        kinds = [type(kernel).__name__ for kernel in fast.plan(x)]
    assert kinds.count("AsWritten") == 3 and "ResidualKernel" not in kinds
    # what runs is the broken code: the check of the fast network fails as the layers' does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FastPathWarning)
        result = npnet.gradcheck(fast, x, loss=CrossEntropyLoss(), labels=labels, h=H,
                                 max_entries=10)
    assert result.max_error > 1e-2


def test_a_layer_edited_inside_a_block_is_named_by_its_place(monkeypatch):
    make, shape = NETWORKS["resnet"]
    (net,) = twins(make, count=1)
    original = npnet.batchnorm.batch_norm_backward

    def wrong(grad_out, cache):
        grad_x, grad_gamma, grad_beta = original(grad_out, cache)
        return 2 * grad_x, grad_gamma, grad_beta
    monkeypatch.setattr(npnet.batchnorm, "batch_norm_backward", wrong)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FastPathWarning)
        FastNet(net)(np.zeros(shape))
    notices = [str(warning.message) for warning in caught]
    assert len(notices) == sum(isinstance(m, BatchNorm) for m in net.modules())  # each once
    assert ("npnet.fast: BatchNorm(3, num_dims=4) (layer 4.0.body.1) differs from its fast "
            "kernel by 5.0e-01 in dL/dx (training mode); running it as written") in notices


# ------------------------------------------------------- summary, hooks, Recorder, checkpoint
def test_summary_walks_into_the_branches():
    table = resnet().summary((1, 28, 28))
    names = [row.name for row in table.rows]
    assert "4.0.shortcut.0" in names and "4.0" in names
    join = table.rows[names.index("4.0")]
    assert join.layer == "Residual: body + shortcut" and join.output_shape == (1, 32, 14, 14)
    assert table.total_params == sum(p.data.size for p in resnet().parameters())
    dense = densenet().summary((1, 28, 28))
    assert [row.output_shape for row in dense.rows if row.layer.startswith("Concat")][:2] == \
        [(1, 24, 28, 28), (1, 32, 28, 28)]


@pytest.mark.parametrize("fast", [False, True], ids=["as written", "fast"])
def test_hooks_and_the_recorder_see_the_layers_inside_blocks(fast):
    npnet.manual_seed(0)
    net = resnet(channels=(2, 3, 4))
    runner = FastNet(net) if fast else net
    recorder = npnet.instruments.Recorder(net, every=1)
    criterion = CrossEntropyLoss()
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    criterion(runner(x), np.arange(6) % 3)
    runner.backward(criterion.backward())
    recorder.remove()
    assert "3.0.body.0" in recorder.names and "4.0.shortcut.1" in recorder.names
    arrays = recorder.to_arrays()
    assert arrays["steps"].shape == (1,)
    assert np.all(np.isfinite(arrays["std"]))


def test_recorder_numbers_agree_between_fast_and_as_written():
    arrays = {}
    for fast in (False, True):
        npnet.manual_seed(0)
        net = resnet(channels=(2, 3, 4))
        runner = FastNet(net, input_grad=True) if fast else net
        with npnet.instruments.Recorder(net, every=1) as recorder:
            criterion = CrossEntropyLoss()
            criterion(runner(np.random.default_rng(0).random((6, 1, 8, 8))
                             .astype(np.float32)), np.arange(6) % 3)
            runner.backward(criterion.backward())
        arrays[fast] = recorder.to_arrays()
    for stat in arrays[False]:
        np.testing.assert_allclose(arrays[True][stat], arrays[False][stat], rtol=1e-4,
                                   atol=1e-6, err_msg=stat)


def test_a_checkpoint_of_a_resnet_round_trips(tmp_path):
    npnet.manual_seed(0)
    net = nontrivial_copy = twins(resnet, dtype=np.float32, count=1)[0]
    path = tmp_path / "resnet.npz"
    npnet.save_checkpoint(path, net)
    npnet.manual_seed(1)
    other = resnet()
    npnet.load_checkpoint(path, other)
    for (name, a), (_, b) in zip(nontrivial_copy.state_dict().items(),
                                 other.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    with pytest.raises(npnet.checkpoint.CheckpointError, match="densenet|does not fit|missing"):
        npnet.load_checkpoint(path, densenet())


def test_parameters_are_named_by_their_place_in_the_blocks():
    names = [name for name, _ in resnet().named_parameters()]
    assert "4.0.body.0.weight" in names and "4.0.shortcut.0.weight" in names
    assert "3.0.shortcut.0.weight" not in names  # the first stage's shortcut is x itself
    assert "3.1.1.2.weight" in [name for name, _ in densenet().named_parameters()]


# ------------------------------------------------------------------------------- errors
def test_a_residual_whose_paths_disagree_in_shape_says_so():
    block = Residual(Conv2d(3, 4, kernel_size=3, padding=1))
    with pytest.raises(ValueError, match=r"Residual: body output \(2, 4, 5, 5\) and x itself "
                                         r"\(no shortcut\) output \(2, 3, 5, 5\) must have the "
                                         r"same shape.*1x1 Conv2d"):
        block(np.zeros((2, 3, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Residual cannot add"):
        Sequential(block).summary((3, 5, 5))


def test_a_concat_whose_branches_disagree_in_size_says_so():
    block = Concat(Identity(), Conv2d(3, 2, kernel_size=3))
    with pytest.raises(ValueError, match=r"Concat: branch outputs \[\(2, 3, 5, 5\), "
                                         r"\(2, 2, 3, 3\)\] must agree in every axis but the "
                                         r"channels"):
        block(np.zeros((2, 3, 5, 5), dtype=np.float32))


def test_containers_refuse_what_is_not_a_layer_and_a_layer_used_twice():
    with pytest.raises(TypeError, match=r"Residual expects layers .*body is function"):
        Residual(lambda x: x)
    with pytest.raises(TypeError, match=r"Concat expects layers .*branch 1 is ndarray"):
        Concat(Identity(), np.zeros(3))
    with pytest.raises(ValueError, match="Concat expects at least one branch"):
        Concat()
    relu = ReLU()
    with pytest.raises(ValueError, match=r"Residual: layer body and layer shortcut are the "
                                         r"same ReLU\(\) object"):
        Residual(relu, relu)


def test_a_second_backward_through_a_block_is_refused():
    block = residual_block(2, 2)
    y = block(np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32))
    block.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="called twice after one forward"):
        block.backward(np.ones_like(y))


def test_blocks_keep_the_dtype_they_are_given():
    for make, _, shape in BLOCKS.values():
        for dtype in (np.float32, np.float64):
            block = make().astype(dtype)
            x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
            y = block(x)
            assert y.dtype == dtype and block.backward(np.ones_like(y)).dtype == dtype


def test_deepcopy_of_a_block_is_independent():
    block = residual_block(2, 2)
    twin = copy.deepcopy(block)
    twin[0].body[0].weight.data += 1
    assert not np.allclose(twin[0].body[0].weight.data, block[0].body[0].weight.data)


def test_a_parameter_changed_inside_a_block_is_refused_before_any_gradient_is_added():
    block = residual_block(2, 3, use_1x1conv=True, stride=2)
    y = block(np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32))
    block[0].shortcut[0].weight.data = block[0].shortcut[0].weight.data * 2  # a step too early
    with pytest.raises(RuntimeError, match=r"Conv2d\(2, 3, kernel_size=1\)\.weight changed"):
        block.backward(np.ones_like(y))
    assert all(not param.grad.any() for param in block.parameters())  # nothing was added
