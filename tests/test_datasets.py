"""Tests for npnet.datasets: IDX files, finding and downloading MNIST, the sample, DataLoader.

No test uses the internet. Downloads are served by an HTTP server on 127.0.0.1 started here;
most tests use small fake IDX files with their checksums patched in, and the tests that need
the real MNIST files run when ``<repo>/../shared/data/mnist`` holds them.
"""

from __future__ import annotations

import errno
import functools
import gzip
import hashlib
import http.server
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from npnet.datasets import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    DataFileError,
    DataLoader,
    DatasetDownloadError,
    DatasetError,
    DatasetNotFoundError,
    DownloadError,
    download_file,
    load_fashion_mnist,
    load_mnist,
    load_mnist_sample,
    read_idx,
    write_idx,
)
from npnet.datasets import download, mnist
from npnet.datasets.mnist import Checksums, data_dirs, find_file

REPO = Path(__file__).resolve().parents[1]
REAL_MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"
HAVE_REAL_MNIST = (REAL_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_DEBIAN_FASHION = (DEBIAN_FASHION_DIR / "train-images-idx3-ubyte.gz").is_file()
FILE_NAMES = list(mnist.MNIST_CHECKSUMS)  # the four standard names, train images first


# ----------------------------------------------------------------------------- fixtures


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once, like being offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path):
    """Keep every test away from the user's real data, cache and the internet."""
    for variable in ["NPNET_DATA", "XDG_CACHE_HOME", "NPNET_DOWNLOAD_TIMEOUT",
                     "NPNET_MNIST_MIRRORS", "NPNET_FASHION_MNIST_MIRRORS"]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIRS", [])
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [closed_port_url()])
    monkeypatch.setattr(mnist, "FASHION_MNIST_MIRRORS", [closed_port_url()])


@pytest.fixture
def web_root(tmp_path):
    """Serve ``tmp_path / "www"`` over HTTP on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def silent_url():
    """A URL on 127.0.0.1 where a server accepts connections but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel completes connections; nobody ever reads or answers
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()


class Stalling(str):
    """A server's base URL (a str) that also counts the requests it got in ``requests``."""

    requests: list[str]


@pytest.fixture
def stalling_url():
    """A URL on 127.0.0.1 whose server sends the headers and 10 bytes, then nothing."""
    release = threading.Event()
    requests = []

    class StallingHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(bytes(10))
            release.wait(10)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StallingHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = Stalling(f"http://127.0.0.1:{server.server_address[1]}/")
    url.requests = requests
    yield url
    release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def part_files(folder: Path) -> list[str]:
    """The temporary .part files of downloads in ``folder``."""
    return [name for name in os.listdir(folder) if name.endswith(".part")]


def one_line(error: BaseException) -> str:
    """The error's message, checked to be a single line."""
    message = str(error)
    assert message and "\n" not in message, message
    return message


def write_fake_mnist(folder: Path, seed: int = 0):
    """Write four small MNIST-like files (20 training, 10 test images) into ``folder``.

    Returns the raw arrays (images (N, 28, 28) uint8, labels (N,) uint8) and a checksum table
    for them, to patch in for the official ``MNIST_CHECKSUMS``.
    """
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
              np.arange(20, dtype=np.uint8) % 10,
              rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8),
              rng.permutation(10).astype(np.uint8)]
    folder.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for name, array in zip(FILE_NAMES, arrays, strict=True):
        write_idx(folder / name, array)
        gz_bytes = (folder / name).read_bytes()
        checksums[name] = Checksums(md5_of(gz_bytes), md5_of(gzip.decompress(gz_bytes)))
    return arrays, checksums


def assert_loaded(data, arrays):
    """``data`` (from load_mnist) holds ``arrays`` (from write_fake_mnist) as model input."""
    train_images, train_labels, test_images, test_labels = arrays
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train[:, 0], train_images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, train_labels)
    assert data.y_train.dtype == np.int64
    np.testing.assert_allclose(data.x_test[:, 0], test_images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, test_labels)


# ----------------------------------------------------------------------------- IDX format


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True, dtype=dtype)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype)
    path = tmp_path / f"array-idx3{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    loaded = read_idx(path)
    assert loaded.dtype == array.dtype and loaded.shape == (3, 4, 5)
    np.testing.assert_array_equal(loaded, array)


def test_idx_header_is_written_as_specified(tmp_path):
    # Independent oracle: the header spelled out with struct, big-endian (">").
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[1, 27, 27] = 255
    write_idx(tmp_path / "images-idx3-ubyte", images)
    content = (tmp_path / "images-idx3-ubyte").read_bytes()
    assert content[:16] == struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 28, 28)
    assert len(content) == 16 + 2 * 28 * 28 and content[-1] == 255

    write_idx(tmp_path / "values-idx1", np.array([1.5, -2.0], dtype=np.float32))
    content = (tmp_path / "values-idx1").read_bytes()
    assert content == struct.pack(">BBBBIff", 0, 0, 0x0D, 1, 2, 1.5, -2.0)


def test_read_idx_recognises_gzip_by_content_not_by_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", labels)
    os.rename(tmp_path / "labels.gz", tmp_path / "labels-idx1-ubyte")  # gzip without .gz
    np.testing.assert_array_equal(read_idx(tmp_path / "labels-idx1-ubyte"), labels)
    write_idx(tmp_path / "plain", labels)
    os.rename(tmp_path / "plain", tmp_path / "plain.gz")  # uncompressed, named .gz
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), labels)


def test_write_idx_rejects_types_idx_cannot_store(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))


VALID = struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 8, 9])  # labels [7, 8, 9]
MNIST_TRAIN_HEADER = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 60000, 28, 28)


@pytest.mark.parametrize("content, message", [
    (b"", r"empty file \(0 bytes"),
    (b"\x00\x00", "too short to be an IDX file"),
    (b"<!DOCTYPE html><html>404 Not Found</html>", "not an IDX file.*found 3c 21 44 4f"),
    (b"\x00\x00\x07\x01" + VALID[4:], "not an IDX file"),  # 07 is no IDX type code
    (MNIST_TRAIN_HEADER[:10], "declares 3 dimensions, which needs 16 header bytes"),
    (MNIST_TRAIN_HEADER + bytes(1234),
     r"expected 47040000 bytes of uint8 data for shape \(60000, 28, 28\), found 1234"),
    (VALID + b"\x00", r"expected 3 bytes of uint8 data for shape \(3,\), found 4"),
    (VALID[:-1], r"expected 3 bytes .* found 2 \(the file is truncated\)"),
    (gzip.compress(MNIST_TRAIN_HEADER + bytes(5000))[:-30], "corrupt gzip stream"),  # cut off
    (gzip.compress(VALID)[:-8] + b"\xff" * 8, "corrupt gzip stream"),  # wrong CRC at the end
])
def test_read_idx_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as caught:
        read_idx(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert isinstance(caught.value, ValueError)


@pytest.mark.skipif(not HAVE_REAL_MNIST, reason="real MNIST files not in ../shared/data/mnist")
def test_read_idx_real_mnist_labels():
    # The first labels of MNIST's files, as printed in countless tutorials.
    train_labels = read_idx(REAL_MNIST_DIR / "train-labels-idx1-ubyte.gz")
    assert train_labels.shape == (60000,) and train_labels.dtype == np.uint8
    np.testing.assert_array_equal(train_labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    test_labels = read_idx(REAL_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(test_labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])


# ----------------------------------------------------------------------------- finding files


def test_search_order_root_then_npnet_data_then_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NPNET_DATA", f"{tmp_path / 'env1'}{os.pathsep}{tmp_path / 'env2'}")
    cache = tmp_path / "home" / ".cache" / "npnet"
    assert data_dirs("mnist", root=tmp_path / "root") == [
        tmp_path / "root", tmp_path / "root" / "mnist",
        tmp_path / "env1", tmp_path / "env1" / "mnist",
        tmp_path / "env2", tmp_path / "env2" / "mnist",
        cache, cache / "mnist"]

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dirs("fashion-mnist", system_dirs=["/usr/share/datasets/fashion-mnist"]) == [
        tmp_path / "env1", tmp_path / "env1" / "fashion-mnist",
        tmp_path / "env2", tmp_path / "env2" / "fashion-mnist",
        tmp_path / "xdg" / "npnet", tmp_path / "xdg" / "npnet" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist")]


def test_first_folder_with_the_file_wins(tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    folders = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    assert find_file(name, folders) is None
    (tmp_path / "c").mkdir()
    write_idx(tmp_path / "c" / name, np.zeros(1, np.uint8))
    assert find_file(name, folders) == tmp_path / "c" / name
    (tmp_path / "b").mkdir()
    write_idx(tmp_path / "b" / "train-labels-idx1-ubyte", np.zeros(1, np.uint8))  # unpacked
    assert find_file(name, folders) == tmp_path / "b" / "train-labels-idx1-ubyte"


@pytest.mark.parametrize("where", ["root", "root/mnist", "NPNET_DATA", "NPNET_DATA/mnist",
                                   "cache", "XDG_CACHE_HOME"])
def test_load_mnist_finds_files_in_each_place(monkeypatch, tmp_path, where):
    root = None
    if where.startswith("root"):
        root = tmp_path / "data"
        folder = tmp_path / "data" / where.partition("/")[2]
    elif where.startswith("NPNET_DATA"):
        monkeypatch.setenv("NPNET_DATA", str(tmp_path / "data"))
        folder = tmp_path / "data" / where.partition("/")[2]
    elif where == "cache":
        folder = tmp_path / "home" / ".cache" / "npnet" / "mnist"
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        folder = tmp_path / "xdg" / "npnet" / "mnist"
    arrays, checksums = write_fake_mnist(folder)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    assert_loaded(load_mnist(root=root, download=False), arrays)


def test_load_fashion_mnist_finds_the_debian_layout(monkeypatch, tmp_path):
    debian_dir = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    arrays, checksums = write_fake_mnist(debian_dir)
    monkeypatch.setattr(mnist, "FASHION_MNIST_CHECKSUMS", checksums)
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIRS", [str(debian_dir)])
    assert_loaded(load_fashion_mnist(download=False), arrays)


def test_recompressed_or_unpacked_copies_are_accepted(monkeypatch, tmp_path):
    # Debian re-packs the .gz files (the file MD5 changes, the IDX bytes inside do not);
    # users unpack them. Both are recognised by the MD5 of the IDX data.
    arrays, checksums = write_fake_mnist(tmp_path / "official")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    mine = tmp_path / "mine"
    mine.mkdir()
    for index, name in enumerate(FILE_NAMES):
        idx_bytes = gzip.decompress((tmp_path / "official" / name).read_bytes())
        if index % 2:
            (mine / name.removesuffix(".gz")).write_bytes(idx_bytes)
        else:
            (mine / name).write_bytes(gzip.compress(idx_bytes, compresslevel=1, mtime=12345))
            assert md5_of((mine / name).read_bytes()) != checksums[name].gz_md5
    assert_loaded(load_mnist(root=mine, download=False), arrays)


def test_a_wrong_file_on_disk_is_refused(monkeypatch, tmp_path):
    _, checksums = write_fake_mnist(tmp_path / "data", seed=0)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    other = tmp_path / "data" / "t10k-labels-idx1-ubyte.gz"
    write_idx(other, np.zeros(10, np.uint8))  # valid IDX, but not the expected data
    with pytest.raises(DatasetError, match=f"{other}: not the official MNIST file"):
        load_mnist(root=tmp_path / "data", download=False)
    other.write_bytes(other.read_bytes()[:20])  # now also truncated
    with pytest.raises(DatasetError, match=f"{other}: corrupt gzip stream"):
        load_mnist(root=tmp_path / "data", download=False)


def test_nothing_found_offline_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("NPNET_DATA", str(tmp_path / "shared"))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_mnist(root=tmp_path / "mine", download=False)
    message = str(caught.value)
    assert "\n" not in message
    for folder in [tmp_path / "mine", tmp_path / "shared" / "mnist",
                   tmp_path / "home" / ".cache" / "npnet" / "mnist"]:
        assert f" {folder}," in message or f" {folder};" in message
    for hint in ["download=False", "NPNET_DATA", "root=", "--data-dir", "load_mnist_sample()"]:
        assert hint in message
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, ValueError)

    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(download=False)


# ----------------------------------------------------------------------------- bad files


def damage_train_images(folder: Path, damage: str, monkeypatch) -> Path:
    """Spoil ``folder``'s train-images file (written by write_fake_mnist); return its path."""
    path = folder / "train-images-idx3-ubyte.gz"
    content = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated gzip":
        path.write_bytes(content[:len(content) // 2])
    elif damage == "truncated unpacked":
        path.unlink()
        path = folder / "train-images-idx3-ubyte"
        path.write_bytes(gzip.decompress(content)[:-100])
    elif damage == "not the official file":
        write_idx(path, np.zeros((20, 28, 28), np.uint8))
    elif damage == "an HTML page":
        path.write_bytes(b"<!DOCTYPE html><html>Access denied</html>")
    elif damage == "a folder":
        path.unlink()
        path.mkdir()
    elif damage == "unreadable":
        # chmod 000 does not stop root (as in many containers) from reading: pretend instead.
        read_bytes = Path.read_bytes

        def denied(self):
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", denied)
    return path


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
@pytest.mark.parametrize("damage, why", [
    ("empty", "empty file (0 bytes"),
    ("truncated gzip", "corrupt gzip stream"),
    ("truncated unpacked", "the file is truncated"),
    ("not the official file", "not the official"),
    ("an HTML page", "not an IDX file"),
    ("a folder", "a folder, not a data file"),
    ("unreadable", "cannot be read (permission denied)"),
])
def test_a_bad_data_file_is_named_with_the_reason_and_the_fix_on_one_line(
        monkeypatch, tmp_path, loader, damage, why):
    _, checksums = write_fake_mnist(tmp_path / "data")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    monkeypatch.setattr(mnist, "FASHION_MNIST_CHECKSUMS", checksums)
    path = damage_train_images(tmp_path / "data", damage, monkeypatch)
    for download_allowed in [False, True]:  # downloading does not hide a bad file either
        with pytest.raises(DataFileError) as caught:
            loader(root=tmp_path / "data", download=download_allowed)
        message = one_line(caught.value)
        assert message.startswith(f"{path}: ") and why in message, message
        assert "To fix: " in message
        assert "delete it" in message or "remove or rename it" in message
        assert "root= (--data-dir in the examples)" in message and "NPNET_DATA" in message
        assert caught.value.path == path and isinstance(caught.value, DatasetError)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a POSIX user whom chmod 000 stops (not root)")
def test_a_file_without_read_permission_is_reported(monkeypatch, tmp_path):
    _, checksums = write_fake_mnist(tmp_path / "data")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    path = tmp_path / "data" / "t10k-labels-idx1-ubyte.gz"
    path.chmod(0)
    try:
        with pytest.raises(DataFileError, match="cannot be read .permission denied.") as caught:
            load_mnist(root=tmp_path / "data")
    finally:
        path.chmod(0o644)
    assert one_line(caught.value).startswith(f"{path}: ")


def test_files_in_a_read_only_folder_load(monkeypatch, tmp_path):
    # Nothing is written when all four files are there, not even with download=True.
    arrays, checksums = write_fake_mnist(tmp_path / "data")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    for path in (tmp_path / "data").iterdir():
        path.chmod(0o444)
    (tmp_path / "data").chmod(0o555)
    try:
        assert_loaded(load_mnist(root=tmp_path / "data", download=True), arrays)
    finally:
        (tmp_path / "data").chmod(0o755)


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "a folder"])
def test_a_broken_sample_file_says_so_on_one_line(monkeypatch, tmp_path, damage):
    broken = tmp_path / "mnist_sample.npz"
    if damage == "empty":
        broken.write_bytes(b"")
    elif damage == "truncated":
        broken.write_bytes(mnist.SAMPLE_PATH.read_bytes()[:100_000])
    elif damage == "a folder":
        broken.mkdir()
    monkeypatch.setattr(mnist, "SAMPLE_PATH", broken)
    with pytest.raises(DataFileError) as caught:
        load_mnist_sample()
    message = one_line(caught.value)
    assert message.startswith(f"{broken}: the MNIST sample shipped with npnet is broken: ")
    assert ("it is missing" if damage == "missing" else "it cannot be read") in message
    assert "reinstall npnet" in message


# ----------------------------------------------------------------------------- downloading


def test_download_skips_a_404_mirror_and_verifies(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www / "good")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    root = tmp_path / "downloads"
    data = load_mnist(root=root, mirrors=[base_url + "missing/", base_url + "good/"])
    assert_loaded(data, arrays)
    assert sorted(os.listdir(root)) == sorted(FILE_NAMES)  # and no temporary files
    # A second load finds the files on disk; no server is needed any more.
    assert_loaded(load_mnist(root=root, mirrors=[closed_port_url()]), arrays)


def test_download_goes_to_the_cache_without_root(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "FASHION_MNIST_CHECKSUMS", checksums)
    monkeypatch.setattr(mnist, "FASHION_MNIST_MIRRORS", [base_url])
    assert_loaded(load_fashion_mnist(), arrays)
    cache = tmp_path / "home" / ".cache" / "npnet" / "fashion-mnist"
    assert sorted(os.listdir(cache)) == sorted(FILE_NAMES)


def test_corrupt_download_is_rejected_and_not_kept(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www / "good")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    (www / "bad").mkdir()
    for name in FILE_NAMES:  # one flipped byte in the middle of each file
        content = bytearray((www / "good" / name).read_bytes())
        content[len(content) // 2] ^= 0xFF
        (www / "bad" / name).write_bytes(bytes(content))

    root = tmp_path / "downloads"
    with pytest.raises(DatasetNotFoundError) as caught:
        load_mnist(root=root, mirrors=[base_url + "bad/"])
    message = str(caught.value)
    assert "\n" not in message
    assert f"{base_url}bad/train-images-idx3-ubyte.gz: MD5 of the download is" in message
    assert f"expected {checksums['train-images-idx3-ubyte.gz'].gz_md5}" in message
    assert os.listdir(root) == []  # neither the bad file nor a temporary file is left

    # With a good mirror after the bad one, the good copy is used.
    assert_loaded(load_mnist(root=root, mirrors=[base_url + "bad/", base_url + "good/"]), arrays)


def test_unreachable_mirrors_give_not_found_with_reasons(tmp_path):
    dead_mirror = closed_port_url()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_mnist(root=tmp_path / "downloads", mirrors=[dead_mirror])
    message = str(caught.value)
    assert "\n" not in message
    assert f"{dead_mirror}train-images-idx3-ubyte.gz: connection refused" in message
    assert f"could not download train-images-idx3-ubyte.gz into {tmp_path / 'downloads'}:" \
        in message
    assert os.listdir(tmp_path / "downloads") == []


def test_a_failed_download_keeps_each_mirrors_reason_on_one_line(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    _, checksums = write_fake_mnist(www / "good")
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    (www / "bad").mkdir()
    (www / "bad" / FILE_NAMES[0]).write_bytes(b"not the file")
    dead_mirror = closed_port_url()
    mirrors = [base_url + "missing/", base_url + "bad/", dead_mirror]
    root = tmp_path / "downloads"

    with pytest.raises(DatasetDownloadError) as caught:
        load_mnist(root=root, mirrors=mirrors)
    message = one_line(caught.value)
    reasons = [f"{base_url}missing/{FILE_NAMES[0]}: HTTP 404 ",
               f"{base_url}bad/{FILE_NAMES[0]}: MD5 of the download is {md5_of(b'not the file')}",
               f"{dead_mirror}{FILE_NAMES[0]}: connection refused"]
    for reason in reasons:
        assert reason in message
    assert message.startswith(f"MNIST: could not download {FILE_NAMES[0]} into {root}: ")
    for fix in ["mirrors=[...]", "NPNET_MNIST_MIRRORS", "root=", "load_mnist_sample()"]:
        assert fix in message
    error = caught.value
    assert len(error.failures) == 3 and not error.cannot_write
    assert isinstance(error, DownloadError) and isinstance(error, DatasetNotFoundError)
    assert os.listdir(root) == []  # no .part file left after any of the three failures

    with pytest.raises(DownloadError) as caught:
        download_file(FILE_NAMES[0], mirrors, checksums[FILE_NAMES[0]].gz_md5, root)
    message = one_line(caught.value)
    assert message.startswith(f"could not download {FILE_NAMES[0]}: ")
    assert all(reason in message for reason in reasons)


@pytest.mark.parametrize("server", ["answers nothing", "stalls after the headers"])
def test_a_stalled_mirror_is_given_up_at_the_time_limit(tmp_path, silent_url, stalling_url,
                                                         server):
    url = silent_url if server == "answers nothing" else stalling_url
    root = tmp_path / "downloads"
    start = time.monotonic()
    with pytest.raises(DatasetDownloadError) as caught:
        load_mnist(root=root, mirrors=[url], timeout=1)
    assert time.monotonic() - start < 5
    message = one_line(caught.value)
    assert f"{url}{FILE_NAMES[0]}: timed out: the time limit of 1 s ran out (" in message
    if server == "stalls after the headers":
        assert "(10 of 100,000 bytes received)" in message
    assert "timeout=seconds" in message and "NPNET_DOWNLOAD_TIMEOUT" in message
    assert os.listdir(root) == []


def test_a_mirror_that_stops_sending_is_left_for_the_next(monkeypatch, tmp_path, web_root,
                                                          stalling_url):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    monkeypatch.setattr(download, "STALL_TIMEOUT", 0.3)
    start = time.monotonic()
    assert_loaded(load_mnist(root=tmp_path / "downloads", mirrors=[stalling_url, base_url],
                             timeout=20), arrays)
    assert time.monotonic() - start < 10
    # After the stall, the mirror that worked is asked first for the other three files.
    assert stalling_url.requests == [f"/{FILE_NAMES[0]}"]

    with pytest.raises(DownloadError, match=r"timed out: no data for 0.3 s \(10 of 100,000"):
        download_file(FILE_NAMES[0], [stalling_url], "0" * 32, tmp_path / "other", timeout=20)


def test_mirrors_and_time_limit_from_the_environment(monkeypatch, tmp_path, web_root,
                                                     silent_url):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    monkeypatch.setattr(mnist, "FASHION_MNIST_CHECKSUMS", checksums)

    monkeypatch.setenv("NPNET_MNIST_MIRRORS", silent_url)
    monkeypatch.setenv("NPNET_DOWNLOAD_TIMEOUT", "0.5")
    start = time.monotonic()
    with pytest.raises(DatasetDownloadError, match=f"{silent_url}{FILE_NAMES[0]}: timed out: "
                                                   f"the time limit of 0.5 s ran out"):
        load_mnist(root=tmp_path / "a")
    assert time.monotonic() - start < 5

    # The argument wins over the environment; a string holds several URLs.
    assert_loaded(load_mnist(root=tmp_path / "b", mirrors=f"{closed_port_url()} {base_url}"),
                  arrays)
    monkeypatch.setenv("NPNET_MNIST_MIRRORS", f" {closed_port_url()}, {base_url},")
    monkeypatch.delenv("NPNET_DOWNLOAD_TIMEOUT")
    assert_loaded(load_mnist(root=tmp_path / "c"), arrays)
    monkeypatch.setenv("NPNET_FASHION_MNIST_MIRRORS", base_url)
    assert_loaded(load_fashion_mnist(root=tmp_path / "d"), arrays)


@pytest.mark.parametrize("timeout, variable, message", [
    (0, None, "timeout=0: the download time limit must be a number of seconds above 0"),
    ("soon", None, "timeout='soon': the download time limit must be"),
    (None, "-5", "NPNET_DOWNLOAD_TIMEOUT=-5: the download time limit must be"),
    (None, "nan", "NPNET_DOWNLOAD_TIMEOUT=nan: the download time limit must be"),
])
def test_a_bad_time_limit_is_refused(monkeypatch, tmp_path, timeout, variable, message):
    if variable is not None:
        monkeypatch.setenv("NPNET_DOWNLOAD_TIMEOUT", variable)
    with pytest.raises(DatasetError) as caught:
        load_mnist(root=tmp_path, timeout=timeout)
    assert one_line(caught.value).startswith(message)


class FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()


def test_a_full_disk_stops_the_download_and_says_so(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    _, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    create_part_file = download._create_part_file

    def on_a_full_disk(directory, filename):
        file, name = create_part_file(directory, filename)
        return FullDisk(file), name

    monkeypatch.setattr(download, "_create_part_file", on_a_full_disk)
    root, cache = tmp_path / "downloads", tmp_path / "home" / ".cache" / "npnet" / "mnist"
    with pytest.raises(DatasetDownloadError) as caught:
        load_mnist(root=root, mirrors=[base_url, closed_port_url()])
    message = one_line(caught.value)
    # Both root and, failing that, the cache were tried; the second mirror was not (it would
    # not help), and the reason is the disk, not the mirror.
    for folder in [root, cache]:
        assert f"cannot write to {folder} (No space left on device: free some space" in message
    assert caught.value.cannot_write and "127.0.0.1" not in message
    assert os.listdir(root) == [] and os.listdir(cache) == []


def test_a_read_only_cache_is_reported(monkeypatch, tmp_path):
    def read_only(*args, dir=None, **kwargs):  # what creating a file on a read-only disk does
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(download.tempfile, "mkstemp", read_only)
    cache = tmp_path / "home" / ".cache" / "npnet" / "fashion-mnist"
    with pytest.raises(DatasetDownloadError) as caught:
        load_fashion_mnist()
    message = one_line(caught.value)
    assert message.startswith(f"Fashion-MNIST: could not download {FILE_NAMES[0]}: cannot write "
                              f"to {cache} (Read-only file system)")
    assert "root=" in message and "XDG_CACHE_HOME" in message
    assert caught.value.cannot_write and "127.0.0.1" not in message  # no mirror was contacted


def test_a_read_only_root_downloads_into_the_cache(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    root = tmp_path / "read-only"
    root.mkdir()
    mkstemp = download.tempfile.mkstemp

    def read_only_root(*args, dir=None, **kwargs):
        if Path(dir) == root:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(download.tempfile, "mkstemp", read_only_root)
    assert_loaded(load_mnist(root=root, mirrors=[base_url]), arrays)
    cache = tmp_path / "home" / ".cache" / "npnet" / "mnist"
    assert sorted(os.listdir(cache)) == sorted(FILE_NAMES) and os.listdir(root) == []
    assert_loaded(load_mnist(root=root, mirrors=[closed_port_url()]), arrays)  # found there


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs a POSIX user whom chmod stops (not root)")
def test_a_cache_without_write_permission_is_reported(tmp_path):
    cache = tmp_path / "home" / ".cache"
    cache.mkdir(parents=True)
    cache.chmod(0o555)
    try:
        with pytest.raises(DatasetDownloadError) as caught:
            load_mnist()
    finally:
        cache.chmod(0o755)
    assert f"cannot write to {cache / 'npnet' / 'mnist'} (Permission denied)" \
        in one_line(caught.value)


def test_a_folder_named_like_the_file_is_reported(tmp_path, web_root):
    www, base_url = web_root
    write_fake_mnist(www)
    (tmp_path / FILE_NAMES[0]).mkdir()
    with pytest.raises(DownloadError) as caught:
        download_file(FILE_NAMES[0], [base_url], md5_of((www / FILE_NAMES[0]).read_bytes()),
                      tmp_path)
    assert one_line(caught.value) == (
        f"could not download {FILE_NAMES[0]}: cannot save it: {tmp_path / FILE_NAMES[0]} is a "
        f"folder, not a file; remove or rename that folder")
    assert caught.value.cannot_write and (tmp_path / FILE_NAMES[0]).is_dir()


@pytest.mark.skipif(os.name != "posix", reason="kills a process with SIGKILL")
def test_a_killed_downloads_part_file_is_removed_by_the_next(monkeypatch, tmp_path, web_root,
                                                              silent_url):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    root = tmp_path / "downloads"
    # A child process starts downloading from a server that never answers, and is killed.
    code = ("import sys; from npnet.datasets.download import download_file; "
            "download_file(sys.argv[1], [sys.argv[2]], '0' * 32, sys.argv[3], timeout=60)")
    child = subprocess.Popen([sys.executable, "-c", code, FILE_NAMES[0], silent_url, str(root)],
                             env={**os.environ, "PYTHONPATH": str(REPO)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        give_up = time.monotonic() + 30
        while not (root.is_dir() and part_files(root)) and time.monotonic() < give_up:
            assert child.poll() is None, "the child process ended early"
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    assert len(part_files(root)) == 1  # what a killed download leaves

    assert_loaded(load_mnist(root=root, mirrors=[base_url]), arrays)
    assert sorted(os.listdir(root)) == sorted(FILE_NAMES)


def test_part_files_of_running_downloads_stay(monkeypatch, tmp_path, web_root):
    www, base_url = web_root
    arrays, checksums = write_fake_mnist(www)
    monkeypatch.setattr(mnist, "MNIST_CHECKSUMS", checksums)
    root = tmp_path / "downloads"
    root.mkdir()
    running = f".{FILE_NAMES[0]}.{os.getppid()}-abc123.part"  # our parent process runs
    old = f".{FILE_NAMES[0]}.{os.getppid()}-def456.part"  # unchanged for 2 hours: stale
    old_style = f".{FILE_NAMES[1]}.x1y2z3_a.part"  # an earlier npnet's name, 2 hours old
    unrelated = ".notes.part"
    for name in [running, old, old_style, unrelated]:
        (root / name).write_bytes(b"partial")
    for name in [old, old_style]:
        two_hours_ago = time.time() - 7200
        os.utime(root / name, (two_hours_ago, two_hours_ago))
    assert_loaded(load_mnist(root=root, mirrors=[base_url]), arrays)
    assert sorted(part_files(root)) == sorted([running, unrelated])


@pytest.mark.skipif(not HAVE_REAL_MNIST, reason="real MNIST files not in ../shared/data/mnist")
def test_download_real_mnist_with_the_official_checksums(tmp_path, web_root):
    www, base_url = web_root
    (www / "mnist").symlink_to(REAL_MNIST_DIR, target_is_directory=True)
    root = tmp_path / "downloads"
    data = load_mnist(root=root, mirrors=[base_url + "missing/", base_url + "mnist/"], raw=True)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(data.y_test)[:3], [980, 1135, 1032])
    for name, checksums in mnist.MNIST_CHECKSUMS.items():
        assert md5_of((root / name).read_bytes()) == checksums.gz_md5
    assert sorted(os.listdir(root)) == sorted(FILE_NAMES)


@pytest.mark.skipif(not HAVE_DEBIAN_FASHION, reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist_package_loads(monkeypatch):
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIRS", [str(DEBIAN_FASHION_DIR)])
    x_train, y_train, x_test, y_test = load_fashion_mnist(download=False)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)


# ----------------------------------------------------------------------------- the shipped sample


def test_sample_shapes_types_and_balance():
    x_train, y_train, x_test, y_test = load_mnist_sample()
    assert x_train.shape == (5000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [500] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [100] * 10)

    raw = load_mnist_sample(raw=True)
    assert raw.x_train.dtype == np.uint8
    np.testing.assert_array_equal(np.round(x_train * 255).astype(np.uint8), raw.x_train)


def test_sample_records_where_it_came_from():
    with np.load(mnist.SAMPLE_PATH) as sample:
        train_indices, test_indices = sample["train_indices"], sample["test_indices"]
    for indices, size in [(train_indices, 60000), (test_indices, 10000)]:
        assert np.all(np.diff(indices) > 0)  # sorted, no repeats
        assert 0 <= indices[0] and indices[-1] < size
    assert (mnist.SAMPLE_PATH.with_suffix(".json")).is_file()


@pytest.mark.skipif(not HAVE_REAL_MNIST, reason="real MNIST files not in ../shared/data/mnist")
def test_sample_is_the_official_images_at_its_indices():
    official = load_mnist(root=REAL_MNIST_DIR, download=False, raw=True)
    sample = load_mnist_sample(raw=True)
    with np.load(mnist.SAMPLE_PATH) as stored:
        train_indices, test_indices = stored["train_indices"], stored["test_indices"]
    np.testing.assert_array_equal(sample.x_train, official.x_train[train_indices])
    np.testing.assert_array_equal(sample.y_train, official.y_train[train_indices])
    np.testing.assert_array_equal(sample.x_test, official.x_test[test_indices])
    np.testing.assert_array_equal(sample.y_test, official.y_test[test_indices])


def test_class_names():
    assert MNIST_CLASSES == tuple("0123456789")
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "t-shirt" and FASHION_MNIST_CLASSES[9] == "ankle boot"


# ----------------------------------------------------------------------------- DataLoader


def test_loader_visits_every_sample_once_per_epoch():
    x = np.arange(10)
    loader = DataLoader(x, 2 * x, batch_size=3, shuffle=True, seed=0)
    assert len(loader) == 4
    for _ in range(2):
        batches = list(loader)
        assert [len(x_batch) for x_batch, _ in batches] == [3, 3, 3, 1]
        for x_batch, y_batch in batches:
            np.testing.assert_array_equal(y_batch, 2 * x_batch)  # pairs stay together
        np.testing.assert_array_equal(np.sort(np.concatenate([b for b, _ in batches])), x)


def test_loader_drop_last():
    loader = DataLoader(np.arange(10), np.arange(10), batch_size=3, shuffle=True, drop_last=True)
    assert len(loader) == 3
    seen = np.concatenate([x_batch for x_batch, _ in loader])
    assert len(seen) == 9 and len(np.unique(seen)) == 9
    assert len(DataLoader(np.arange(2), np.arange(2), batch_size=3, drop_last=True)) == 0


def test_loader_order_is_new_each_epoch_and_repeatable_with_a_seed():
    def epochs(seed):
        loader = DataLoader(np.arange(100), np.arange(100), batch_size=100, shuffle=True,
                            seed=seed)
        return [next(iter(loader))[0] for _ in range(2)]

    first, second = epochs(seed=7)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(epochs(seed=7)[0], first)
    np.testing.assert_array_equal(epochs(seed=7)[1], second)
    assert not np.array_equal(epochs(seed=8)[0], first)


def test_loader_without_shuffle_gives_slices_in_order():
    x = np.zeros((5, 1, 28, 28), dtype=np.float32)
    y = np.arange(5)
    batches = list(DataLoader(x, y, batch_size=2))
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), y)
    assert batches[0][0].shape == (2, 1, 28, 28)
    assert np.shares_memory(batches[0][0], x)  # a view, not a copy


def test_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"x of shape \(10, 2\) and y of shape \(9,\)"):
        DataLoader(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros(10), np.zeros(10), batch_size=0)
