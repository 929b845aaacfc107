"""Downloading a data file safely: try mirrors in order, check the MD5, never keep a bad file.

Three rules keep a cache trustworthy:

1. Download into a temporary file in the destination folder, never into the final name.
2. Compare the MD5 checksum of what arrived with the published one.
3. Only then rename the temporary file to its final name with ``os.replace``, which is atomic
   on one file system: the final name either does not exist or holds the complete, verified
   file. An interrupted (Ctrl-C), truncated or corrupted download is deleted instead.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path

from .idx import DatasetError

DOWNLOAD_TIMEOUT = 30.0  # seconds to wait for a server to answer before trying the next one
CHUNK_SIZE = 1 << 16  # read 64 KiB at a time, updating the checksum and the progress bar


class DownloadError(DatasetError):
    """No mirror delivered the file with the expected checksum.

    ``failures`` lists one line per mirror: its URL and what went wrong there.
    """

    def __init__(self, filename: str, failures: list[str]):
        self.failures = failures
        super().__init__(f"could not download {filename}:\n  " + "\n  ".join(failures))


def download_file(filename: str, mirrors: list[str], md5: str, directory: str | os.PathLike,
                  timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download ``filename`` from the first mirror that serves it with the expected MD5.

    Inputs:
    - filename: e.g. ``"train-images-idx3-ubyte.gz"``; the URL is mirror + filename
    - mirrors: base URLs tried in order, e.g. ``["https://example.org/mnist/"]``
    - md5: the expected MD5 of the file, as 32 hex digits
    - directory: where to save it (created if needed)

    Returns the path of the verified file, ``directory / filename``. Raises ``DownloadError``
    listing what went wrong at each mirror if none of them worked.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    failures = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        # The temporary file sits in the same folder as the target so os.replace is a rename
        # on one file system; the leading dot hides it, ".part" says what it is.
        handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as temp_file:
                received_md5 = _copy_url_to_file(url, temp_file, timeout, filename)
            if received_md5 != md5:
                failures.append(f"{url}: MD5 of the download is {received_md5}, expected {md5} "
                                f"(corrupt or a different file; deleted)")
                continue
            os.replace(temp_name, target)
            return target
        except (OSError, http.client.HTTPException, ValueError) as error:
            # OSError covers urllib's URLError and HTTPError (e.g. 404), refused connections
            # and timeouts; HTTPException a connection dropped mid-transfer; ValueError a
            # malformed URL.
            failures.append(f"{url}: {error}")
        finally:
            # Reached on success (the temporary file was renamed and is gone), on failure, and
            # on KeyboardInterrupt: a partial download is never left behind.
            if os.path.exists(temp_name):
                os.remove(temp_name)
    raise DownloadError(filename, failures or ["no mirrors given"])


def _copy_url_to_file(url: str, file, timeout: float, label: str) -> str:
    """Stream ``url`` into the open binary ``file`` with a progress bar; return the MD5."""
    from tqdm import tqdm  # imported here: only downloading needs it

    md5 = hashlib.md5(usedforsecurity=False)  # MD5 as a checksum, not for security
    with urllib.request.urlopen(url, timeout=timeout) as response:
        expected_size = response.length  # from the Content-Length header; None if not sent
        received = 0
        with tqdm(total=expected_size, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=label) as progress:
            while chunk := response.read(CHUNK_SIZE):
                file.write(chunk)
                md5.update(chunk)
                received += len(chunk)
                progress.update(len(chunk))
    if expected_size is not None and received < expected_size:
        raise OSError(f"the connection closed after {received} of {expected_size} bytes")
    return md5.hexdigest()
