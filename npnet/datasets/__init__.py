"""Data sets and mini-batches.

- ``load_mnist()``, ``load_fashion_mnist()``: the full data sets, found on disk or downloaded
  (see ``mnist.py`` for where they are looked for);
- ``load_mnist_sample()``: 6,000 real MNIST digits shipped with npnet, for working offline;
- ``DataLoader``: mini-batches, reshuffled every epoch;
- ``read_idx()``, ``write_idx()``: the IDX file format the data sets come in (``idx.py``).

Every failure raises a ``DatasetError`` (a ``ValueError``) with a one-line message: which file
or folder, what is wrong, what to do. Its subclasses: ``DatasetNotFoundError`` (files missing,
downloading off), ``DownloadError`` and ``DatasetDownloadError`` (downloading failed; the
message keeps each mirror's reason), ``DataFileError`` (a file on disk is unreadable, empty,
truncated, damaged, not the official one, or a folder).

    from npnet.datasets import load_mnist, DataLoader
    x_train, y_train, x_test, y_test = load_mnist()      # x: (60000, 1, 28, 28) float32
    for x_batch, y_batch in DataLoader(x_train, y_train, batch_size=128, shuffle=True):
        ...
"""

from .download import DownloadError, download_file
from .idx import DatasetError, read_idx, write_idx
from .loader import DataLoader
from .mnist import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    DataFileError,
    DatasetDownloadError,
    DatasetNotFoundError,
    TrainTestData,
    cache_dir,
    load_fashion_mnist,
    load_mnist,
    load_mnist_sample,
)

__all__ = [
    "DataFileError",
    "DataLoader",
    "DatasetDownloadError",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "TrainTestData",
    "cache_dir",
    "download_file",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist_sample",
    "read_idx",
    "write_idx",
]
