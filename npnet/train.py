"""Training a classifier: the loop of d2l's ``train_ch6``, with a progress bar and a history.

One training step is the same five lines in every framework:

    optimizer.zero_grad()                   # forget the last step's gradients
    logits = model(x)                       # forward:  x (N, C, H, W) -> logits (N, K)
    loss = criterion(logits, y)             # mean cross-entropy over the batch
    model.backward(criterion.backward())    # backward: dL/dlogits (N, K) -> every .grad
    optimizer.step()                        # p <- p - lr * dL/dp

``fit`` repeats it over the mini-batches of the training set for a number of epochs and,
after each epoch, measures the accuracy on the test set with ``evaluate``. It prints one line
per epoch, as the book does::

    epoch 3/10: loss 0.059, train acc 0.983, test acc 0.968, 10758.5 examples/sec, 6.0 s

and returns a ``History`` with the same numbers, ready for ``npnet.plots.plot_history``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np

from .atomic import atomic_write
from .batchnorm import BatchTooSmallError
from .datasets import DataLoader
from .fast import FastNet, enabled_by_default
from .loss import CrossEntropyLoss
from .optim import SGD


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite: training diverged (most often, lr is too high)."""


@dataclass
class History:
    """What ``fit`` measured, one list entry per epoch (entry 0 is epoch 1).

    - train_loss: mean training loss over the epoch's batches (each weighted by its size)
    - train_acc: fraction of training images classified correctly, measured in training
      mode on the fly while the weights change, as the book's ``train_ch6`` does
    - test_acc, test_loss: on the test set after the epoch, in evaluation mode (None when
      ``fit`` had no test data)
    - epoch_time: seconds for the whole epoch, training and evaluation
    - examples_per_sec: training images per second (training steps only)
    """

    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)
    examples_per_sec: list = field(default_factory=list)

    def __len__(self) -> int:
        """The number of epochs recorded."""
        return len(self.train_loss)

    def best_epoch(self) -> int | None:
        """The epoch (counted from 1) with the highest test accuracy; None without test data."""
        measured = [(acc, epoch) for epoch, acc in enumerate(self.test_acc, 1) if acc is not None]
        if not measured:
            return None
        # max over (accuracy, -epoch): the earliest epoch wins a tie
        return max(measured, key=lambda pair: (pair[0], -pair[1]))[1]

    def to_dict(self) -> dict:
        """A plain dict of lists (JSON-ready): ``{'train_loss': [...], ...}``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"History.from_dict: unknown entries {unknown}; expected {names}")
        history = cls(**{name: list(data.get(name, [])) for name in names})
        lengths = {name: len(getattr(history, name)) for name in names}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"History.from_dict: the lists must all have one entry per epoch; "
                             f"got lengths {lengths}")
        return history

    def save(self, path: str | os.PathLike) -> None:
        """Write the history as JSON, atomically (see ``npnet/atomic.py``)."""
        with atomic_write(path, "w") as file:
            json.dump(self.to_dict(), file, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        with open(path) as file:
            return cls.from_dict(json.load(file))


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000,
             return_loss: bool = False, fast: bool | None = None):
    """Accuracy of ``model`` on images x (N, C, H, W) with labels y (N,), in evaluation mode.

    The model is put in evaluation mode (BatchNorm uses its moving averages) and put back in
    the mode it was in. Batches of ``batch_size`` keep the memory small. ``fast``: run it on
    the fast backend (npnet.fast), by default unless NPNET_FAST=0; False runs the layers as
    written.

    Returns the accuracy, a float in [0, 1]; with ``return_loss=True`` the pair
    ``(accuracy, mean cross-entropy loss)``.
    """
    x = np.asarray(check_float_images(np.asarray(x), "evaluate"), dtype=model.dtype)
    accuracy, loss = _evaluate_batches(runner_for(model, fast),
                                       DataLoader(x, y, batch_size=batch_size))
    return (accuracy, loss) if return_loss else accuracy


def _evaluate_batches(model, batches) -> tuple[float, float]:
    """(accuracy, mean loss) over an iterable of (x, y) batches, in evaluation mode."""
    criterion = CrossEntropyLoss()
    was_training = model.training
    model.eval()
    try:
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in batches:
            logits = model(x)
            loss_sum += criterion(logits, y) * len(y)
            correct += int((logits.argmax(axis=1) == y).sum())
            seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("evaluate got no examples")
    return correct / seen, loss_sum / seen


def fit(model, train_data, test_data=None, *, epochs: int = 10, lr: float = 1.0,
        batch_size: int = 256, optimizer=None, loss=None, seed: int | None = None,
        history: History | None = None, on_epoch_end: Callable | None = None,
        progress: bool = True, verbose: bool = True, fast: bool | None = None,
        drop_last: bool = False, update_bn: bool = False) -> History:
    """Train ``model`` for ``epochs`` epochs of mini-batch gradient descent.

    Inputs:
    - model: an npnet Module mapping images (N, C, H, W) to logits (N, K)
    - train_data: a pair ``(x_train, y_train)`` of arrays, x (N, C, H, W) of floats (pixels
      scaled to [0, 1]; integer images are refused) and integer labels y (N,), cut into
      shuffled batches of ``batch_size`` every epoch; or a ``DataLoader`` (or any iterable
      of ``(x, y)`` batches), used as it is, except that fit tells one with a ``set_epoch``
      method which epoch (from 0) each pass is
    - test_data: ``(x_test, y_test)`` or a DataLoader; evaluated after every epoch
    - epochs: how many epochs to train in this call
    - lr: the learning rate of the default optimizer, ``SGD(model.parameters(), lr)``
    - optimizer: any object with ``zero_grad()`` and ``step()``; then ``lr`` is not used
    - loss: the criterion, ``CrossEntropyLoss()`` by default
    - seed: seed of the shuffling, for a repeatable run (the weights are seeded by
      ``npnet.manual_seed`` before the model is built); None shuffles at random. The order
      of epoch k depends on (seed, k) alone (``DataLoader.set_epoch``)
    - history: a ``History`` to continue (e.g. from a checkpoint): new epochs are appended
      and numbered after the ones it holds, and visit the samples in the order those epochs
      of an uninterrupted run would have: 1 epoch, then 2 more with ``history=`` (the same
      model and optimizer carried over), is bitwise the same as 3 epochs in one call
    - on_epoch_end: called as ``on_epoch_end(epoch, history)`` after each epoch, epoch
      counted from 1, e.g. to save a checkpoint
    - progress: show a progress bar over the batches of each epoch
    - verbose: print one summary line per epoch
    - fast: run the network on the fast backend (npnet.fast: the same numbers, proven on a
      small batch first), by default unless the environment variable NPNET_FAST=0; False
      runs every layer's own forward and backward, as written
    - drop_last: leave out each epoch's last batch when it is smaller than ``batch_size``
      (for ``(x, y)`` arrays; a DataLoader has its own). BatchNorm refuses to train on a
      batch of one sample, which N = k * batch_size + 1 samples leave over.
    - update_bn: after each epoch's training steps, before the evaluation, re-estimate every
      BatchNorm's moving averages from the training data at the epoch's final weights
      (``npnet.update_bn``: one forward pass; no weight changes). At a high learning rate
      the moving averages lag behind the weights, and the test accuracy jumps without it.

    Returns the ``History``. Raises ``DivergenceError`` if the loss becomes NaN or infinite,
    ``BatchTooSmallError`` (a ValueError) for a batch of one sample through a BatchNorm.
    """
    history = History() if history is None else history
    first, last = len(history) + 1, len(history) + epochs
    dtype = model.dtype or np.float32
    train_batches = _as_batches(train_data, dtype, batch_size, shuffle=True, seed=seed,
                                drop_last=drop_last)
    _check_not_empty(train_batches)  # before anything runs
    test_batches = None if test_data is None else _as_batches(test_data, dtype, 1000)
    optimizer = SGD(model.parameters(), lr=lr) if optimizer is None else optimizer
    criterion = CrossEntropyLoss() if loss is None else loss
    if update_bn:
        # update_bn.py builds on this module (runner_for, check_float_images): imported here
        from .update_bn import update_bn as re_estimate_statistics
    if getattr(criterion, "reduction", "mean") != "mean":
        # fit weights each batch's loss by its size and calls backward() without an upstream
        # gradient: both assume the mean over the batch
        raise ValueError(f"fit expects a loss that averages over the batch "
                         f"(reduction='mean'); got {criterion!r}. For 'sum' or 'none', write "
                         f"the loop yourself (README, 'A short example')")

    model = runner_for(model, fast)  # a FastNet over the model, unless fast is False
    # tqdm.auto: a widget bar in Jupyter, a text bar in a terminal; imported here because
    # ``import npnet`` needs numpy alone
    from tqdm.auto import tqdm

    for epoch in range(first, last + 1):
        model.train()
        if hasattr(train_batches, "set_epoch"):
            # the order of this epoch from (seed, epoch) alone: a resumed run continues
            # with the order the uninterrupted run would have had
            train_batches.set_epoch(epoch - 1)
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        with tqdm(train_batches, desc=f"epoch {epoch}/{last}", unit="batch", leave=False,
                  disable=not progress) as bar:
            for step, (x, y) in enumerate(bar, start=1):
                check_float_images(np.asarray(x), "fit")  # a batch of a user's iterable
                optimizer.zero_grad()                 # backward adds into .grad
                try:
                    logits = model(x)                 # (N, C, H, W) -> (N, K)
                except BatchTooSmallError as error:   # say which batch, and how to avoid it
                    raise BatchTooSmallError(_too_small_message(
                        error, epoch, step, len(y), train_batches, train_data)) from None
                batch_loss = criterion(logits, y)     # mean over the N examples
                if not math.isfinite(batch_loss):     # NaN or inf: every later step is lost
                    raise DivergenceError(_divergence_message(batch_loss, epoch, step,
                                                              train_batches, optimizer))
                model.backward(criterion.backward())  # dL/dlogits (N, K) -> every .grad
                optimizer.step()                      # p <- p - lr * dL/dp

                # running totals; the loss is a batch mean, so weight it by the batch size
                loss_sum += batch_loss * len(y)
                correct += int((logits.argmax(axis=1) == y).sum())
                seen += len(y)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                                refresh=False)
        train_seconds = time.perf_counter() - start
        if seen == 0:  # an iterable that gave no batch this time
            raise ValueError(f"fit: the training data gave no batch in epoch {epoch}; there "
                             f"is nothing to train on")

        if update_bn:  # the moving averages of the epoch's final weights, for the evaluation
            re_estimate_statistics(model, train_batches, batch_size=batch_size,
                                   fast=isinstance(model, FastNet))  # on what trains
        test_acc = test_loss = None
        if test_batches is not None:
            test_acc, test_loss = _evaluate_batches(model, test_batches)
        history.train_loss.append(loss_sum / seen)
        history.train_acc.append(correct / seen)
        history.test_acc.append(test_acc)
        history.test_loss.append(test_loss)
        history.epoch_time.append(time.perf_counter() - start)
        history.examples_per_sec.append(seen / train_seconds)
        if verbose:
            print(_summary_line(history, epoch, last), flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def runner_for(model, fast: bool | None):
    """What runs ``model``: a ``FastNet`` over it (fast=True, or None and NPNET_FAST is not
    0), or the model itself. A FastNet's backward skips the images' gradient, which nothing
    needs (a third of the first convolution's backward)."""
    if isinstance(model, FastNet):
        return model if fast is not False else model.net
    use = enabled_by_default() if fast is None else fast
    return FastNet(model, input_grad=False) if use else model


def _as_batches(data, dtype, batch_size: int, shuffle: bool = False, seed: int | None = None,
                drop_last: bool = False):
    """(x, y) arrays -> a DataLoader over them, x cast once to the model's dtype; a
    DataLoader (or other iterable of batches) is returned unchanged; integer images are refused
    (a DataLoader's up front, another iterable's batch by batch in fit)."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"expected data as a pair (x, y) or a DataLoader; got a "
                             f"{type(data).__name__} of length {len(data)}")
        x, y = data
        check_float_images(np.asarray(x), "fit")
        return DataLoader(np.asarray(x, dtype=dtype), np.asarray(y), batch_size=batch_size,
                          shuffle=shuffle, seed=seed, drop_last=drop_last)
    if isinstance(data, DataLoader):
        check_float_images(data.x, "fit")
    return data


def check_float_images(x: np.ndarray, who: str) -> np.ndarray:
    """x, unless it holds integers (or booleans): then a TypeError saying how to scale them.

    Images as files store them (uint8, 0-255) are not what the network was built for: the
    layers compute in float32 or float64, and LeNet's initial weights and learning rate
    assume pixels in [0, 1], as the book's ``ToTensor`` gives them."""
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        raise TypeError(f"{who} got images of dtype {x.dtype}, shape {x.shape}: the layers "
                        f"compute in float32 or float64, on pixels scaled to [0, 1] (as "
                        f"load_mnist() gives them). Scale them first, e.g. "
                        f"x = x.astype(np.float32) / 255 for uint8 pixels 0-255")
    return x


def _check_not_empty(batches) -> None:
    """A clear error for a training set with no batch, instead of a ZeroDivisionError after
    the first epoch."""
    if not hasattr(batches, "__len__") or len(batches) > 0:
        return
    if isinstance(batches, DataLoader) and len(batches.x) > 0:  # drop_last dropped them all
        raise ValueError(f"fit: the training set's {len(batches.x)} samples are fewer than "
                         f"batch_size={batches.batch_size}, and drop_last=True leaves out that "
                         f"incomplete batch: there is no batch to train on. Use a smaller "
                         f"batch_size")
    shape = f" (x of shape {batches.x.shape})" if isinstance(batches, DataLoader) else ""
    raise ValueError(f"fit got an empty training set{shape}: there is nothing to train on")


def _too_small_message(error: Exception, epoch: int, step: int, size: int, batches,
                       train_data) -> str:
    """BatchNorm's refusal of a one-sample batch, with where it happened in fit and how
    to avoid it."""
    steps = len(batches) if hasattr(batches, "__len__") else None
    samples = f"{size} sample" + ("" if size == 1 else "s")
    if steps == step and isinstance(batches, DataLoader):
        which = (f"the last batch of epoch {epoch} (step {step} of {steps}) holds {samples}: "
                 f"{len(batches.x)} training samples leave {size} over after batches of "
                 f"{batches.batch_size}")
    else:
        which = f"batch {step} of epoch {epoch} holds {samples}"
    fix = ("fit(..., drop_last=True) leaves out the lone last sample"
           if isinstance(train_data, (tuple, list))
           else "DataLoader(..., drop_last=True) leaves out the lone last sample")
    return f"fit: {which}. {fix}, or choose another batch size. {error}"


def _divergence_message(loss: float, epoch: int, step: int, batches, optimizer) -> str:
    steps = len(batches) if hasattr(batches, "__len__") else None
    lr = getattr(optimizer, "lr", None)
    if lr is not None and not np.isfinite(lr):
        lr = None  # lr=nan is no learning rate to suggest a tenth of
    at_lr = "" if lr is None else f" with lr={lr:g}"
    lower = "" if lr is None else f" (e.g. lr={lr / 10:g})"
    of_steps = "" if steps is None else f" of {steps}"
    return (f"the loss became {loss} at epoch {epoch}, step {step}{of_steps}{at_lr}: "
            f"training diverged. Try a lower learning rate{lower}; also check that the "
            f"inputs are scaled (e.g. pixels in [0, 1]) and contain no NaN.")


def _summary_line(history: History, epoch: int, last: int) -> str:
    """One line like the book's: ``epoch 3/10: loss 0.059, train acc 0.983, ... 6.0 s``."""
    line = (f"epoch {epoch}/{last}: loss {history.train_loss[-1]:.3f}, "
            f"train acc {history.train_acc[-1]:.3f}")
    if history.test_acc[-1] is not None:
        line += f", test acc {history.test_acc[-1]:.3f}"
    return line + (f", {history.examples_per_sec[-1]:.1f} examples/sec, "
                   f"{history.epoch_time[-1]:.1f} s")
