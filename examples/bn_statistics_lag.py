"""Why LeNet-BN's test accuracy jumps at lr 1.0: BatchNorm's moving averages lag behind.

Trains the example's run (``python examples/train_lenet.py``: LeNet-BN on MNIST, lr 1.0, batch
256, Xavier init, seed 0, 10 epochs) and after every epoch evaluates the test set twice:

- as the run does, with the moving averages as training left them
  (moving = 0.9 * moving + 0.1 * batch statistic, after every step);
- with the statistics re-estimated at the epoch's final weights (``npnet.update_bn``: one
  forward pass over the training images, the moving averages made the average of the batch
  statistics), on a copy of the network, so the training run itself is not changed.

The weights are the same in both evaluations; only the statistics that normalize in evaluation
mode differ. It prints a table per epoch (and the seconds of each re-estimation pass), and
draws the two test-accuracy curves side by side with the test losses into
``--out``/bn_update_stats.png (default docs/figures/).

    python examples/bn_statistics_lag.py                          # full MNIST: a few minutes
    python examples/bn_statistics_lag.py --data-dir ~/data/mnist
    python examples/bn_statistics_lag.py --dataset sample --epochs 3 --out runs/lag

``--subset-batches K`` (default 10) also re-estimates from the first K batches only (K * 256
images), to show what a cheaper pass costs in accuracy. ``python examples/train_lenet.py
--update-bn`` trains with the re-estimation after every epoch.

Without data options, MNIST is found on disk (--data-dir, $NPNET_DATA, ~/.cache/npnet) or
downloaded; if neither works, the MNIST sample shipped with npnet is used (one line says why).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

try:
    import npnet
except ImportError:  # a source checkout without `pip install -e .`: use the repository's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import npnet

import numpy as np

from npnet.datasets import DatasetError, load_mnist, load_mnist_sample
from npnet.models import lenet
from npnet.plots import new_figure, save_figure_atomically
from npnet.train import evaluate, fit
from npnet.update_bn import update_bn

COLORS = {"moving": "tab:orange", "re-estimated": "tab:blue", "subset": "tab:green"}


def run(data, epochs: int = 10, lr: float = 1.0, batch_size: int = 256, seed: int = 0,
        subset_batches: int | None = 10, fast: bool | None = None,
        progress: bool = True) -> dict:
    """Train LeNet-BN as examples/train_lenet.py does and evaluate it after every epoch with
    its moving averages and with re-estimated statistics. Returns the History and, per epoch,
    the re-estimated accuracy and loss, the subset's accuracy and the pass's seconds."""
    x_train, y_train, x_test, y_test = data
    npnet.manual_seed(seed)
    model = lenet()
    npnet.init_xavier(model)
    measured = {"re_acc": [], "re_loss": [], "subset_acc": [], "seconds": []}

    def after_epoch(epoch: int, history) -> None:
        probe = copy.deepcopy(model)  # the run goes on with its own moving averages
        start = time.perf_counter()
        update_bn(probe, (x_train, y_train), batch_size=batch_size, fast=fast)
        measured["seconds"].append(time.perf_counter() - start)
        accuracy, loss = evaluate(probe, x_test, y_test, return_loss=True, fast=fast)
        measured["re_acc"].append(accuracy)
        measured["re_loss"].append(loss)
        if subset_batches:
            update_bn(probe, (x_train, y_train), batch_size=batch_size,
                      num_batches=subset_batches, fast=fast)
            measured["subset_acc"].append(evaluate(probe, x_test, y_test, fast=fast))
        print(f"  re-estimated: test acc {accuracy:.3f}, loss {loss:.3f} "
              f"({measured['seconds'][-1]:.1f} s for {len(x_train)} images)", flush=True)

    # as the example: drop a last batch of one image, which BatchNorm cannot train on
    drop_last = len(x_train) > 1 and len(x_train) % batch_size == 1
    history = fit(model, (x_train, y_train), (x_test, y_test), epochs=epochs, lr=lr,
                  batch_size=batch_size, seed=seed, on_epoch_end=after_epoch,
                  progress=progress, fast=fast, drop_last=drop_last)
    return {"history": history, **measured}


def plot(result: dict, path: str, title: str, subset_batches: int | None) -> None:
    """Left: test accuracy per epoch with the moving averages and re-estimated (and the train
    accuracy, measured on the fly in training mode). Right: the two test losses."""
    history = result["history"]
    epochs = np.arange(1, len(history) + 1)
    fig = new_figure(figsize=(10, 3.8))  # with the Agg canvas
    acc_ax, loss_ax = fig.subplots(1, 2)
    acc_ax.plot(epochs, history.test_acc, "-", marker="o", color=COLORS["moving"],
                label="test acc, moving averages (as trained)")
    acc_ax.plot(epochs, result["re_acc"], "-", marker="o", color=COLORS["re-estimated"],
                label="test acc, statistics re-estimated")
    if result["subset_acc"]:
        acc_ax.plot(epochs, result["subset_acc"], ":", marker=".", color=COLORS["subset"],
                    label=f"re-estimated from {subset_batches} batches")
    acc_ax.plot(epochs, history.train_acc, "--", color="gray", alpha=0.7,
                label="train acc (training mode)")
    loss_ax.plot(epochs, history.test_loss, "-", marker="o", color=COLORS["moving"],
                 label="test loss, moving averages")
    loss_ax.plot(epochs, result["re_loss"], "-", marker="o", color=COLORS["re-estimated"],
                 label="test loss, re-estimated")
    loss_ax.plot(epochs, history.train_loss, "--", color="gray", alpha=0.7, label="train loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="test accuracy after each epoch")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log",
                title="test loss after each epoch")
    for ax in (acc_ax, loss_ax):
        ax.set_xlim(0.8, len(history) + 0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_figure_atomically(fig, path, dpi=110)


def load_data(args):
    """(name, (x_train, y_train, x_test, y_test)); MNIST falls back to the sample only when no
    data option was given."""
    if args.dataset == "sample":
        loaded = load_mnist_sample()
        name = "the MNIST sample"
    else:
        try:
            loaded = load_mnist(root=args.data_dir, download=not args.no_download)
            name = "MNIST"
        except (DatasetError, OSError) as error:
            if args.dataset or args.data_dir or args.no_download:
                sys.exit(f"error: {' '.join(str(error).split())}")
            print(f"MNIST could not be loaded; using the MNIST sample shipped with npnet "
                  f"instead (see --data-dir). Reason: {' '.join(str(error).split())}")
            loaded, name = load_mnist_sample(), "the MNIST sample"
    x_train, y_train = loaded.x_train[:args.limit], loaded.y_train[:args.limit]
    return name, (x_train, y_train, loaded.x_test, loaded.y_test)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "sample"],
                        help="full MNIST (found or downloaded) or the sample shipped with "
                             "npnet (default: MNIST, else the sample)")
    parser.add_argument("--data-dir", metavar="DIR", help="folder holding the MNIST files")
    parser.add_argument("--no-download", action="store_true", help="never download")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="of training and of the re-estimation (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, metavar="N",
                        help="train on the first N training images only")
    parser.add_argument("--subset-batches", type=int, default=10, metavar="K",
                        help="also re-estimate from the first K batches only; 0: do not "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=os.path.join("docs", "figures"),
                        help="folder of bn_update_stats.png (default: %(default)s)")
    parser.add_argument("--no-fast", action="store_true",
                        help="run every layer as written, not on the fast backend")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 2 or args.subset_batches < 0 \
            or (args.limit is not None and args.limit < 2):
        parser.error("--epochs must be >= 1, --batch-size and --limit >= 2, "
                     "--subset-batches >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    name, data = load_data(args)
    print(f"LeNet-BN on {name}: {len(data[0])} training and {len(data[2])} test images; SGD, "
          f"lr {args.lr}, batch size {args.batch_size}, {args.epochs} epochs, Xavier init, "
          f"seed {args.seed}")
    result = run(data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                 seed=args.seed, subset_batches=args.subset_batches,
                 fast=False if args.no_fast else None, progress=not args.no_progress)
    path = os.path.join(args.out, "bn_update_stats.png")
    plot(result, path, f"LeNet-BN on {name}, lr {args.lr}, batch {args.batch_size}, "
                       f"seed {args.seed}: the same weights, two sets of statistics",
         args.subset_batches)

    history = result["history"]
    subset = f" | re-estimated, {args.subset_batches} batches" if args.subset_batches else ""
    print(f"\n| epoch | train acc | test acc, moving averages | test acc, re-estimated"
          f"{subset} | test loss, moving / re-estimated |")
    print("|---|---|---|---" + ("|---" if args.subset_batches else "") + "|---|")
    for epoch in range(len(history)):
        cells = [f"{epoch + 1}", f"{history.train_acc[epoch]:.3f}",
                 f"{history.test_acc[epoch]:.3f}", f"{result['re_acc'][epoch]:.3f}"]
        if args.subset_batches:
            cells.append(f"{result['subset_acc'][epoch]:.3f}")
        cells.append(f"{history.test_loss[epoch]:.3f} / {result['re_loss'][epoch]:.3f}")
        print("| " + " | ".join(cells) + " |")
    seconds = sorted(result["seconds"])
    print(f"\none re-estimation pass over {len(data[0])} images: median "
          f"{seconds[len(seconds) // 2]:.2f} s (min {seconds[0]:.2f}, max {seconds[-1]:.2f}); "
          f"a training epoch: median {sorted(history.epoch_time)[len(seconds) // 2]:.1f} s")
    print(f"figure: {path}")
    return {**result, "figure": path}


if __name__ == "__main__":
    main()
