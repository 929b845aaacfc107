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

Files still missing are downloaded, if ``download=True``, into ``root``, or into the cache when
``root`` is not given or cannot be written. The mirrors are tried in order: ``mirrors=[...]``,
else the environment variable ``NPNET_MNIST_MIRRORS`` (``NPNET_FASHION_MNIST_MIRRORS``), else
``MNIST_MIRRORS`` (``FASHION_MNIST_MIRRORS``). All downloads of one call share a time limit:
``timeout=`` seconds, else ``$NPNET_DOWNLOAD_TIMEOUT``, else 120 s (see ``download.py``).

Every file is checked before use: its IDX header must match its size, and its MD5 checksum
must match the official one (this costs well under 0.1 s; see ``_read_verified``).

Every failure raises a ``DatasetError`` (see ``idx.py``) whose message is one line: which file
or folder, what is wrong, and what to do about it.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .download import DOWNLOAD_TIMEOUT, DownloadError, fetch_verified
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

# Tried in order. To download from elsewhere pass mirrors=[...], or set the environment
# variable NPNET_MNIST_MIRRORS (NPNET_FASHION_MNIST_MIRRORS): base URLs separated by spaces or
# commas.
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


MIRRORS_ENV = {"MNIST": "NPNET_MNIST_MIRRORS", "Fashion-MNIST": "NPNET_FASHION_MNIST_MIRRORS"}
TIMEOUT_ENV = "NPNET_DOWNLOAD_TIMEOUT"  # seconds for all the downloads of one load_... call

# How to get around a bad data file, said at the end of every DataFileError.
BAD_FILE_FIX = ("delete it to download a fresh copy, or pass root= (--data-dir in the examples) "
                "or set NPNET_DATA to a folder with a good copy.")
SAMPLE_HINT = "offline, load_mnist_sample() gives 6,000 real MNIST digits shipped with npnet"


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The data files are in none of the places searched and could not be downloaded."""


class DataFileError(DatasetError):
    """A data file was found but cannot be used: unreadable, empty, truncated, damaged, not the
    official file, or a folder (or other non-file) under a data file's name. ``path`` is it."""

    def __init__(self, path: str | os.PathLike, message: str):
        self.path = Path(path)
        super().__init__(message)


class DatasetDownloadError(DownloadError, DatasetNotFoundError):
    """The data files are not on this machine and downloading them failed.

    ``failures`` gives the reason at each mirror (or why the file could not be saved), and
    ``cannot_write`` is True when no download folder could be written. Both a
    ``DownloadError`` and a ``DatasetNotFoundError``.
    """

    def __init__(self, message: str, name: str, failures: list[str], cannot_write: bool):
        DownloadError.__init__(self, name, failures, cannot_write, message)


def load_mnist(root: str | os.PathLike | None = None, download: bool = True,
               raw: bool = False, mirrors: list[str] | str | None = None,
               timeout: float | None = None) -> TrainTestData:
    """Load the 70,000 handwritten digits of MNIST (LeCun, Cortes and Burges).

    Inputs:
    - root: a folder to look in first, and to download into (default: the cache; also the
      cache when root cannot be written)
    - download: fetch missing files from the mirrors
    - raw: return the images as uint8 0-255 instead of float32 in [0, 1]
    - mirrors: base URLs to download from, tried in order, e.g.
      ``["https://example.org/mnist/"]``; default: the environment variable
      ``NPNET_MNIST_MIRRORS`` (URLs separated by spaces or commas) if set, else
      ``MNIST_MIRRORS``
    - timeout: time limit in seconds for all the downloads of this call together; default:
      the environment variable ``NPNET_DOWNLOAD_TIMEOUT`` if set, else 120. A mirror that
      sends nothing for 30 s is given up earlier, and the next one tried.

    Returns ``TrainTestData``: x_train (60000, 1, 28, 28), y_train (60000,),
    x_test (10000, 1, 28, 28), y_test (10000,); labels are int64 digits 0-9.

    Raises a ``DatasetError`` with a one-line message saying what is wrong and what to do:
    ``DatasetNotFoundError`` when files are missing and download=False,
    ``DatasetDownloadError`` (a ``DownloadError``) when downloading failed (each mirror's
    reason, or a folder that cannot be written), ``DataFileError`` when a file on disk is
    unreadable, empty, truncated, damaged or not the official one.
    """
    return _load_idx_dataset("MNIST", "mnist", MNIST_CHECKSUMS, MNIST_MIRRORS, mirrors,
                             timeout, system_dirs=[], root=root, download=download, raw=raw,
                             loader_name="load_mnist")


def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = True,
                       raw: bool = False, mirrors: list[str] | str | None = None,
                       timeout: float | None = None) -> TrainTestData:
    """Load Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research): 70,000 images of
    clothing in 10 classes, named in ``FASHION_MNIST_CLASSES``.

    Same arguments, shapes and errors as ``load_mnist``; the default mirrors come from the
    environment variable ``NPNET_FASHION_MNIST_MIRRORS`` if set, else
    ``FASHION_MNIST_MIRRORS``. Also finds the files that Debian's ``dataset-fashion-mnist``
    package installs in /usr/share/datasets/fashion-mnist.
    """
    return _load_idx_dataset("Fashion-MNIST", "fashion-mnist", FASHION_MNIST_CHECKSUMS,
                             FASHION_MNIST_MIRRORS, mirrors, timeout,
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

    Raises ``DataFileError`` if the file is missing or damaged (a broken installation).
    """
    try:
        with np.load(SAMPLE_PATH, allow_pickle=False) as sample:
            arrays = [sample[key] for key in ("x_train", "y_train", "x_test", "y_test")]
        return TrainTestData(*_to_model_input(arrays[0], arrays[1], raw),
                             *_to_model_input(arrays[2], arrays[3], raw))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        # OSError: missing or unreadable; BadZipFile, zlib.error, EOFError and ValueError:
        # truncated or damaged; KeyError: an array is missing; DatasetError (a ValueError):
        # the arrays do not fit together.
        why = ("it is missing" if isinstance(error, FileNotFoundError)
               else f"it cannot be read ({_error_text(error)})")
        raise DataFileError(SAMPLE_PATH, (
            f"{SAMPLE_PATH}: the MNIST sample shipped with npnet is broken: {why}. To fix: "
            f"reinstall npnet, or in a git checkout restore the file with "
            f"git checkout -- npnet/data/mnist_sample.npz")) from error


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


def find_file(gz_name: str, folders: list[Path],
              unsearchable: list[Path] | None = None) -> Path | None:
    """The first ``folder/gz_name``, or ``folder/gz_name`` without ``.gz``, that exists.

    Raises ``DataFileError`` if what comes first under one of these names is not a file: a
    folder, a broken symbolic link, a device. Folders that cannot be searched (permission
    denied) are skipped, and appended to ``unsearchable`` if it is given.
    """
    names = [gz_name, gz_name.removesuffix(".gz")]
    for folder in folders:
        for name in names:
            candidate = folder / name
            try:
                mode = candidate.stat().st_mode
            except (FileNotFoundError, NotADirectoryError):
                if candidate.is_symlink():
                    raise DataFileError(candidate, (
                        f"{candidate}: a broken symbolic link (to {os.readlink(candidate)}, "
                        f"which does not exist). To fix: delete or correct the link, or pass "
                        f"root= (--data-dir in the examples) or set NPNET_DATA to a folder "
                        f"with the data.")) from None
                continue
            except PermissionError:
                if unsearchable is not None and folder not in unsearchable:
                    unsearchable.append(folder)
                break  # the other name in this folder cannot be looked at either
            except OSError as error:  # e.g. a loop of symbolic links
                raise DataFileError(candidate, (
                    f"{candidate}: cannot be opened ({_error_text(error)}). To fix: "
                    f"{BAD_FILE_FIX}")) from error
            if stat.S_ISREG(mode):
                return candidate
            what = "a folder" if stat.S_ISDIR(mode) else "a device, pipe or socket"
            raise DataFileError(candidate, (
                f"{candidate}: {what}, not a data file. To fix: remove or rename it so that "
                f"the file can be downloaded there, or pass root= (--data-dir in the examples) "
                f"or set NPNET_DATA to a folder with the data."))
    return None


def _load_idx_dataset(title, subfolder, checksums, default_mirrors, mirrors, timeout,
                      system_dirs, root, download, raw, loader_name) -> TrainTestData:
    """Find (or download), verify and convert the four files of MNIST or Fashion-MNIST."""
    folders = data_dirs(subfolder, root, system_dirs)
    unsearchable = []
    paths = {name: find_file(name, folders, unsearchable) for name in checksums}
    missing = [name for name, path in paths.items() if path is None]

    if download:  # checked even when nothing is missing: a wrong setting is never ignored
        mirrors = _mirror_list(mirrors, MIRRORS_ENV[title], default_mirrors)
        time_limit = _time_limit(timeout)
    if missing and not download:
        raise DatasetNotFoundError(_not_found_message(
            title, subfolder, missing, folders, unsearchable, loader_name))
    if missing:
        deadline = time.monotonic() + time_limit
        # Into root if given, else (or if root cannot be written) into the cache.
        destinations = [Path(root).expanduser()] if root is not None else []
        destinations = list(dict.fromkeys(destinations + [cache_dir() / subfolder]))
        for name in missing:
            paths[name], mirrors = _download(title, name, checksums[name].gz_md5, mirrors,
                                             destinations, deadline, time_limit, loader_name)

    train_images, train_labels, test_images, test_labels = (
        _read_verified(paths[name], checksums[name], title) for name in checksums)
    return TrainTestData(*_to_model_input(train_images, train_labels, raw),
                         *_to_model_input(test_images, test_labels, raw))


def _download(title, name, md5, mirrors, destinations, deadline, time_limit, loader_name):
    """Download one file into the first destination folder that can be written.

    Returns (its path, the mirrors reordered to try the one that served it first next time).
    Raises ``DatasetDownloadError`` with a one-line message.
    """
    write_failures = []
    for destination in destinations:
        try:
            path, used = fetch_verified(name, mirrors, md5, destination, deadline, time_limit)
        except DownloadError as error:
            if error.cannot_write:
                write_failures += error.failures
                continue
            fixes = [f"check the network, or choose other mirrors ({loader_name}(mirrors=[...]) "
                     f"or {MIRRORS_ENV[title]})"]
            if any("time limit" in failure for failure in error.failures):
                fixes.append(f"allow more time ({loader_name}(timeout=seconds) or "
                             f"{TIMEOUT_ENV}; files already downloaded are kept)")
            fixes.append(f"put the four files in a folder and pass {loader_name}(root=folder) "
                         f"(--data-dir in the examples) or set NPNET_DATA=folder")
            raise DatasetDownloadError(
                f"{title}: could not download {name} into {destination}: "
                f"{'; '.join(error.failures)}. To fix: {', or '.join(fixes)}; {SAMPLE_HINT}.",
                name, error.failures, cannot_write=False) from error
        return path, [used] + [mirror for mirror in mirrors if mirror != used]
    raise DatasetDownloadError(
        f"{title}: could not download {name}: {'; '.join(write_failures)}. To fix: pass "
        f"{loader_name}(root=folder) (--data-dir in the examples) a folder you can write to, "
        f"or set XDG_CACHE_HOME to one; {SAMPLE_HINT}.",
        name, write_failures, cannot_write=True)


def _mirror_list(mirrors, variable: str, default: list[str]) -> list[str]:
    """The mirrors to use: the argument, else the environment variable, else the default.

    A string (as in the environment variable) holds URLs separated by spaces or commas.
    """
    if mirrors is None:
        mirrors = os.environ.get(variable, "")
        if not mirrors.strip():
            return list(default)
    if isinstance(mirrors, str):
        return mirrors.replace(",", " ").split()
    return [os.fspath(mirror) for mirror in mirrors]


def _time_limit(timeout) -> float:
    """The download time limit in seconds: the argument, else $NPNET_DOWNLOAD_TIMEOUT, else 120."""
    where = f"timeout={timeout!r}"
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV, "").strip()
        if not text:
            return DOWNLOAD_TIMEOUT
        where, timeout = f"{TIMEOUT_ENV}={text}", text
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:  # also catches nan
        raise DatasetError(f"{where}: the download time limit must be a number of seconds "
                           f"above 0 (the default is {DOWNLOAD_TIMEOUT:g})")
    return seconds


def _read_verified(path: Path, expected: Checksums, title: str) -> np.ndarray:
    """Read an IDX file and check that it is the official one, by either of its checksums.

    MD5 runs at several hundred MB/s: checking MNIST's 10 MB of .gz files takes a few
    hundredths of a second, less than unpacking them, so we check on every load instead of
    trusting whatever file is on disk. Every problem raises ``DataFileError``.
    """
    try:
        content = path.read_bytes()
    except PermissionError as error:
        raise DataFileError(path, (
            f"{path}: cannot be read (permission denied). To fix: make it readable "
            f"(chmod a+r {path}), or {BAD_FILE_FIX}")) from error
    except OSError as error:
        raise DataFileError(path, (
            f"{path}: cannot be read ({_error_text(error)}). To fix: {BAD_FILE_FIX}")) from error
    try:
        data = decompress_if_gzip(content, name=str(path))
        array = parse_idx(data, name=str(path))  # first: its errors say more than a checksum's
    except DatasetError as error:
        raise DataFileError(path, f"{error}. To fix: {BAD_FILE_FIX}") from error
    if _md5(content) != expected.gz_md5 and _md5(data) != expected.idx_md5:
        raise DataFileError(path, (
            f"{path}: not the official {title} file: the MD5 of its IDX data is {_md5(data)}, "
            f"expected {expected.idx_md5} (a damaged copy, or another file under this name). "
            f"To fix: {BAD_FILE_FIX}"))
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


def _error_text(error: BaseException) -> str:
    """An exception's message on one line (the strerror alone for an OSError)."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(text.split())


def _not_found_message(title, subfolder, missing, folders, unsearchable, loader_name) -> str:
    """One line: which files are missing, everywhere we looked, and how to get them."""
    all_names = ", ".join(MNIST_CHECKSUMS)  # the four names are the same for both data sets
    looked = ", ".join(str(folder) for folder in folders)
    if unsearchable:
        looked += (f" (could not look inside {', '.join(str(f) for f in unsearchable)}: "
                   f"permission denied)")
    if len(missing) == len(MNIST_CHECKSUMS):
        what, files = f"none of the four files ({all_names}) was found", "the four files"
    else:
        what, files = f"{', '.join(missing)} not found", f"the four files ({all_names})"
    fixes = [f"put {files} in a folder and pass {loader_name}(root=folder) "
             f"(--data-dir in the examples) or set NPNET_DATA=folder (the files may also be in "
             f"its {subfolder}/ subfolder)",
             f"call {loader_name}(download=True) on a machine with internet access"]
    if title == "Fashion-MNIST":
        fixes.append("on Debian or Ubuntu: apt-get install dataset-fashion-mnist")
    return (f"{title}: {what} (nor unpacked, without .gz) in {looked}; "
            f"downloading is off (download=False). To fix: {', or '.join(fixes)}; "
            f"{SAMPLE_HINT}.")
