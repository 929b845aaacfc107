"""The gradient check explains its verdict: the student mistakes and the honest special cases.

Each test plants a case a learner meets (a backward that returns None, a random layer, a kink,
a sharp bend, parameters of ones, ``.grad =``) and requires the verdict and the words for it;
the bar itself (1e-6 relative error) is not loosened anywhere.
"""

import numpy as np
import pytest

import npnet
from conftest import randn
from npnet.gradcheck import CORRECT
from npnet.models import lenet


class LeakyReLU(npnet.Module):
    """y = x for x > 0, slope * x otherwise: a kink at 0."""

    def __init__(self, slope=0.1):
        super().__init__()
        self.slope = slope

    def forward(self, x):
        x = self.check_float(x)
        self.cache = x
        return np.where(x > 0, x, self.slope * x)

    def backward(self, grad_out):
        x = self.require_cache()
        grad_out = self.check_grad(grad_out, x.shape)
        return grad_out * np.where(x > 0, 1.0, self.slope)


class ForgetsTheNegativeSlope(LeakyReLU):
    def backward(self, grad_out):
        x = self.require_cache()
        return self.check_grad(grad_out, x.shape) * (x > 0)  # the mistake: slope 0, not 0.1


class Scale(npnet.Module):
    """y = x * scale[c], one learned factor per channel, initialised to ones."""

    def __init__(self, channels, mistake=None):
        super().__init__()
        self.scale = npnet.Parameter(np.ones((1, channels, 1, 1)))
        self.mistake = mistake

    def forward(self, x):
        x = self.check_input(x, 4, "(N, C, H, W)")
        self.cache = x
        return x * self.scale.data

    def backward(self, grad_out):
        x = self.require_cache()
        grad_out = self.check_grad(grad_out, x.shape)
        grad_scale = (grad_out * x).sum(axis=(0, 2, 3), keepdims=True)
        if self.mistake == "assigns .grad":
            self.scale.grad = grad_scale
        else:
            self.scale.grad += grad_scale
        if self.mistake == "forgets the factor":
            return grad_out
        if self.mistake == "a little off":
            return grad_out * self.scale.data * (1 + 1e-4)
        return grad_out * self.scale.data


def x_near_zero():
    """Random values, three of them within 1e-3 of the kink at 0 (one at 1e-7: no step fits),
    each the largest of its 2x2 window, so that max pooling passes their gradient on."""
    x = randn(2, 3, 6, 6)
    x[0, 0, :2, :6] = [[1e-7, -0.5, 3e-4, -0.4, -2e-5, -0.3],
                       [-0.6, -0.7, -0.3, -0.9, -0.8, -0.2]]
    return x


# ------------------------------------------------------------------- what backward returns
@pytest.mark.parametrize("returned, message", [
    (lambda grad: None, r"MyLayer\(\).backward returned None; it must return dL/dx, an array of "
                        r"the input's shape \(4, 15\)"),
    (lambda grad: grad.reshape(-1), r"MyLayer\(\).backward returned an array of shape \(60,\); "
                                    r"dL/dx must have the input's shape \(4, 15\)"),
    (lambda grad: grad.astype(np.float32), r"MyLayer\(\).backward returned float32 for a "
                                           r"float64 input; a layer keeps the dtype"),
], ids=["None", "wrong shape", "wrong dtype"])
def test_what_backward_returns_is_checked_before_any_number(returned, message):
    class MyLayer(npnet.Sigmoid):
        def backward(self, grad_out):
            return returned(super().backward(grad_out))

    with pytest.raises((ValueError, TypeError), match=message):
        npnet.gradcheck(MyLayer(), randn(4, 15))


def test_a_parameter_gradient_of_the_wrong_shape_is_named():
    class TransposedWeightGradient(npnet.Linear):
        def backward(self, grad_out):
            grad_x = super().backward(grad_out)
            self.weight.grad = self.weight.grad.T.copy()
            return grad_x

    with pytest.raises(ValueError, match=r"weight.grad has shape \(3, 5\); it must have its "
                                         r"parameter's shape \(5, 3\)"):
        npnet.gradcheck(TransposedWeightGradient(3, 5), randn(4, 3))


def test_grad_assigned_instead_of_added_is_wrong_and_says_so():
    result = npnet.gradcheck(Scale(3, mistake="assigns .grad"), randn(2, 3, 4, 4))
    check = {a.name: a for a in result.arrays}["scale"]
    assert check.verdict == "wrong" and result.verdict == "wrong"
    assert result.max_error >= 1.0
    assert "write scale.grad += ..., not =" in check.reason
    assert npnet.gradcheck(Scale(3), randn(2, 3, 4, 4)).verdict == "correct"


# ---------------------------------------------------------------------------- randomness
def test_a_forward_that_is_not_deterministic_is_reported_as_such():
    class FreshGeneratorDropout(npnet.Module):
        def forward(self, x):
            self.cache = (np.random.default_rng().random(np.shape(x)) > 0.5) * 2.0  # unseeded
            return x * self.cache

        def backward(self, grad_out):
            return grad_out * self.require_cache()

    result = npnet.gradcheck(FreshGeneratorDropout(), randn(3, 4))
    assert result.verdict == "not deterministic"
    assert result.max_error == float("inf")  # fails any bar: nothing was proven
    assert not result.passed
    assert "self.rng = np.random.default_rng(seed)" in str(result)
    assert "fixed mask" in str(result)


def test_draws_from_numpys_global_generator_are_replayed_and_noted():
    class GlobalDropout(npnet.Module):
        def forward(self, x):
            self.cache = (np.random.rand(*np.shape(x)) > 0.5) * 2.0
            return x * self.cache

        def backward(self, grad_out):
            return grad_out * self.require_cache()

    np.random.seed(3)
    state = np.random.get_state()
    result = npnet.gradcheck(GlobalDropout(), randn(3, 4))
    assert result.verdict == "correct", str(result)
    assert any("global random generator" in note for note in result.notes)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # checking drew nothing


def test_npnets_dropout_is_checked_with_one_fixed_mask():
    layer = npnet.Dropout(0.5)
    state = layer.rng.bit_generator.state
    result = npnet.gradcheck(layer, randn(4, 6), training=True)
    assert result.verdict == "correct" and result.max_error < CORRECT
    assert layer.rng.bit_generator.state == state


# ---------------------------------------------------------------------- kinks and bends
@pytest.mark.parametrize("pool", [npnet.AvgPool2d(2), npnet.MaxPool2d(2)], ids=["avg", "max"])
def test_a_correct_layer_with_inputs_at_its_kink_is_correct_and_the_kinks_are_counted(pool):
    result = npnet.gradcheck(npnet.Sequential(LeakyReLU(), pool), x_near_zero())
    (check,) = result.arrays
    assert check.verdict == "correct", str(result)
    assert check.kinks >= 1  # the entry at 1e-7 has no step that measures its slope
    assert check.checked == check.total - check.kinks
    assert "left out" in check.reason and "kink" in check.reason


def test_a_wrong_layer_with_kinks_is_still_wrong_where_it_is_smooth():
    result = npnet.gradcheck(npnet.Sequential(ForgetsTheNegativeSlope(), npnet.AvgPool2d(2)),
                             x_near_zero())
    assert result.verdict == "wrong" and result.max_error > 0.5, str(result)


def test_a_sharp_bend_is_judged_at_a_smaller_step():
    """BatchNorm on a batch of 2: x_hat = +-(x1 - x2) / sqrt((x1 - x2)^2 / 4 + eps) turns
    within h = 1e-3 when x1 - x2 is 1e-2, so the slope at h is off; at h/100 it is not."""
    x = np.array([[0.30, -1.2, 0.7], [0.31, -1.19, 0.71]])
    layer = npnet.BatchNorm(3, num_dims=2)
    wide_step = npnet.gradcheck(layer, x, training=True, h=1e-3)
    check = {a.name: a for a in wide_step.arrays}["input"]
    assert check.finer_step >= 1
    assert wide_step.verdict == "correct", str(wide_step)
    assert "smaller step" in check.reason


def test_lenet_bn_on_a_batch_of_two_is_correct():
    npnet.manual_seed(0)
    rng = np.random.default_rng(0)
    result = npnet.gradcheck(lenet(batch_norm=True), rng.random((2, 1, 28, 28)),
                             loss=npnet.CrossEntropyLoss(), labels=np.array([3, 7]),
                             training=True, max_entries=8)
    assert result.verdict == "correct", str(result)


# ------------------------------------------------------------ parameters of ones and zeros
def test_a_factor_of_one_cannot_hide_a_missing_factor():
    x = randn(2, 3, 4, 4)
    as_initialised = npnet.gradcheck(Scale(3, mistake="forgets the factor"), x, perturb=False)
    assert as_initialised.verdict == "correct"  # the scale is all ones: the mistake hides
    result = npnet.gradcheck(Scale(3, mistake="forgets the factor"), x)
    assert result.verdict == "wrong", str(result)
    assert any("scale (all 1)" in note for note in result.notes)


def test_a_small_real_difference_is_suspicious_and_explained():
    result = npnet.gradcheck(Scale(3, mistake="a little off"), randn(2, 3, 4, 4))
    check = {a.name: a for a in result.arrays}["input"]
    assert check.verdict == "suspicious" and 1e-6 < check.max_error < 1e-2
    assert "small but real difference" in check.reason
    assert result.verdict == "suspicious" and not result.passed


# ------------------------------------------------------------ it changes nothing it checks
def test_gradcheck_leaves_the_network_exactly_as_it_found_it():
    npnet.manual_seed(0)
    net = npnet.Sequential(npnet.Conv2d(1, 3, 3), npnet.BatchNorm(3, 4), npnet.ReLU(),
                           npnet.Dropout(0.3), npnet.Flatten(), npnet.Linear(3 * 4 * 4, 5))
    x = np.random.default_rng(1).random((4, 1, 6, 6)).astype(np.float32)
    fired = []
    net[0].register_forward_hook(lambda *args: fired.append(1))
    net.eval()
    out = net(x)  # a forward whose cache a backward will use after the check
    net.backward(np.ones_like(out))  # gradients that must stay as they are
    net.train()
    net(x)
    fired.clear()
    state, grads = net.state_dict(), [p.grad.copy() for p in net.parameters()]
    versions = [p.version for p in net.parameters()]
    dropout_state = net[3].rng.bit_generator.state

    result = npnet.gradcheck(net, x[:2], loss=npnet.CrossEntropyLoss(), labels=[1, 2],
                             training=False, max_entries=5)

    assert result.verdict == "correct", str(result)
    assert net.training is True and net.dtype == np.float32
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    for param, grad, version in zip(net.parameters(), grads, versions):
        np.testing.assert_array_equal(param.grad, grad)
        assert param.version == version
    assert net[3].rng.bit_generator.state == dropout_state
    assert fired == []  # the hooks belong to the network, not to the check
    net.backward(np.ones((4, 5), dtype=np.float32))  # the cache of the last forward is intact


def test_gradcheck_of_a_fastnet_leaves_it_running():
    npnet.manual_seed(0)
    net = lenet(batch_norm=True)
    fast = npnet.FastNet(net, input_grad=True)
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    before = fast(x)
    result = npnet.gradcheck(fast, x[:2], loss=npnet.CrossEntropyLoss(), labels=[0, 1],
                             training=True, max_entries=4)
    assert result.verdict == "correct", str(result)
    assert net.dtype == np.float32
    fast.backward(np.ones_like(before))  # still the FastNet's own pass to differentiate


# ----------------------------------------------------------------------- how it displays
def test_the_result_shows_short_and_as_a_table():
    result = npnet.gradcheck(npnet.Sequential(npnet.Linear(4, 3), npnet.Sigmoid()),
                             randn(5, 4))
    assert len(repr(result)) < 160
    assert repr(result).startswith("<GradCheckResult: correct, worst relative error")
    page = result._repr_html_()
    assert page.count("<tr>") == 1 + len(result.arrays)  # a header and a row per array
    assert "correct" in page and "<table>" in page
    text = str(result)
    assert all(a.name in text for a in result.arrays)
