"""DataLoader: cut a data set into mini-batches, in a new random order every epoch."""

from __future__ import annotations

import math

import numpy as np


class DataLoader:
    """Iterate over ``(x_batch, y_batch)`` mini-batches of two arrays with the same length N.

    Inputs:
    - x: inputs, shape (N, ...), e.g. images (N, 1, 28, 28)
    - y: targets, shape (N, ...), e.g. labels (N,)
    - batch_size: B, the number of samples per batch; the last batch may be smaller
    - shuffle: visit the samples in a new random order every epoch (every ``for`` loop)
    - seed: seed of the random order (an int >= 0), so that a whole run can be repeated
      exactly; None draws one at random
    - drop_last: leave out the last batch if it has fewer than B samples. Worth it with
      BatchNorm: in training mode it refuses a batch of one sample (one value per feature
      has no variance), which N = k B + 1 samples leave over at the end of every epoch.

    Each batch is ``x[indices], y[indices]``, of shapes (B, ...) and (B, ...)::

        loader = DataLoader(x_train, y_train, batch_size=128, shuffle=True, seed=0)
        for epoch in range(10):
            for x_batch, y_batch in loader:   # len(loader) batches, each sample once
                ...

    The order of epoch k (counted from 0) depends on (seed, k) alone. Each ``for`` loop is
    the next epoch; ``set_epoch(k)`` says which epoch the next loop is, as in PyTorch's
    samplers. A run resumed at epoch k (``fit`` with a ``history`` does this) then visits
    the samples in the order the uninterrupted run would have.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
                 shuffle: bool = False, seed: int | None = None, drop_last: bool = False):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(f"DataLoader expects x and y with the same number of samples N "
                             f"(first axis); got x of shape {x.shape} and y of shape {y.shape}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader expects batch_size to be a positive integer; "
                             f"got {batch_size!r}")
        if seed is None:
            seed = np.random.SeedSequence().entropy  # fresh randomness, then fixed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"DataLoader expects seed to be an integer >= 0 or None; "
                             f"got {seed!r}")
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0  # the epoch the next ``for`` loop runs

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``for`` loop epoch ``epoch`` (from 0), with that epoch's order."""
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the N samples that epoch ``epoch`` visits, a function of
        (seed, epoch) alone: a generator seeded with both draws it."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def __len__(self) -> int:
        """The number of batches in one epoch."""
        if self.drop_last:
            return len(self.x) // self.batch_size
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1  # the next loop is the next epoch
        return self._batches(self.order(epoch) if self.shuffle else None)

    def _batches(self, order: np.ndarray | None):
        num_samples = len(self.x)
        for batch in range(len(self)):
            start = batch * self.batch_size
            stop = min(start + self.batch_size, num_samples)
            if order is None:
                yield self.x[start:stop], self.y[start:stop]  # slices: views, no copying
            else:
                indices = order[start:stop]
                yield self.x[indices], self.y[indices]

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.x)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")
