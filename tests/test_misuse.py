"""Nothing silently wrong (issue #10): a misuse that used to give wrong numbers without a word
is refused with a clear error, before it changes any state, both by the layers as written
(what Sequential runs) and through FastNet (what fit runs)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import npnet
from conftest import images, randn32
from npnet.batchnorm import BatchTooSmallError
from npnet.datasets import DataLoader
from npnet.models import lenet
from npnet.train import fit

RUNNERS = [False, True]
RUNNER_IDS = ["as written", "FastNet"]


def small_net(seed=0):
    """A network with every kind of state fit touches, fast enough for many epochs: a
    Linear, a 2-D BatchNorm (moving averages), a Sigmoid and a Linear, on 1x4x4 images."""
    npnet.manual_seed(seed)
    return npnet.Sequential(npnet.Flatten(), npnet.Linear(16, 8), npnet.BatchNorm(8, 2),
                            npnet.Sigmoid(), npnet.Linear(8, 3))


def small_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, n)


def runner(net, fast):
    return npnet.FastNet(net) if fast else net


def snapshot(net) -> dict:
    """Every parameter, buffer and gradient, copied."""
    state = {name: value.copy() for name, value in net.state_dict().items()}
    state.update({f"dL/d{name}": p.grad.copy() for name, p in net.named_parameters()})
    return state


def assert_unchanged(before: dict, net):
    after = snapshot(net)
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def one_step(model, x, labels, criterion=None):
    """Forward and backward once, from zeroed gradients; returns the loss's dL/dlogits."""
    criterion = criterion or npnet.CrossEntropyLoss()
    model.zero_grad()
    criterion(model(x), labels)
    grad = criterion.backward()
    model.backward(grad)
    return grad


# ----------------------------------------------------- 1. a resumed run continues the run
@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_fit_resumed_with_a_history_is_bitwise_the_uninterrupted_run(fast):
    x, y = small_data()

    def train(epochs_per_call):
        net = small_net()
        optimizer = npnet.SGD(net.parameters(), lr=0.5, momentum=0.9)
        history = None
        for epochs in epochs_per_call:
            history = fit(net, (x, y), (x, y), epochs=epochs, batch_size=16,
                          optimizer=optimizer, seed=3, history=history, progress=False,
                          verbose=False, fast=fast)
        return net, history

    straight, straight_history = train([3])
    resumed, resumed_history = train([1, 2])
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
    for name in ("train_loss", "train_acc", "test_acc", "test_loss"):
        assert getattr(resumed_history, name) == getattr(straight_history, name), name


def test_the_order_of_an_epoch_depends_on_the_seed_and_the_epoch_alone():
    x = np.arange(50)
    loader = DataLoader(x, x, batch_size=50, shuffle=True, seed=5)
    orders = [next(iter(loader))[0] for _ in range(3)]  # each loop is the next epoch
    assert not np.array_equal(orders[0], orders[1])
    resumed = DataLoader(x, x, batch_size=50, shuffle=True, seed=5)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(next(iter(resumed))[0], orders[2])
    np.testing.assert_array_equal(next(iter(resumed))[0], resumed.order(3))  # then epoch 3
    np.testing.assert_array_equal(loader.order(1), orders[1])


def test_fit_without_a_seed_still_shuffles_at_random():
    x, y = small_data(32)
    x[:, 0, 0, 0] = np.arange(32)  # each sample's number, seen by the first layer
    seen = []
    net = small_net()
    net[0].register_forward_hook(lambda layer, inp, out: seen.append(inp[:, 0, 0, 0].copy()))
    for _ in range(2):
        fit(net, (x, y), epochs=2, batch_size=32, lr=0.01, progress=False, verbose=False,
            fast=False)
    orders = [tuple(order.astype(int)) for order in seen]
    assert all(sorted(order) == list(range(32)) for order in orders)
    assert len(set(orders)) == 4  # a new order every epoch, and in every call


# ------------------------------------------- 2. BatchNorm on one value per feature, drop_last
@pytest.mark.parametrize("layer, shape", [
    (lambda: npnet.BatchNorm(3, 2), (1, 3)),
    (lambda: npnet.BatchNorm(3, 4), (1, 3, 1, 1)),
], ids=["2-D, batch of 1", "4-D, N*H*W = 1"])
def test_batchnorm_refuses_to_train_on_one_value_per_feature(layer, shape):
    layer = layer()
    layer.gamma.data[...] = 2.0
    state = snapshot(layer)
    with pytest.raises(BatchTooSmallError, match=r"BatchNorm\(3, num_dims=\d\) expected more "
                       r"than 1 value per channel when training, got input of shape "
                       + re_shape(shape)):
        layer(randn32(*shape))
    assert_unchanged(state, layer)  # the moving variance was not dragged toward 0
    assert layer.cache is None
    assert isinstance(BatchTooSmallError("x"), ValueError)
    layer.eval()  # one sample is fine where the moving statistics are used
    assert layer(randn32(*shape)).shape == shape


def re_shape(shape) -> str:
    return "\\" + str(tuple(shape)).replace(")", "\\)")


def test_batchnorm_refuses_one_value_per_feature_through_fastnet():
    net = small_net()
    state = snapshot(net)
    with pytest.raises(BatchTooSmallError, match=r"BatchNorm\(8, num_dims=2\) expected more "
                                                 r"than 1 value per channel when training, "
                                                 r"got input of shape \(1, 8\)"):
        npnet.FastNet(net)(randn32(1, 1, 4, 4))
    assert_unchanged(state, net)


@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_fit_names_the_lone_last_sample_and_drop_last_avoids_it(fast):
    x, y = small_data(257)
    with pytest.raises(BatchTooSmallError) as caught:
        fit(small_net(), (x, y), epochs=1, batch_size=256, progress=False, verbose=False,
            fast=fast)
    message = str(caught.value)
    assert "the last batch of epoch 1 (step 2 of 2) holds 1 sample" in message
    assert "fit(..., drop_last=True) leaves out the lone last sample" in message
    assert "expected more than 1 value per channel when training" in message

    history = fit(small_net(), (x, y), epochs=2, batch_size=256, drop_last=True,
                  progress=False, verbose=False, fast=fast)
    assert len(history) == 2


# --------------------------------------------------------- 3. empty batches, 0-d activations
@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_an_empty_batch_is_refused_before_any_state_changes(fast):
    net = lenet()
    x, labels = images(4)
    one_step(net, x, labels)  # caches and gradients worth keeping
    state, caches = snapshot(net), [layer.cache for layer in net]
    with pytest.raises(ValueError, match=r"empty batch, input of shape \(0, 1, 28, 28\)"):
        runner(net, fast)(np.zeros((0, 1, 28, 28), dtype=np.float32))
    assert_unchanged(state, net)  # no moving average turned into NaN
    assert all(layer.cache is cache for layer, cache in zip(net, caches))


@pytest.mark.parametrize("layer, shape", [
    (lambda: npnet.BatchNorm(3, 2), (0, 3)), (lambda: npnet.BatchNorm(3, 4), (0, 3, 2, 2)),
    (lambda: npnet.Conv2d(1, 2, 3), (0, 1, 5, 5)), (lambda: npnet.Linear(3, 2), (0, 3)),
    (lambda: npnet.AvgPool2d(2), (0, 1, 4, 4)), (npnet.Flatten, (0, 2, 3)),
], ids=["bn2", "bn4", "conv", "linear", "avgpool", "flatten"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_each_layer_refuses_an_empty_batch(layer, shape, training):
    layer = layer().train(training)
    state = snapshot(layer)
    with pytest.raises(ValueError, match=r"got an empty batch, input of shape "
                                         + re_shape(shape)):
        layer(np.zeros(shape, dtype=np.float32))
    assert_unchanged(state, layer)


@pytest.mark.parametrize("layer", [npnet.Sigmoid, npnet.Tanh, npnet.ReLU])
def test_activations_take_a_0d_input(layer):
    layer = layer()
    y = layer(np.array(0.3))
    expected = {"Sigmoid": 1 / (1 + np.exp(-0.3)), "Tanh": np.tanh(0.3), "ReLU": 0.3}
    slope = {"Sigmoid": expected["Sigmoid"] * (1 - expected["Sigmoid"]),
             "Tanh": 1 - np.tanh(0.3) ** 2, "ReLU": 1.0}
    name = type(layer).__name__
    assert np.shape(y) == () and float(y) == pytest.approx(expected[name], rel=1e-12)
    grad_x = layer.backward(np.array(2.0))
    assert np.shape(grad_x) == () and float(grad_x) == pytest.approx(2 * slope[name],
                                                                      rel=1e-12)


# ------------------------------------------------------------ 4. one backward per forward
LAYERS = {
    "conv": (lambda: npnet.Conv2d(2, 3, 3), (2, 2, 5, 5)),
    "linear": (lambda: npnet.Linear(3, 2), (4, 3)),
    "avgpool": (lambda: npnet.AvgPool2d(2), (2, 2, 4, 4)),
    "maxpool": (lambda: npnet.MaxPool2d(2), (2, 2, 4, 4)),
    "sigmoid": (npnet.Sigmoid, (2, 3)),
    "tanh": (npnet.Tanh, (2, 3)),
    "relu": (npnet.ReLU, (2, 3)),
    "flatten": (npnet.Flatten, (2, 3, 4)),
    "bn2": (lambda: npnet.BatchNorm(3, 2), (4, 3)),
    "bn4": (lambda: npnet.BatchNorm(2, 4), (2, 2, 3, 3)),
}
TWICE = (r"backward called twice after one forward: the first backward used up what the "
         r"forward kept, and its gradients are already in \.grad")


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_second_backward_after_one_forward_is_refused(name):
    make, shape = LAYERS[name]
    layer = make()
    y = layer(randn32(*shape))
    grad_out = randn32(*y.shape, seed=1)
    layer.backward(grad_out)
    state = snapshot(layer)
    with pytest.raises(RuntimeError, match=re_name(layer) + r"\.backward called twice") as caught:
        layer.backward(grad_out)
    assert "run forward and backward once per batch (backward adds into .grad)" \
        in str(caught.value)
    assert_unchanged(state, layer)  # no gradient added a second time
    layer(randn32(*shape))  # a new forward makes a new backward possible
    layer.backward(grad_out)


def re_name(layer) -> str:
    return layer.short_name().replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_grad_out_of_the_wrong_shape_does_not_use_up_the_cache(name):
    make, shape = LAYERS[name]
    layer = make()
    y = layer(randn32(*shape))
    with pytest.raises(ValueError, match="expects grad_out of shape"):
        layer.backward(np.zeros((y.shape[0] + 1, *y.shape[1:]), dtype=np.float32))
    layer.backward(randn32(*y.shape, seed=1))  # the corrected call runs


class Doubling(npnet.Module):
    """A learner's layer that keeps no cache at all (y = 2x)."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        return 2 * grad_out


@pytest.mark.filterwarnings("ignore::npnet.FastPathWarning")  # Doubling has no kernel
@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_a_second_backward_of_a_network_is_refused_and_says_how_to_accumulate(fast):
    net = small_net()
    net.layers.insert(4, Doubling())  # the network's own check does not rely on its layers'
    model = runner(net, fast)
    grad = one_step(model, *small_data(8))
    state = snapshot(net)
    who = "FastNet" if fast else "Sequential"
    with pytest.raises(RuntimeError, match=who + r"\." + TWICE) as caught:
        model.backward(grad)
    assert "To accumulate gradients over several batches on purpose, run forward and backward " \
           "once per batch (backward adds into .grad) and call optimizer.zero_grad() only " \
           "between steps" in str(caught.value)
    assert_unchanged(state, net)


def test_gradcheck_still_runs_forward_many_times_and_backward_once():
    net = npnet.Sequential(npnet.Linear(3, 4), npnet.BatchNorm(4, 2), npnet.Tanh(),
                           npnet.Linear(4, 2))
    x = np.random.default_rng(1).standard_normal((5, 3))
    assert npnet.gradcheck(net, x).max_error < 1e-6
    assert npnet.gradcheck(npnet.FastNet(net, input_grad=True), x).max_error < 1e-6


# -------------------------------------------------- 5. parameters changed since the forward
def test_a_parameter_counts_its_versions():
    param = npnet.Parameter(np.ones(3))
    start = param.version
    param.data *= 2  # assigned back: counts
    param.data -= 0.1 * np.ones(3)
    param.data = np.zeros(3)
    assert param.version == start + 3
    param.data[...] = 1.0  # a write into the array: not an assignment to .data
    assert param.version == start + 3


@pytest.mark.parametrize("change", ["optimizer step", "data *= 2", "load_state_dict"])
@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_backward_refuses_parameters_changed_since_the_forward(change, fast):
    net = small_net()
    model = runner(net, fast)
    x, labels = small_data(8)
    optimizer = npnet.SGD(net.parameters(), lr=0.1)
    criterion = npnet.CrossEntropyLoss()
    one_step(model, x, labels, criterion)  # gradients for the optimizer step
    saved = net.state_dict()
    criterion(model(x), labels)
    if change == "optimizer step":
        optimizer.step()
    elif change == "data *= 2":
        net[1].weight.data *= 2  # the first layer: a refusal must come before any gradient
    else:
        net.load_state_dict(saved)  # the same values, but written after the forward
    state = snapshot(net)
    # backward meets the last layer first
    layer, position = (r"Linear\(16, 8\)", 1) if change == "data *= 2" else (r"Linear\(8, 3\)", 4)
    where = rf" \(layer {position}\)" if fast else ""
    with pytest.raises(RuntimeError, match=layer + r"\.weight" + where + r" changed "
                       r"\(version \d+ -> \d+, by an optimizer step, astype or an assignment "
                       r"to \.data\) after the forward pass whose cache this backward would "
                       r"use"):
        model.backward(criterion.backward())
    assert_unchanged(state, net)
    one_step(model, x, labels, criterion)  # forward again: all is well


# ------------------------------------------------------ 6. shared parameters, reused layers
def test_a_shared_parameter_is_listed_once_and_moved_once():
    first, second = npnet.Linear(3, 3).astype(np.float64), npnet.Linear(3, 3).astype(np.float64)
    second.weight = first.weight  # tied weights
    net = npnet.Sequential(first, npnet.Tanh(), second)
    names = [name for name, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.bias"]  # the first name wins
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.bias"]
    assert len(net.parameters()) == 3

    x = np.random.default_rng(0).standard_normal((4, 3))
    grad_out = np.random.default_rng(1).standard_normal((4, 3))
    before = first.weight.data.copy()
    net.zero_grad()
    net(x)
    net.backward(grad_out)  # both uses add into the one .grad
    npnet.SGD(net.parameters(), lr=0.1).step()
    np.testing.assert_array_equal(first.weight.data, before - 0.1 * first.weight.grad)


def test_sgd_refuses_a_parameter_given_twice():
    param = npnet.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match=r"SGD got the same Parameter\(shape=\(3,\), "
                                         r"dtype=float64\) twice \(items 0 and 2\)"):
        npnet.SGD([param, npnet.Parameter(np.zeros(2)), param], lr=0.1)


def test_sequential_refuses_one_layer_object_at_two_places():
    layer = npnet.Linear(3, 3)
    with pytest.raises(ValueError, match=r"Sequential: layer 0 and layer 2 are the same "
                                         r"Linear\(3, 3\) object\..*copy\.deepcopy\(layer\).*"
                                         r"share the parameters"):
        npnet.Sequential(layer, npnet.Tanh(), layer)
    with pytest.raises(ValueError, match=r"layer 0 and layer 1\.1 are the same Linear\(3, 3\)"):
        npnet.Sequential(layer, npnet.Sequential(npnet.Tanh(), layer))
    twin = copy.deepcopy(layer)  # what the message suggests
    npnet.Sequential(layer, npnet.Tanh(), twin)(randn32(2, 3))


@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_a_layer_put_into_a_network_twice_later_is_refused_when_it_runs(fast):
    net = npnet.Sequential(npnet.Linear(3, 3), npnet.Sequential(npnet.Tanh()))
    net[1].layers.append(net[0])
    state = snapshot(net)
    who = "FastNet" if fast else "Sequential"
    with pytest.raises(ValueError, match=who + r": layer 0 and layer 1\.1 are the same "
                                               r"Linear\(3, 3\) object"):
        runner(net, fast)(randn32(2, 3))
    assert_unchanged(state, net)
    assert net[0].cache is None


# ------------------------------------------------------- 7. empty training set, lr, astype
@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_fit_on_an_empty_training_set_says_so_before_anything_runs(fast):
    net = small_net()
    state = snapshot(net)
    x, y = small_data(0)
    calls = []
    with pytest.raises(ValueError, match=r"fit got an empty training set \(x of shape "
                                         r"\(0, 1, 4, 4\)\)"):
        fit(net, (x, y), epochs=1, progress=False, verbose=False, fast=fast,
            on_epoch_end=lambda *args: calls.append(args))
    x, y = small_data(10)
    with pytest.raises(ValueError, match=r"10 samples are fewer than batch_size=16, and "
                                         r"drop_last=True"):
        fit(net, (x, y), epochs=1, batch_size=16, drop_last=True, progress=False,
            verbose=False, fast=fast)
    assert calls == []
    assert_unchanged(state, net)


@pytest.mark.parametrize("kwargs", [
    {"lr": float("nan")}, {"lr": float("inf")}, {"lr": 0.0}, {"lr": -1.0},
    {"lr": 0.1, "momentum": float("nan")}, {"lr": 0.1, "momentum": -0.5},
    {"lr": 0.1, "weight_decay": float("inf")},
], ids=lambda kwargs: ", ".join(f"{k}={v}" for k, v in kwargs.items()))
def test_sgd_refuses_hyperparameters_that_are_not_finite(kwargs):
    name, value = list(kwargs.items())[-1]
    with pytest.raises(ValueError, match=rf"SGD expects {name} to be a finite number "
                                         rf"[>=]+ 0; got {value}"):
        npnet.SGD(small_net().parameters(), **kwargs)


@pytest.mark.parametrize("fast", RUNNERS, ids=RUNNER_IDS)
def test_astype_between_forward_and_backward_says_so(fast):
    net = small_net()
    model = runner(net, fast)
    criterion = npnet.CrossEntropyLoss()
    x, labels = small_data(8)
    criterion(model(x), labels)
    model.astype(np.float64)
    who = "FastNet" if fast else "Sequential"
    with pytest.raises(RuntimeError, match=who + r"\.backward called after the network was "
                                                 r"converted with astype: .* run forward "
                                                 r"again"):
        model.backward(criterion.backward())
    layer = npnet.Sigmoid()  # a layer alone, without parameters
    layer(randn32(2, 3))
    layer.astype(np.float64)
    with pytest.raises(RuntimeError, match=r"Sigmoid\(\)\.backward called after the network "
                                           r"was converted with astype"):
        layer.backward(randn32(2, 3))
