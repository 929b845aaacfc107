"""MNIST and Fashion-MNIST: find the four standard files, download them if needed, load them.

Both data sets come as the same four IDX files (see ``idx.py``)::

    train-images-idx3-ubyte.gz   60,000 images, uint8, shape (60000, 28, 28)
    train-labels-idx1-ubyte.gz   60,000 labels 0-9, uint8, shape (60000,)
    t10k-images-idx3-ubyte.gz    10,000 test images, shape (10000, 28, 28)
    t10k-labels-idx1-ubyte.gz    10,000 test labels, shape (10000,)

Each file is looked for, under its ``.gz`` name or unpacked without ``.gz``, in these folders
and in their ``mnist/`` (resp. ``fashion-mnist/``) subfolder, first match wins:

1. ``root``, if given;
2. each folder in the environment variable ``NPNET_DATA`` (several separated by ``:``);
3. the per-user cache ``~/.cache/npnet`` (``$XDG_CACHE_HOME/npnet`` when that is set);
4. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` from Debian's
   ``dataset-fashion-mnist`` package.

Files still missing are downloaded, if ``download=True``, into ``root`` or else into the cache.
Every file is checked before use: its IDX header must match its size, and its MD5 checksum
must match the official one (this costs well under 0.1 s; see ``_read_verified``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .download import DownloadError, download_file
from .idx import DatasetError, decompress_if_gzip, parse_idx

MNIST_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle boot")


class TrainTestData(NamedTuple):
    """What the loaders return; unpacks as ``x_train, y_train, x_test, y_test = ...``.

    - x_train: images, shape (N_train, 1, 28, 28); float32 in [0, 1], or uint8 0-255 if raw
    - y_train: class labels 0-9, int64, shape (N_train,)
    - x_test:  images, shape (N_test, 1, 28, 28)
    - y_test:  class labels 0-9, int64, shape (N_test,)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class Checksums(NamedTuple):
    """The two MD5 checksums by which we recognise an official file.

    - gz_md5: of the published ``.gz`` file, as the mirrors serve it
    - idx_md5: of the uncompressed IDX bytes inside it. A copy that was re-compressed
      (Debian's package strips the file name from the gzip header, which changes the
      ``.gz`` bytes) or unpacked has a different file MD5 but the same IDX bytes.
    """

    gz_md5: str
    idx_md5: str


# The four files in the order of TrainTestData: train images, train labels, test images,
# test labels. The checksums are the ones published with the data sets.
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": Checksums("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                            "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte.gz": Checksums("d53e105ee54ea40749a09fcbcd1e9432",
                                            "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte.gz": Checksums("9fb629c4189551a2d022fa330f9573f3",
                                           "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte.gz": Checksums("ec29112dd5afa0611ce80d1b7f02629c",
                                           "27ae3e4e09519cfbb04c329615203637"),
}
FASHION_MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": Checksums("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                            "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": Checksums("25c81989df183df01b3e8a0aad5dffbe",
                                            "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": Checksums("bef4ecab320f06d8554ea6380940ec79",
                                           "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": Checksums("bb300cfdad3c16e7a12a480ee83cd310",
                                           "15d484375f8d13e6eb1aabb0c3f46965"),
}

# Tried in order. Change these lists, or pass mirrors=[...], to download from elsewhere.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
FASHION_MNIST_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]
# Where Debian's dataset-fashion-mnist package puts the four .gz files.
FASHION_MNIST_SYSTEM_DIRS = ["/usr/share/datasets/fashion-mnist"]

SAMPLE_PATH = Path(__file__).resolve().parent.parent / "data" / "mnist_sample.npz"


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The data files are in none of the places searched and could not be downloaded."""


def load_mnist(root: str | os.PathLike | None = None, download: bool = True,
               raw: bool = False, mirrors: list[str] | None = None) -> TrainTestData:
    """Load the 70,000 handwritten digits of MNIST (LeCun, Cortes and Burges).

    Inputs:
    - root: a folder to look in first, and to download into (default: the cache)
    - download: fetch missing files from ``mirrors`` (default ``MNIST_MIRRORS``)
    - raw: return the images as uint8 0-255 instead of float32 in [0, 1]

    Returns ``TrainTestData``: x_train (60000, 1, 28, 28), y_train (60000,),
    x_test (10000, 1, 28, 28), y_test (10000,); labels are int64 digits 0-9.
    """
    return _load_idx_dataset("MNIST", "mnist", MNIST_CHECKSUMS,
                             MNIST_MIRRORS if mirrors is None else mirrors, system_dirs=[],
                             root=root, download=download, raw=raw, loader_name="load_mnist")


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True,
                       raw: bool = False, mirrors: list[str] | None = None) -> TrainTestData:
    """Load Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research): 70,000 images of
    clothing in 10 classes, named in ``FASHION_MNIST_CLASSES``.

    Same arguments and shapes as ``load_mnist``. Also finds the files that Debian's
    ``dataset-fashion-mnist`` package installs in /usr/share/datasets/fashion-mnist.
    """
    return _load_idx_dataset("Fashion-MNIST", "fashion-mnist", FASHION_MNIST_CHECKSUMS,
                             FASHION_MNIST_MIRRORS if mirrors is None else mirrors,
                             system_dirs=FASHION_MNIST_SYSTEM_DIRS, root=root,
                             download=download, raw=raw, loader_name="load_fashion_mnist")


def load_mnist_sample(raw: bool = False) -> TrainTestData:
    """Load the small MNIST sample shipped inside npnet; works offline, in well under a second.

    5,000 training digits (500 per class) drawn from the official training set and 1,000 test
    digits (100 per class) from the official test set. ``npnet/data/mnist_sample.json`` and the
    ``train_indices`` / ``test_indices`` arrays in the .npz record exactly which ones, and
    ``tools/make_mnist_sample.py`` remakes it.

    Returns ``TrainTestData``: x_train (5000, 1, 28, 28), y_train (5000,),
    x_test (1000, 1, 28, 28), y_test (1000,), as in ``load_mnist``.
    """
    with np.load(SAMPLE_PATH, allow_pickle=False) as sample:
        return TrainTestData(*_to_model_input(sample["x_train"], sample["y_train"], raw),
                             *_to_model_input(sample["x_test"], sample["y_test"], raw))


def cache_dir() -> Path:
    """The per-user download cache: ``$XDG_CACHE_HOME/npnet``, by default ``~/.cache/npnet``."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative path here.
    base = Path(xdg_cache) if os.path.isabs(xdg_cache) else Path.home() / ".cache"
    return base / "npnet"


def data_dirs(subfolder: str, root: str | os.PathLike | None = None,
              system_dirs: list[str] = ()) -> list[Path]:
    """The folders searched for a data set's files, in the order they are searched.

    Each of root, the ``NPNET_DATA`` folders and the cache comes with its ``subfolder``
    (``"mnist"`` or ``"fashion-mnist"``), so both ``root="/data"`` with the files in
    /data/mnist/ and ``root="/data/mnist"`` work. ``system_dirs`` come last, as given.
    """
    bases = [] if root is None else [Path(root).expanduser()]
    bases += [Path(entry).expanduser()
              for entry in os.environ.get("NPNET_DATA", "").split(os.pathsep) if entry]
    bases.append(cache_dir())
    folders = [folder for base in bases for folder in (base, base / subfolder)]
    folders += [Path(folder) for folder in system_dirs]
    return list(dict.fromkeys(folders))  # drop repeats, keep the order


def find_file(gz_name: str, folders: list[Path]) -> Path | None:
    """The first ``folder/gz_name``, or ``folder/gz_name`` without ``.gz``, that exists."""
    names = [gz_name, gz_name.removesuffix(".gz")]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _load_idx_dataset(title, subfolder, checksums, mirrors, system_dirs, root, download, raw,
                      loader_name) -> TrainTestData:
    """Find (or download), verify and convert the four files of MNIST or Fashion-MNIST."""
    folders = data_dirs(subfolder, root, system_dirs)
    paths = {name: find_file(name, folders) for name in checksums}
    missing = [name for name, path in paths.items() if path is None]

    if missing and not download:
        raise DatasetNotFoundError(_not_found_message(
            title, subfolder, missing, folders, loader_name,
            "Downloading is off (download=False)."))
    for name in missing:
        destination = Path(root).expanduser() if root is not None else cache_dir() / subfolder
        try:
            paths[name] = download_file(name, mirrors, checksums[name].gz_md5, destination)
        except DownloadError as error:
            raise DatasetNotFoundError(_not_found_message(
                title, subfolder, [name], folders, loader_name,
                "Downloading failed:\n  " + "\n  ".join(error.failures))) from error

    train_images, train_labels, test_images, test_labels = (
        _read_verified(paths[name], checksums[name], title) for name in checksums)
    return TrainTestData(*_to_model_input(train_images, train_labels, raw),
                         *_to_model_input(test_images, test_labels, raw))


def _read_verified(path: Path, expected: Checksums, title: str) -> np.ndarray:
    """Read an IDX file and check that it is the official one, by either of its checksums.

    MD5 runs at several hundred MB/s: checking MNIST's 10 MB of .gz files takes a few
    hundredths of a second, less than unpacking them, so we check on every load instead of
    trusting whatever file is on disk.
    """
    content = path.read_bytes()
    data = decompress_if_gzip(content, name=str(path))
    array = parse_idx(data, name=str(path))  # first: its errors say more than a checksum's
    if _md5(content) != expected.gz_md5 and _md5(data) != expected.idx_md5:
        raise DatasetError(
            f"{path}: not the official {title} file: the MD5 of its IDX data is {_md5(data)}, "
            f"expected {expected.idx_md5}. Delete it to download a fresh copy, or point root "
            f"or NPNET_DATA at a good one."
        )
    return array


def _to_model_input(images: np.ndarray, labels: np.ndarray, raw: bool):
    """(N, 28, 28) uint8 images and (N,) labels -> (N, 1, 28, 28) images and int64 labels."""
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetError(f"expected images (N, H, W) and labels (N,); got images "
                           f"{images.shape} and labels {labels.shape}")
    x = images[:, np.newaxis, :, :]  # add the channel axis C = 1: (N, H, W) -> (N, 1, H, W)
    if not raw:
        x = x.astype(np.float32)
        x /= 255.0  # pixel values 0-255 -> [0, 1]
    return x, labels.astype(np.int64)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _not_found_message(title, subfolder, missing, folders, loader_name, download_note) -> str:
    """Say which files are missing, everywhere we looked, and how to get them."""
    all_names = ", ".join(MNIST_CHECKSUMS)  # the four names are the same for both data sets
    lines = [f"{title}: could not find {', '.join(missing)} (nor without .gz). Looked in:"]
    lines += [f"  {folder}" for folder in folders]
    lines += [download_note,
              "To get the data, do one of:",
              f"  - put the four files ({all_names}) in a folder and pass "
              f"{loader_name}(root=folder), or set the environment variable NPNET_DATA=folder "
              f"(the files may also be in its {subfolder}/ subfolder)",
              f"  - call {loader_name}(download=True) on a machine with internet access"]
    if title == "Fashion-MNIST":
        lines.append("  - on Debian or Ubuntu: apt-get install dataset-fashion-mnist")
    lines.append("  - to try things out offline, use the small MNIST sample shipped with npnet: "
                 "npnet.datasets.load_mnist_sample()")
    return "\n".join(lines)
