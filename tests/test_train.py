"""Training: LeNet-BN really learns the shipped MNIST sample; the loop's bookkeeping is right.

The learning test is the one that matters: with a broken backward pass (a wrong BatchNorm or
Conv2d gradient) the network still learns something, but does not reach the bars below.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import npnet
from conftest import train_lenet_bn_on_sample
from npnet.datasets import DataLoader
from npnet.models import lenet
from npnet.train import DivergenceError, History, evaluate, fit

# The bars, measured with conftest.MNIST_RECIPE (5 epochs on the 5,000 sample digits, the last
# one with small steps; about 3 s) over seeds 0-9 (the test itself uses seed 0), as held-out
# accuracy and the last epoch's training loss. Correct gradients: 0.966-0.975 and
# 0.095-0.119. One backward pass broken (monkeypatched), same seeds:
#
#   BatchNorm, training mode, without the batch-statistics terms   0.86-0.92    0.28-0.44
#   Sigmoid without the factor sigma'(x)                           0.905-0.912  0.31-0.32
#   Conv2d's weight gradient with the wrong sign                   0.83-0.86    0.50-0.65
#   Conv2d's weight gradient zeroed (seeds 0-9)                    0.935-0.962  0.148-0.195
#
# The last is the hard case: with its convolutions frozen at their random initial weights,
# LeNet-BN still learns most of MNIST through its Linear layers; the loss bar catches it.
ACCURACY_BAR = 0.95
LOSS_BAR = 0.135


def tiny_data(n=64, seed=0):
    """n random 1x28x28 'images' whose label is which quarter of the image is brightest."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.1
    y = rng.integers(0, 4, size=n)
    for image, label in zip(x, y):
        row, col = divmod(int(label), 2)
        image[0, 14 * row:14 * row + 14, 14 * col:14 * col + 14] += 0.9
    return x, y


def test_lenet_bn_learns_the_mnist_sample(mnist_sample):
    model, history = train_lenet_bn_on_sample(mnist_sample)
    # the 1,000 held-out digits, measured again from scratch by evaluate (eval mode)
    accuracy = evaluate(model, mnist_sample.x_test, mnist_sample.y_test)
    assert accuracy == pytest.approx(history.test_acc[-1])
    assert accuracy >= ACCURACY_BAR, f"held-out accuracy {accuracy:.3f} < {ACCURACY_BAR}"
    assert history.train_loss[-1] <= LOSS_BAR, \
        f"training loss {history.train_loss[-1]:.3f} > {LOSS_BAR}"


def test_fit_records_one_entry_per_epoch_and_prints_the_book_line(capsys):
    x, y = tiny_data()
    npnet.manual_seed(0)
    model = lenet(batch_norm=True, num_classes=4)
    history = fit(model, (x, y), (x, y), epochs=2, lr=0.5, batch_size=16, seed=0,
                  progress=False)
    assert len(history) == 2
    for values in history.to_dict().values():
        assert len(values) == 2
    assert all(0 <= acc <= 1 for acc in history.train_acc + history.test_acc)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("epoch 2/2: loss ")
    for part in ("train acc", "test acc", "examples/sec"):
        assert part in lines[1]
    assert lines[1].endswith(" s")


def test_fit_accepts_a_dataloader_and_no_test_data(capsys):
    x, y = tiny_data()
    model = lenet(batch_norm=True, num_classes=4)
    loader = DataLoader(x, y, batch_size=16, shuffle=True, seed=0)
    history = fit(model, loader, epochs=1, lr=0.5, progress=False)
    assert history.test_acc == [None]
    assert "test acc" not in capsys.readouterr().out


def test_fit_continues_a_history():
    x, y = tiny_data()
    model = lenet(batch_norm=True, num_classes=4)
    history = fit(model, (x, y), epochs=1, lr=0.5, progress=False, verbose=False)
    seen = []
    fit(model, (x, y), epochs=2, lr=0.5, history=history, progress=False, verbose=False,
        on_epoch_end=lambda epoch, hist: seen.append((epoch, len(hist))))
    assert len(history) == 3
    assert seen == [(2, 2), (3, 3)]  # epochs numbered after the ones already done


def test_fit_is_repeatable_with_a_seed():
    x, y = tiny_data()
    losses = []
    for _ in range(2):
        npnet.manual_seed(1)
        model = lenet(batch_norm=True, num_classes=4)
        history = fit(model, (x, y), epochs=1, lr=0.5, batch_size=16, seed=3,
                      progress=False, verbose=False)
        losses.append(history.train_loss)
    assert losses[0] == losses[1]


def test_float32_throughout():
    x, y = tiny_data()
    model = lenet(batch_norm=True, num_classes=4)
    # float64 images are cast once to the model's float32; the parameters stay float32
    fit(model, (x.astype(np.float64), y), epochs=1, lr=0.5, progress=False, verbose=False)
    assert {param.dtype for param in model.parameters()} == {np.dtype(np.float32)}


def test_a_nan_loss_stops_training_with_a_clear_message():
    x, y = tiny_data()
    model = lenet(batch_norm=True, num_classes=4)
    # one step of lr 1e38 sends float32 weights past their largest value (3.4e38)
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as caught:
        fit(model, (x, y), epochs=3, lr=1e38, batch_size=16, progress=False, verbose=False)
    message = str(caught.value)
    assert "at epoch 1, step 2 of 4 with lr=1e+38" in message
    assert "training diverged" in message and "lower learning rate" in message
    assert isinstance(caught.value, FloatingPointError)


def test_a_nan_in_the_data_is_caught_at_its_step():
    x, y = tiny_data()
    x[40] = np.nan  # in the third batch of 16 (no shuffling with a DataLoader as given)
    model = lenet(batch_norm=True, num_classes=4)
    with np.errstate(all="ignore"), pytest.raises(DivergenceError, match="epoch 1, step 3"):
        fit(model, DataLoader(x, y, batch_size=16), epochs=1, progress=False, verbose=False)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_evaluate_restores_the_mode(mode):
    x, y = tiny_data()
    model = lenet(batch_norm=True, num_classes=4)
    getattr(model, mode)()
    before = [layer.moving_mean.copy() for layer in model if hasattr(layer, "moving_mean")]
    accuracy, loss = evaluate(model, x, y, batch_size=10, return_loss=True)
    assert 0 <= accuracy <= 1 and loss > 0
    assert all(layer.training == (mode == "train") for layer in model.modules())
    # evaluation mode: BatchNorm's moving statistics were used, not updated
    after = [layer.moving_mean for layer in model if hasattr(layer, "moving_mean")]
    assert all(np.array_equal(b, a) for b, a in zip(before, after))


def test_evaluate_counts_correct_predictions():
    class Fixed(npnet.Module):
        """Predicts class 0 for every image (a Module without parameters)."""

        def forward(self, x):
            logits = np.zeros((len(x), 3), dtype=np.float32)
            logits[:, 0] = 1
            return logits

    y = np.array([0, 0, 1, 2, 0])
    assert evaluate(Fixed(), np.zeros((5, 1, 2, 2)), y, batch_size=2) == pytest.approx(0.6)


def test_history_json_round_trip(tmp_path):
    history = History(train_loss=[0.9, 0.5], train_acc=[0.7, 0.8], test_acc=[0.6, None],
                      test_loss=[1.0, None], epoch_time=[2.0, 2.1],
                      examples_per_sec=[100.0, 110.0])
    path = tmp_path / "history.json"
    history.save(path)
    assert History.load(path) == history
    assert json.loads(path.read_text())["train_acc"] == [0.7, 0.8]
    assert history.best_epoch() == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_history_rejects_ragged_or_unknown_entries():
    with pytest.raises(ValueError, match="one entry per epoch"):
        History.from_dict({"train_loss": [1.0, 0.5], "train_acc": [0.5]})
    with pytest.raises(ValueError, match="unknown entries"):
        History.from_dict({"accuracy": [0.5]})


def test_fit_skips_the_first_layers_input_gradient_on_the_fast_backend_only():
    x, y = tiny_data()
    for fast in (True, False):
        net = lenet()
        seen = []
        net[0].register_backward_hook(lambda layer, grad_out, grad_in: seen.append(grad_in))
        fit(net, (x, y), epochs=1, lr=0.1, batch_size=32, progress=False, verbose=False,
            fast=fast)
        assert seen
        if fast:  # the images need no gradient
            assert all(grad_in is None for grad_in in seen)
        else:  # the layers as written compute everything
            assert all(grad_in.shape == (32, 1, 28, 28) for grad_in in seen)


@pytest.mark.parametrize("form", ["arrays", "DataLoader", "batches", "test data"])
def test_fit_refuses_integer_images_and_says_how_to_scale_them(form):
    """uint8 pixels 0-255 (as image files store them) are not the floats in [0, 1] that the
    layers and LeNet's recipe expect: refused before any step, with the conversion."""
    raw = npnet.datasets.load_mnist_sample(raw=True)
    x, y = raw.x_train[:64], raw.y_train[:64]
    scaled = x.astype(np.float32) / 255
    train, test = {"arrays": ((x, y), None),
                   "DataLoader": (DataLoader(x, y, batch_size=32), None),
                   "batches": (iter([(x[:32], y[:32]), (x[32:], y[32:])]), None),
                   "test data": ((scaled, y), (raw.x_test[:10], raw.y_test[:10]))}[form]
    net = lenet()
    weights = [param.data.copy() for param in net.parameters()]
    with pytest.raises(TypeError, match=r"fit got images of dtype uint8.*\[0, 1\].*"
                                        r"x = x\.astype\(np\.float32\) / 255"):
        fit(net, train, test, epochs=1, batch_size=32, progress=False, verbose=False)
    for param, before in zip(net.parameters(), weights):
        np.testing.assert_array_equal(param.data, before)  # nothing trained
    with pytest.raises(TypeError, match=r"evaluate got images of dtype uint8"):
        evaluate(net, raw.x_test[:10], raw.y_test[:10])
