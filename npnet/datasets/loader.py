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
    - seed: seed of the random order, so that a whole run can be repeated exactly
    - drop_last: leave out the last batch if it has fewer than B samples

    Each batch is ``x[indices], y[indices]``, of shapes (B, ...) and (B, ...)::

        loader = DataLoader(x_train, y_train, batch_size=128, shuffle=True, seed=0)
        for epoch in range(10):
            for x_batch, y_batch in loader:   # len(loader) batches, each sample once
                ...
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
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        # One generator for the loader's whole life: each epoch draws the next permutation
        # from it, so the order changes from epoch to epoch, yet the same seed repeats the
        # same sequence of orders.
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """The number of batches in one epoch."""
        if self.drop_last:
            return len(self.x) // self.batch_size
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        num_samples = len(self.x)
        order = self.rng.permutation(num_samples) if self.shuffle else None
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
