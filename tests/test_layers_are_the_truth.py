"""The layers as written are the truth; the fast backend only ever stands in for them.

What a learner writes in npnet/*.py takes effect, on the fast backend too:

- break a textbook backward (here: monkeypatched) and the whole-network gradcheck fails, run
  by Sequential or by FastNet, and training on real digits falls short of the bar the
  unbroken code reaches, with a one-line FastPathWarning naming the broken layer;
- a subclass with its own backward runs, in Sequential and in ``fit``;
- a method replaced at run time is proven again before the next batch;
- and proving a kernel leaves the real network exactly as it was.
"""

from __future__ import annotations

import types
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

import npnet
from conftest import assert_same, images, lenet_bn_for_gradcheck, nontrivial, step_results, \
    train_lenet_bn_on_sample, twins
from npnet.fast import FastNet, FastPathWarning
from npnet.fast.activation import SigmoidKernel
from npnet.fast.fused import BatchNormSigmoidPoolKernel
from npnet.fast.kernel import AsWritten
from npnet.models import lenet
from npnet.train import fit


@pytest.fixture(autouse=True, scope="module")
def _fast_by_default():
    """These tests are about what ``fit`` does by default: never mind NPNET_FAST."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("NPNET_FAST", raising=False)
        yield


@contextmanager
def no_notice():
    """Fail if a FastPathWarning is emitted inside."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastPathWarning)
        yield


def kinds(fast, x) -> list:
    return [type(kernel) for kernel in fast.plan(x)]


# ------------------------------------------------------------------ broken backward passes
def negated(backward):
    """The same backward with every gradient it returns negated."""
    def wrong(*args):
        grads = backward(*args)
        return tuple(-grad for grad in grads) if isinstance(grads, tuple) else -grads
    return wrong


def weight_gradient_negated(backward):
    """The same (grad_x, grad_weight, grad_bias) with dL/dW negated. (Negating all three
    undoes itself between LeNet's two convolutions: the second one's negated dL/dx turns the
    first one's dL/dW right again, and training suffers far less.)"""
    def wrong(*args):
        grad_x, grad_weight, grad_bias = backward(*args)
        return grad_x, -grad_weight, grad_bias
    return wrong


# layer: (where its textbook backward lives, its name there, how it is broken)
BROKEN = {
    "BatchNorm": (npnet.batchnorm, "batch_norm_backward", negated),
    "Conv2d": (npnet.conv, "conv2d_backward", weight_gradient_negated),
    "Linear": (npnet.linear, "linear_backward", negated),
    "AvgPool2d": (npnet.pool, "avg_pool2d_backward", negated),
    "Sigmoid": (npnet.Sigmoid, "backward", negated),
}


@pytest.fixture
def break_backward(monkeypatch):
    """break_backward("BatchNorm") plants BROKEN["BatchNorm"] for the rest of the test."""
    def plant(layer_name):
        where, name, how = BROKEN[layer_name]
        monkeypatch.setattr(where, name, how(getattr(where, name)))
    return plant


def notice_for(layer_name: str) -> str:
    """The start of the FastPathWarning that names a layer of this type."""
    return rf"^npnet\.fast: {layer_name}\("


def assert_every_notice_names(notices, layer_name: str) -> None:
    messages = [str(notice.message) for notice in notices
                if issubclass(notice.category, FastPathWarning)]
    assert messages and all(m.startswith(f"npnet.fast: {layer_name}(") for m in messages), \
        messages


@pytest.mark.parametrize("runner", ["Sequential", "FastNet"])
@pytest.mark.parametrize("layer_name", list(BROKEN))
def test_a_broken_backward_fails_the_whole_lenet_bn_gradcheck(layer_name, runner,
                                                              break_backward):
    net, x, labels = lenet_bn_for_gradcheck(batch=4)
    break_backward(layer_name)
    check = dict(loss=npnet.CrossEntropyLoss(), labels=labels, training=True, max_entries=1)
    if runner == "Sequential":
        with no_notice():
            result = npnet.gradcheck(net, x, **check)
    else:
        with pytest.warns(FastPathWarning, match=notice_for(layer_name)) as notices:
            result = npnet.gradcheck(FastNet(net, input_grad=True), x, **check)
        assert_every_notice_names(notices, layer_name)
    assert result.max_error > 0.5, str(result)  # a correct backward: ~1e-8


# Training on the shipped MNIST sample: the first 3,000 digits, 2 epochs (the second with small
# steps), then the 1,000 held-out digits. Measured, seeds 0-3 (the test uses seed 0):
#
#   unbroken                                      0.885-0.891
#   AvgPool2d, every gradient negated             0.805-0.836
#   Conv2d, dL/dW negated                         0.165-0.763
#   BatchNorm, every gradient negated             0.162-0.359
#   Sigmoid, dL/dx negated                        0.162-0.359
#   Linear, every gradient negated                0.100 (the loss grows to ~1,400)
SHORT_TRAINING = {"epochs": 2, "train_size": 3000}
BAR = 0.86


@pytest.fixture(scope="module")
def unbroken_accuracy(mnist_sample):
    """Held-out accuracy of LeNet-BN after SHORT_TRAINING with every layer as written, run by
    fit on the fast backend: every kernel proven, no notice."""
    with no_notice():
        _, history = train_lenet_bn_on_sample(mnist_sample, **SHORT_TRAINING)
    return history.test_acc[-1]


def test_the_unbroken_layers_reach_the_bar_on_the_fast_backend(unbroken_accuracy):
    assert unbroken_accuracy >= BAR


@pytest.mark.parametrize("layer_name", list(BROKEN))
def test_a_broken_backward_breaks_training_and_is_announced(layer_name, break_backward,
                                                            mnist_sample, unbroken_accuracy):
    break_backward(layer_name)
    with pytest.warns(FastPathWarning, match=notice_for(layer_name)) as notices:
        _, history = train_lenet_bn_on_sample(mnist_sample, **SHORT_TRAINING)
    assert_every_notice_names(notices, layer_name)
    accuracy = history.test_acc[-1]
    assert unbroken_accuracy >= BAR > accuracy, \
        f"broken {layer_name}: {accuracy:.3f}; unbroken {unbroken_accuracy:.3f}; bar {BAR}"


# ------------------------------------------------------------------ gradcheck, unbroken
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("runner", ["Sequential", "FastNet"])
def test_the_whole_lenet_bn_passes_gradcheck_as_written_and_on_the_backend(runner, training):
    net, x, labels = lenet_bn_for_gradcheck()
    if runner == "FastNet":
        net = FastNet(net, input_grad=True)
        net.train(training)
        with no_notice():
            assert AsWritten not in kinds(net, x)  # the kernels themselves are checked
    result = npnet.gradcheck(net, x, loss=npnet.CrossEntropyLoss(), labels=labels,
                             training=training, max_entries=4)
    assert result.max_error < 1e-6, str(result)


# ---------------------------------------------------------------------- a learner's subclass
class RecordingBatchNorm(npnet.BatchNorm):
    """A learner's BatchNorm that counts its backward passes (on this very layer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backward_calls = 0

    def backward(self, grad_out):
        self.backward_calls += 1
        return super().backward(grad_out)


class BatchNormWithConstantStatistics(RecordingBatchNorm):
    """A deliberately wrong one, the classic mistake: in training mode it treats the batch
    mean and variance as constants (the evaluation-mode formula), so dL/dx misses the paths
    through them. In evaluation mode it is right."""

    def backward(self, grad_out):
        self.backward_calls += 1
        cache = self.require_cache()._replace(training=False)
        grad_x, grad_gamma, grad_beta = npnet.batchnorm.batch_norm_backward(grad_out, cache)
        self.gamma.grad += grad_gamma
        self.beta.grad += grad_beta
        return grad_x


def lenet_bn_with(batch_norm_class):
    """LeNet-BN whose first BatchNorm is ``batch_norm_class(6, 4)``."""
    net = lenet(batch_norm=True)
    net.layers[1] = batch_norm_class(6, 4)
    return net


@pytest.mark.parametrize("subclass", [RecordingBatchNorm, BatchNormWithConstantStatistics])
def test_a_subclass_with_its_own_backward_runs_inside_sequential(subclass):
    x, labels = images(8, dtype=np.float64)
    (plain,) = twins(lambda: lenet_bn_with(npnet.BatchNorm), count=1)
    (net,) = twins(lambda: lenet_bn_with(subclass), count=1)
    expected, got = step_results(plain, x, labels), step_results(net, x, labels)
    assert net[1].backward_calls == 1
    if subclass is RecordingBatchNorm:
        assert_same(expected, got, np.float64)
    else:  # its own (wrong) dL/dx reached the convolution below it
        assert not np.allclose(got["dL/d0.weight"], expected["dL/d0.weight"])


def test_a_wrong_subclass_backward_runs_inside_fit_and_is_announced(mnist_sample):
    npnet.manual_seed(0)
    net = lenet_bn_with(BatchNormWithConstantStatistics)
    with pytest.warns(FastPathWarning, match=r"BatchNormWithConstantStatistics, a BatchNorm\(6, "
                                             r"num_dims=4\) \(layer 1\) has its own forward or "
                                             r"backward \(a subclass of BatchNorm\); running it "
                                             r"as written"):
        fit(net, (mnist_sample.x_train[:500], mnist_sample.y_train[:500]),
            (mnist_sample.x_test[:100], mnist_sample.y_test[:100]), epochs=1, batch_size=50,
            lr=0.1, progress=False, verbose=False)
    assert net[1].backward_calls == 10  # once per training step, on the real layer


def test_a_correct_subclass_backward_is_called_inside_fit(mnist_sample):
    """Even one that agrees with the kernel: the learner's own code is what runs (a print or
    a counter in it fires)."""
    npnet.manual_seed(0)
    net = lenet_bn_with(RecordingBatchNorm)
    fit(net, (mnist_sample.x_train[:500], mnist_sample.y_train[:500]), epochs=1,
        batch_size=50, lr=0.1, progress=False, verbose=False)
    assert net[1].backward_calls == 10


# ------------------------------------------------------------------------------ re-proof
wrong_sigmoid_backward = negated(npnet.Sigmoid.backward)  # Sigmoid's own, made wrong


def sigmoid_positions(net) -> list:
    return [position for position, layer in enumerate(net) if isinstance(layer, npnet.Sigmoid)]


def test_a_method_replaced_on_the_class_is_proven_again_and_restoring_it_restores_the_kernel(
        monkeypatch):
    x, _ = images(4)
    fast = FastNet(lenet())
    with no_notice():
        fast(x)
    first = kinds(fast, x)
    assert first.count(BatchNormSigmoidPoolKernel) == 2 and first.count(SigmoidKernel) == 2

    monkeypatch.setattr(npnet.Sigmoid, "backward", negated(npnet.Sigmoid.backward))
    with pytest.warns(FastPathWarning, match=notice_for("Sigmoid")) as notices:
        fast(x)
    assert_every_notice_names(notices, "Sigmoid")
    assert {str(n.message).split(" (layer ")[1].split(")")[0] for n in notices} == \
        {str(position) for position in sigmoid_positions(fast.net)}
    assert BatchNormSigmoidPoolKernel not in kinds(fast, x)
    assert [kernel.layers[0] for kernel in fast.plan(x) if isinstance(kernel, AsWritten)] == \
        [fast.net[position] for position in sigmoid_positions(fast.net)]

    monkeypatch.undo()  # the method as it was
    with no_notice():
        fast(x)
    assert kinds(fast, x) == first


def test_a_method_changed_on_the_class_then_put_back_runs_the_kernel_again():
    x, _ = images(4)
    fast = FastNet(lenet())
    with no_notice():
        fast(x)
    first = kinds(fast, x)
    original = npnet.Sigmoid.backward
    try:
        npnet.Sigmoid.backward = wrong_sigmoid_backward  # as a notebook cell would
        with pytest.warns(FastPathWarning, match=notice_for("Sigmoid")):
            fast(x)
        npnet.Sigmoid.backward = original
        with no_notice():
            fast(x)
        assert kinds(fast, x) == first
        # changed and put back between two batches: nothing to tell either
        npnet.Sigmoid.backward = wrong_sigmoid_backward
        npnet.Sigmoid.backward = original
        with no_notice():
            fast(x)
        assert kinds(fast, x) == first
    finally:
        npnet.Sigmoid.backward = original


def wrong_backward_on(layer, how):
    """A wrong backward for one Sigmoid instance: a method bound to it, or a plain function
    (a closure over the layer, as a learner would write it in a notebook)."""
    if how == "bound method":
        return types.MethodType(wrong_sigmoid_backward, layer)
    return lambda grad_out: wrong_sigmoid_backward(layer, grad_out)


@pytest.mark.parametrize("how", ["bound method", "plain function"])
def test_a_method_replaced_on_one_instance_is_proven_again_for_that_layer_only(how):
    x, _ = images(4)
    net = lenet()
    fast = FastNet(net)
    with no_notice():
        fast(x)
    first = kinds(fast, x)

    net[11].backward = wrong_backward_on(net[11], how)
    with pytest.warns(FastPathWarning, match=r"^npnet\.fast: Sigmoid\(\) \(layer 11\) ") \
            as notices:
        fast(x)
    assert len(notices) == 1
    changed = kinds(fast, x)
    assert [position for position, (a, b) in enumerate(zip(first, changed)) if a != b] == [7]
    assert changed[7] is AsWritten and first[7] is SigmoidKernel  # kernel 7 runs layer 11

    del net[11].backward  # back to the class's method
    with no_notice():
        fast(x)
    assert kinds(fast, x) == first


def test_a_module_function_monkeypatched_after_the_first_run_is_proven_again(monkeypatch):
    x, labels = images(4)
    fast = FastNet(lenet())
    with no_notice():
        step_results(fast, x, labels)
    monkeypatch.setattr(npnet.batchnorm, "batch_norm_backward",
                        negated(npnet.batchnorm.batch_norm_backward))
    with pytest.warns(FastPathWarning, match=notice_for("BatchNorm")) as notices:
        step_results(fast, x, labels)
    assert_every_notice_names(notices, "BatchNorm")
    assert sum(kind is AsWritten for kind in kinds(fast, x)) == 4  # all four BatchNorms


# ---------------------------------------------------------- the proof leaves no trace
def spy_on(monkeypatch, net) -> list:
    """Every call of a forward or backward on one of net's own layers, recorded; the proof's
    float64 copies are other objects and are not recorded."""
    real = {id(layer) for layer in net}
    calls = []
    for cls in {type(layer) for layer in net}:
        for method in ("forward", "backward"):
            def spy(self, array, original=getattr(cls, method), method=method):
                if id(self) in real:
                    calls.append((self, method))
                return original(self, array)
            monkeypatch.setattr(cls, method, spy)
    return calls


@pytest.mark.parametrize("change", [
    "none", "a broken Sigmoid class",
    "a forward set on one instance"])
def test_planning_never_touches_the_real_layers(change, monkeypatch):
    """Planning proves every kernel on float64 copies: the real network's parameters, moving
    statistics, gradients, caches, mode and hooks see nothing of it, whether the kernels
    agree or not."""
    x, labels = images(4)
    net = nontrivial(lenet())
    step_results(net, x, labels)  # caches and gradients worth keeping
    state, grads = net.state_dict(), {name: p.grad.copy() for name, p in net.named_parameters()}
    caches = [layer.cache for layer in net]
    if change == "a broken Sigmoid class":
        monkeypatch.setattr(npnet.Sigmoid, "backward", negated(npnet.Sigmoid.backward))
    if change == "a forward set on one instance":  # right, but a closure over the real layer
        sigmoid = net[2]
        sigmoid.forward = lambda x: npnet.Sigmoid.forward(sigmoid, x)
    calls = spy_on(monkeypatch, net)
    hooked = nontrivial(lenet())  # the same, with hooks (which turn fusion off)
    hook_calls = []
    for layer in hooked:
        layer.register_forward_hook(lambda *args: hook_calls.append(args))
        layer.register_backward_hook(lambda *args: hook_calls.append(args))

    with warnings.catch_warnings(record=True) as notices:
        warnings.simplefilter("always")
        for model in (net, hooked):
            for input_grad in (False, True):
                fast = FastNet(model, input_grad=input_grad)
                for training in (True, False):
                    model.train(training)
                    fast.plan(x)
                model.train()
    assert bool(notices) == (change != "none")

    assert calls == [] and hook_calls == []
    assert all(layer.training for layer in net)
    assert all(layer.cache is cache for layer, cache in zip(net, caches))
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    for name, param in net.named_parameters():
        np.testing.assert_array_equal(param.grad, grads[name], err_msg=name)
