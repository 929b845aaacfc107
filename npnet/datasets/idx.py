"""IDX files: the format MNIST and Fashion-MNIST are distributed in.

An IDX file holds one n-dimensional array: a small header, then the numbers themselves.

    bytes 0-1      00 00           always zero
    byte  2        type code       08 uint8, 09 int8, 0B int16, 0C int32, 0D float32, 0E float64
    byte  3        ndim            the number of dimensions
    next 4*ndim    the shape       one unsigned 32-bit big-endian integer per dimension
    the rest       the data        prod(shape) numbers, big-endian, in C (row-major) order

For example, MNIST's training images start with 00 00 08 03 (uint8, three dimensions), then
60000, 28, 28, then 60000 * 28 * 28 = 47,040,000 pixel bytes. The labels file starts with
00 00 08 01, then 60000, then 60,000 label bytes.

The files are usually gzip-compressed (``.gz``). ``read_idx`` recognises gzip by the first two
bytes of the file (1f 8b), not by its name, so a file that was unpacked but kept its ``.gz``
name still reads.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> numpy dtype of the numbers as stored in the file (big-endian, ">").
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The reverse lookup for write_idx, keyed by (kind, bytes per number) so that it does not
# matter whether an array is stored little- or big-endian in memory.
IDX_TYPE_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()}


class DatasetError(ValueError):
    """Something is wrong with a data set: the base class of every error that loading one raises.

    Its message is one line that names the file or folder, says what is wrong and what to do.
    Here, in ``read_idx``, it means the file is there but its contents are not an IDX array.
    """


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, into a numpy array.

    Inputs:
    - path: the file, e.g. ``"data/mnist/train-images-idx3-ubyte.gz"``

    Returns:
    - array: the shape stored in the file, e.g. (60000, 28, 28) for MNIST's training images,
      with the file's number type in this machine's byte order (uint8 for MNIST).

    Raises ``DatasetError`` naming the file when it is not a valid IDX file: a corrupt or
    truncated gzip stream, a wrong magic number, or a data size that does not match the shape.
    """
    with open(path, "rb") as file:
        content = file.read()
    data = decompress_if_gzip(content, name=os.fspath(path))
    return parse_idx(data, name=os.fspath(path))


def decompress_if_gzip(content: bytes, name: str = "<bytes>") -> bytes:
    """Return ``content`` decompressed if it starts with the gzip magic bytes, else unchanged.

    ``name`` is only used in error messages.
    """
    if content[:2] != GZIP_MAGIC:
        return content
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        # EOFError: the stream stops early (an interrupted download); OSError (BadGzipFile):
        # the checksum at the end does not match; zlib.error: the compressed bytes are damaged.
        details = " ".join(str(error).split()) or type(error).__name__
        raise DatasetError(
            f"{name}: corrupt gzip stream ({details}); the file is truncated or damaged"
        ) from error


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Turn the bytes of an (uncompressed) IDX file into an array; see ``read_idx``.

    ``name`` is only used in error messages.
    """
    if not data:
        raise DatasetError(f"{name}: empty file (0 bytes; an interrupted download or copy?)")
    if len(data) < 4:
        raise DatasetError(
            f"{name}: too short to be an IDX file: expected at least the 4 magic bytes, "
            f"found {len(data)} bytes"
        )
    zero_0, zero_1, type_code, ndim = data[:4]
    if zero_0 != 0 or zero_1 != 0 or type_code not in IDX_DTYPES:
        known = " ".join(f"{code:02x}" for code in IDX_DTYPES)
        raise DatasetError(
            f"{name}: not an IDX file: expected the magic bytes 00 00 <type> <ndim> with "
            f"type one of {known}, found {data[:4].hex(' ')}"
        )

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(
            f"{name}: the header declares {ndim} dimensions, which needs {header_size} "
            f"header bytes, but the file has only {len(data)} bytes (the file is truncated)"
        )
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))

    dtype = IDX_DTYPES[type_code]
    expected_bytes = math.prod(shape) * dtype.itemsize
    found_bytes = len(data) - header_size
    if found_bytes != expected_bytes:
        why = "the file is truncated" if found_bytes < expected_bytes else "extra bytes at the end"
        raise DatasetError(
            f"{name}: expected {expected_bytes} bytes of {dtype.name} data for shape "
            f"{shape}, found {found_bytes} ({why})"
        )

    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    # Convert from the file's big-endian order to this machine's order ("="). astype copies,
    # so the result is an ordinary writable array rather than a read-only view of `data`.
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends with ``.gz``.

    Inputs:
    - path: where to write, e.g. ``"tiny-images-idx3-ubyte.gz"``
    - array: any shape, with dtype uint8, int8, int16, int32, float32 or float64

    ``read_idx(path)`` gives back an equal array with the same shape and dtype.
    """
    array = np.asarray(array)
    type_code = IDX_TYPE_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if type_code is None:
        supported = ", ".join(dtype.name for dtype in IDX_DTYPES.values())
        raise TypeError(f"write_idx: IDX has no type for dtype {array.dtype}; expected one of "
                        f"{supported}")
    if array.ndim > 255 or any(size >= 2**32 for size in array.shape):
        raise ValueError(f"write_idx: IDX stores at most 255 dimensions of size < 2**32; "
                         f"got shape {array.shape}")

    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(IDX_DTYPES[type_code]).tobytes(order="C")
    if os.fspath(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: the same array always gives the same file
    with open(path, "wb") as file:
        file.write(data)
