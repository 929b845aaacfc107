"""Dropout: what it does to the numbers, that it repeats from a seed, and that gradcheck proves
its backward (with the mask held fixed) and catches a backward that forgets to rescale."""

from __future__ import annotations

import numpy as np
import pytest

import npnet
from conftest import randn
from npnet.dropout import Dropout

BAR = 1e-6


# ------------------------------------------------------------------------ the numbers
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_training_zeroes_a_fraction_p_and_keeps_the_mean(p):
    """Each entry is 0 with probability p, else x / (1 - p); so the mean is kept."""
    npnet.manual_seed(0)
    layer = Dropout(p)
    x = np.full((400, 500), 3.0)
    y = layer(x)
    dropped = y == 0
    n = x.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)  # 5 standard errors
    np.testing.assert_allclose(y[~dropped], 3.0 / (1 - p), rtol=1e-15)
    assert abs(y.mean() - 3.0) < 5 * 3.0 * np.sqrt(p / ((1 - p) * n))


def test_evaluation_mode_is_the_identity():
    layer = Dropout(0.5).eval()
    x = randn(4, 3, 5, 5)
    y = layer(x)
    assert y is x  # the same array, as PyTorch's
    grad_out = randn(4, 3, 5, 5, seed=1)
    np.testing.assert_array_equal(layer.backward(grad_out), grad_out)


def test_backward_multiplies_by_the_same_scaled_mask():
    npnet.manual_seed(1)
    layer = Dropout(0.25)
    x = randn(6, 7) + 5.0  # no zero entries: y == 0 only where dropped
    y = layer(x)
    scaled_mask = np.where(y == 0, 0.0, 1 / 0.75)
    grad_out = randn(6, 7, seed=2)
    np.testing.assert_allclose(layer.backward(grad_out), grad_out * scaled_mask, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_the_dtype_is_kept(dtype):
    npnet.manual_seed(2)
    layer = Dropout(0.3)
    x = np.ones((3, 4, 2), dtype=dtype)
    y = layer(x)
    assert y.dtype == dtype
    assert layer.backward(np.ones_like(y)).dtype == dtype
    np.testing.assert_array_equal(np.unique(y), np.array([0, 1 / 0.7], dtype=dtype))


def test_p_zero_is_the_identity_and_p_one_zeroes_everything_as_torch():
    x = randn(3, 4) + 2.0
    layer = Dropout(0.0)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(np.ones((3, 4))), np.ones((3, 4)))
    layer = Dropout(1.0)
    y = layer(x)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, np.zeros((3, 4)))
    np.testing.assert_array_equal(layer.backward(np.ones((3, 4))), np.zeros((3, 4)))


def test_torch_agrees_on_p_zero_p_one_and_the_scale_of_kept_entries():
    torch = pytest.importorskip("torch")
    x = randn(200, 50) + 2.0
    for p in (0.0, 0.3, 1.0):
        npnet.manual_seed(3)
        ours = Dropout(p)(x)
        theirs = torch.nn.Dropout(p)(torch.tensor(x)).numpy()
        for y in (ours, theirs):
            kept = y != 0
            if p < 1:
                np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
            else:
                assert not kept.any()
        if p == 0:
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_p_outside_zero_one_is_refused(p):
    with pytest.raises(ValueError, match=r"Dropout expects p, the probability of zeroing an "
                                         r"entry, to be a number in \[0, 1\]; got"):
        Dropout(p)


def test_integer_input_and_backward_without_forward_are_refused():
    layer = Dropout(0.5)
    with pytest.raises(TypeError, match=r"Dropout\(p=0\.5\) expects a float32 or float64 "
                                        r"input; got int64"):
        layer(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(RuntimeError, match=r"Dropout\(p=0\.5\)\.backward called before "
                                           r"forward"):
        layer.backward(np.ones((2, 3)))
    layer(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Dropout\(p=0\.5\)\.backward expects grad_out of "
                                         r"shape \(2, 3\)"):
        layer.backward(np.ones((3, 2)))


# ---------------------------------------------------------------------- reproducible
def dropout_net():
    return npnet.Sequential(npnet.Linear(10, 20), npnet.ReLU(), Dropout(0.5),
                            npnet.Linear(20, 5), Dropout(0.2))


def test_manual_seed_before_building_repeats_every_mask():
    x = randn(8, 10, dtype=np.float32)
    outputs = []
    for seed in (7, 7, 8):
        npnet.manual_seed(seed)
        net = dropout_net()
        outputs.append([net(x), net(x)])  # two forwards: two different masks
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])
    assert not np.array_equal(outputs[0][0], outputs[0][1])
    assert not np.array_equal(outputs[0][0], outputs[2][0])


def test_building_a_dropout_does_not_change_the_other_layers_weights():
    """Dropout splits its generator off npnet's without drawing from it, so a network with
    and without dropout starts from the same weights."""
    npnet.manual_seed(0)
    plain = npnet.Sequential(npnet.Linear(10, 20), npnet.ReLU(), npnet.Linear(20, 5))
    npnet.manual_seed(0)
    dropped = dropout_net()
    np.testing.assert_array_equal(plain[0].weight.data, dropped[0].weight.data)
    np.testing.assert_array_equal(plain[2].weight.data, dropped[3].weight.data)


def test_a_mask_drawn_in_float32_is_the_one_drawn_in_float64():
    """The uniform draws are float64 whatever the input dtype, so gradcheck (which runs the
    layer in float64) sees the mask training (float32) would have drawn."""
    x = np.ones((5, 6))
    npnet.manual_seed(4)
    mask_64 = Dropout(0.4)(x) != 0
    npnet.manual_seed(4)
    mask_32 = Dropout(0.4)(x.astype(np.float32)) != 0
    np.testing.assert_array_equal(mask_32, mask_64)


# ------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_gradcheck_holds_the_mask_fixed_and_passes(p):
    """Each forward of the check draws the same mask (gradcheck restores the generator), so
    the finite differences see one function. Without that, every nudge would draw a new mask
    and the errors would be near 1."""
    npnet.manual_seed(5)
    result = npnet.gradcheck(Dropout(p), randn(4, 3, 5), training=True)
    assert result.max_error < BAR, str(result)


def test_gradcheck_of_a_network_with_dropout_and_its_loss():
    npnet.manual_seed(6)
    net = npnet.Sequential(npnet.Linear(6, 12), npnet.Tanh(), Dropout(0.5),
                           npnet.Linear(12, 4))
    labels = np.array([0, 3, 1, 2, 2])
    result = npnet.gradcheck(net, randn(5, 6), loss=npnet.CrossEntropyLoss(),
                             labels=labels, training=True)
    assert result.max_error < BAR, str(result)


def test_gradcheck_puts_the_generator_back_so_training_goes_on_unchanged():
    x = randn(4, 6)
    npnet.manual_seed(9)
    checked = Dropout(0.5)
    npnet.gradcheck(checked, x, training=True)
    npnet.manual_seed(9)
    unchecked = Dropout(0.5)
    np.testing.assert_array_equal(checked(x), unchecked(x))


class DropoutForgettingTheRescale(Dropout):
    """A planted mistake: backward uses the 0/1 mask, not mask / (1 - p)."""

    def backward(self, grad_out):
        x_shape, scaled_mask = self.require_cache()
        grad_out = self.check_grad(grad_out, x_shape)
        return grad_out * (scaled_mask != 0)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_gradcheck_catches_a_backward_that_forgets_to_rescale(p):
    npnet.manual_seed(5)
    result = npnet.gradcheck(DropoutForgettingTheRescale(p), randn(4, 3, 5), training=True)
    assert result.worst.name == "input"
    # analytic g versus numeric g / (1 - p): relative error p
    assert result.max_error == pytest.approx(p, rel=1e-6), str(result)
