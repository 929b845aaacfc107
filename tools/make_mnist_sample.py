"""Make npnet/data/mnist_sample.npz: a small, class-balanced sample of the real MNIST.

    python tools/make_mnist_sample.py /path/to/folder/with/the/four/mnist/files

From the official training set it draws 500 images of each digit (5,000 in all), and from the
official test set 100 of each (1,000), with a fixed seed. The .npz holds

    x_train (5000, 28, 28) uint8     y_train (5000,) uint8     train_indices (5000,) int32
    x_test  (1000, 28, 28) uint8     y_test  (1000,) uint8     test_indices  (1000,) int32

where train_indices / test_indices are the positions of the chosen images in the official
files (in increasing order), so the sample can be checked against, or rebuilt from, the
originals. A small JSON file beside it says where the data came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # so that this script uses the npnet next to it

from npnet.datasets.idx import read_idx  # noqa: E402
from npnet.datasets.mnist import MNIST_CHECKSUMS  # noqa: E402


def read_official(folder: Path, name: str) -> np.ndarray:
    """Read one of the four MNIST files, refusing anything but the official file."""
    path = folder / name
    md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    if md5 != MNIST_CHECKSUMS[name].gz_md5:
        sys.exit(f"{path}: MD5 {md5} is not the official {MNIST_CHECKSUMS[name].gz_md5}")
    return read_idx(path)


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` positions of each class 0-9 in ``labels``, drawn without replacement."""
    chosen = [rng.choice(np.flatnonzero(labels == digit), size=per_class, replace=False)
              for digit in range(10)]
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist_dir", type=Path, help="folder with the four official .gz files")
    parser.add_argument("--out", type=Path, default=REPO / "npnet" / "data" / "mnist_sample.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()

    x_train = read_official(args.mnist_dir, "train-images-idx3-ubyte.gz")
    y_train = read_official(args.mnist_dir, "train-labels-idx1-ubyte.gz")
    x_test = read_official(args.mnist_dir, "t10k-images-idx3-ubyte.gz")
    y_test = read_official(args.mnist_dir, "t10k-labels-idx1-ubyte.gz")

    rng = np.random.default_rng(args.seed)
    train_indices = balanced_indices(y_train, args.train_per_class, rng)
    test_indices = balanced_indices(y_test, args.test_per_class, rng)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out,
                        x_train=x_train[train_indices], y_train=y_train[train_indices],
                        x_test=x_test[test_indices], y_test=y_test[test_indices],
                        train_indices=train_indices, test_indices=test_indices)

    info = {
        "description": "Class-balanced sample of MNIST: train_indices are positions in the "
                       "official training files, test_indices in the official test files.",
        "source": "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges; "
                  "licensed CC BY-SA 3.0",
        "source_files_md5": {name: sums.gz_md5 for name, sums in MNIST_CHECKSUMS.items()},
        "made_by": "tools/make_mnist_sample.py",
        "seed": args.seed,
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "numpy_version": np.__version__,
    }
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
          f"{len(train_indices)} training and {len(test_indices)} test images")


if __name__ == "__main__":
    main()
