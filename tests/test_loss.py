"""CrossEntropyLoss's reductions: 'mean' (the default), 'sum' and 'none', against PyTorch
(values and gradients), against each other, and through gradcheck."""

from __future__ import annotations

import numpy as np
import pytest

import npnet
from conftest import randn

RTOL, ATOL = 1e-11, 1e-13  # float64, as tests/test_torch_parity.py
BAR = 1e-6

LOGITS = {
    "ordinary": lambda rng: rng.standard_normal((6, 5)),
    "large (+-1000)": lambda rng: 1000 * rng.standard_normal((7, 4)),
}


@pytest.mark.parametrize("logits_kind", list(LOGITS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_values_and_gradients_match_torch(reduction, logits_kind):
    """For 'none' both sides get the same random upstream gradient, one number per sample
    (what the book's loop does with l.mean().backward() is the special case 1/N)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = LOGITS[logits_kind](rng)
    N, K = logits.shape
    labels = rng.integers(0, K, N)
    grad_losses = rng.standard_normal(N) if reduction == "none" else None

    criterion = npnet.CrossEntropyLoss(reduction=reduction)
    loss = criterion(logits, labels)
    grad = criterion.backward(grad_losses)

    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.CrossEntropyLoss(reduction=reduction)(logits_t, torch.tensor(labels))
    loss_t.backward(None if grad_losses is None else torch.tensor(grad_losses))

    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == (N,)
    else:
        assert isinstance(loss, float)
    np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, logits_t.grad.numpy(), rtol=RTOL, atol=ATOL)
    assert np.all(np.isfinite(grad))


def test_the_reductions_agree_with_each_other():
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    mean, total, each = (npnet.CrossEntropyLoss(reduction) for reduction in
                         ("mean", "sum", "none"))
    losses = each(logits, labels)
    assert mean(logits, labels) == pytest.approx(losses.mean(), rel=1e-15)
    assert total(logits, labels) == pytest.approx(losses.sum(), rel=1e-15)
    assert total(logits, labels) == pytest.approx(8 * mean(logits, labels), rel=1e-14)
    grad_mean, grad_sum = mean.backward(), total.backward()
    np.testing.assert_allclose(grad_sum, 8 * grad_mean, rtol=1e-14)
    # 'none' with dL/dloss_n = 1/N is the gradient of the mean, with ones that of the sum
    np.testing.assert_allclose(each.backward(np.full(8, 1 / 8)), grad_mean, rtol=1e-14)
    each(logits, labels)
    np.testing.assert_allclose(each.backward(np.ones(8)), grad_sum, rtol=1e-14)
    # a number for 'mean' or 'sum' scales the gradient, as loss.backward(gradient) in torch
    total(logits, labels)
    np.testing.assert_allclose(total.backward(2.5), 2.5 * grad_sum, rtol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float32_logits_give_float32_losses_and_gradients(reduction):
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((5, 4)).astype(np.float32), rng.integers(0, 4, 5)
    criterion = npnet.CrossEntropyLoss(reduction)
    loss = criterion(logits, labels)
    if reduction == "none":
        assert loss.dtype == np.float32
        grad = criterion.backward(np.ones(5))  # float64 weights: the gradient stays float32
    else:
        grad = criterion.backward()
    assert grad.dtype == np.float32


class WeightedLosses:
    """A loss for gradcheck built on reduction='none': f = sum_n weights[n] * loss_n, so
    backward hands ``weights`` to CrossEntropyLoss.backward as dL/dloss."""

    def __init__(self, weights):
        self.weights = weights
        self.criterion = npnet.CrossEntropyLoss(reduction="none")

    def __call__(self, logits, labels):
        return float(np.sum(self.weights * self.criterion(logits, labels)))

    def backward(self):
        return self.criterion.backward(self.weights)


def small_net(seed=0):
    npnet.manual_seed(seed)
    return npnet.Sequential(npnet.Linear(6, 10), npnet.Tanh(), npnet.Linear(10, 4))


LABELS = np.array([0, 3, 1, 1, 2])


def test_gradcheck_through_a_small_net_with_reduction_sum():
    result = npnet.gradcheck(small_net(), randn(5, 6), loss=npnet.CrossEntropyLoss("sum"),
                             labels=LABELS)
    assert result.max_error < BAR, str(result)


def test_gradcheck_through_a_small_net_with_reduction_none():
    weights = np.random.default_rng(3).standard_normal(5)  # one upstream value per sample
    result = npnet.gradcheck(small_net(), randn(5, 6), loss=WeightedLosses(weights),
                             labels=LABELS)
    assert result.max_error < BAR, str(result)


class SumThatDividesByN(npnet.CrossEntropyLoss):
    """A planted mistake: 'sum' with the 1/N of 'mean' left in its backward."""

    def backward(self, grad_losses=None):
        return super().backward(grad_losses) / self.cache[0].shape[0]


def test_gradcheck_catches_a_sum_backward_that_divides_by_n():
    result = npnet.gradcheck(small_net(), randn(5, 6), loss=SumThatDividesByN("sum"),
                             labels=LABELS)
    assert result.max_error > 0.5, str(result)  # analytic g / 5 against numeric g: 0.8


def test_reduction_none_needs_one_upstream_value_per_sample():
    criterion = npnet.CrossEntropyLoss(reduction="none")
    criterion(randn(4, 3), np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss\(reduction='none'\)\.backward needs "
                                         r"grad_losses, .* shape \(4,\): np\.full\(4, 1 / 4\) "
                                         r"for their mean, np\.ones\(4\) for their sum"):
        criterion.backward()
    with pytest.raises(ValueError, match=r"expects grad_losses of shape \(4,\), one per sample "
                                         r"\(the shape of its last output\); got \(4, 1\)"):
        criterion.backward(np.ones((4, 1)))


def test_a_scalar_loss_refuses_an_array_of_upstream_gradients():
    criterion = npnet.CrossEntropyLoss(reduction="sum")
    criterion(randn(4, 3), np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss\(reduction='sum'\)\.backward "
                                         r"expects grad_losses to be None or a number .* got "
                                         r"shape \(4,\)\. reduction='none' gives one loss per "
                                         r"sample"):
        criterion.backward(np.ones(4))


@pytest.mark.parametrize("reduction", ["average", "Mean", None, "elementwise_mean"])
def test_an_unknown_reduction_is_refused(reduction):
    with pytest.raises(ValueError, match=r"CrossEntropyLoss expects reduction 'mean', 'sum' "
                                         r"or 'none'; got"):
        npnet.CrossEntropyLoss(reduction=reduction)


def test_repr_names_the_reduction_unless_it_is_the_default():
    assert repr(npnet.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(npnet.CrossEntropyLoss("none")) == "CrossEntropyLoss(reduction='none')"
