"""Train LeNet, with or without batch normalization, on MNIST or Fashion-MNIST (d2l 7.5, 6.6).

    python examples/train_lenet.py                           # LeNet-BN on MNIST, 10 epochs
    python examples/train_lenet.py --dataset fashion-mnist   # the book's run in section 7.5
    python examples/train_lenet.py --dataset fashion-mnist --no-batchnorm   # section 6.6
    python examples/train_lenet.py --dataset sample --epochs 2   # offline, about a minute
    python examples/train_lenet.py --resume --epochs 15      # 5 more epochs of a 10-epoch run
    python examples/train_lenet.py --dataset sample --no-fast   # every layer as written

Training and evaluation run on npnet's fast backend (npnet/fast), which uses a kernel in place
of a layer's own forward and backward only where it has first shown, on a tiny batch, that the
kernel gives what the layer as written gives (a layer that disagrees, e.g. one you edited, runs
as written, with a one-line FastPathWarning). --no-fast runs every layer's own forward and
backward, as written: slower, the same numbers.

Everything goes into one folder (--out, default runs/<dataset>-<bn|plain>):
checkpoint.npz and history.json after every epoch, so an interrupted run can be continued
with --resume; learning_curves.png (updated every epoch) and predictions.png at the end.

Runs from a source checkout without installing npnet: if ``import npnet`` fails, the folder
above examples/ is put on the import path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import npnet
except ImportError:  # a source checkout without `pip install -e .`: use the repository's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import npnet

from npnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from npnet.datasets import (FASHION_MNIST_CLASSES, MNIST_CLASSES, DatasetNotFoundError,
                            load_fashion_mnist, load_mnist, load_mnist_sample)
from npnet.models import lenet
from npnet.plots import plot_history, plot_predictions
from npnet.train import DivergenceError, History, fit, runner_for

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "sample": "the MNIST sample"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train LeNet with batch normalization (d2l 7.5), or the plain sigmoid "
                    "LeNet (d2l 6.6), on MNIST or Fashion-MNIST with npnet.")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist", "sample"],
                        default="mnist",
                        help="the data: full MNIST or Fashion-MNIST (found on disk or "
                             "downloaded), or the 5,000-digit MNIST sample shipped with npnet "
                             "(offline). If MNIST can be neither found nor downloaded, the "
                             "sample is used instead (default: %(default)s)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding the four IDX files (also searched: $NPNET_DATA, "
                             "~/.cache/npnet, and for Fashion-MNIST /usr/share/datasets); "
                             "downloads go here")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; use only data already on this machine")
    parser.add_argument("--epochs", type=int, default=10,
                        help="train until this many epochs are done (with --resume, the "
                             "epochs already in the checkpoint count; default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate of SGD (default: 1.0 with batch normalization, "
                             "0.9 with --no-batchnorm, the book's values; with --resume, the "
                             "checkpoint's)")
    parser.add_argument("--no-batchnorm", action="store_true",
                        help="train the plain sigmoid LeNet of d2l 6.6 instead of LeNet-BN")
    parser.add_argument("--init", choices=["xavier", "default"], default="xavier",
                        help="initial weights: Xavier-uniform as in the book's train_ch6, or "
                             "the layers' own (PyTorch's) default (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights and of the shuffling "
                             "(default: %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="train on the first N training images only (for quick tries)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="folder for checkpoint.npz, history.json and the PNGs "
                             "(default: runs/<dataset>-<bn|plain>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out: load its checkpoint, keep its "
                             "history and epoch count")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar, only one line per epoch (for log files)")
    parser.add_argument("--no-fast", action="store_true",
                        help="run every layer's own forward and backward, as written: slower; "
                             "the same numbers. By default training, evaluation and the "
                             "predictions run on npnet's fast backend (npnet/fast), whose "
                             "kernels are each checked against the layers as written first "
                             "(setting the environment variable NPNET_FAST=0 is the same as "
                             "--no-fast)")
    args = parser.parse_args(argv)
    if args.epochs < 0 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--epochs must be >= 0, --batch-size and --limit >= 1")
    return args


def load_data(args):
    """The data set asked for, as (dataset name actually used, TrainTestData, class names)."""
    if args.dataset == "sample":
        return "sample", load_mnist_sample(), MNIST_CLASSES
    if args.dataset == "fashion-mnist":
        try:
            data = load_fashion_mnist(root=args.data_dir, download=not args.no_download)
        except DatasetNotFoundError as error:
            sys.exit(f"error: {error}")  # its message says where we looked and what to do
        return "fashion-mnist", data, FASHION_MNIST_CLASSES
    try:
        return "mnist", load_mnist(root=args.data_dir, download=not args.no_download), \
            MNIST_CLASSES
    except DatasetNotFoundError:
        how = "downloading is off" if args.no_download else "could not be downloaded"
        print(f"MNIST is not on this machine and {how}; training on the 5,000-digit MNIST "
              f"sample shipped with npnet instead (see --data-dir).")
        return "sample", load_mnist_sample(), MNIST_CLASSES


def main(argv=None) -> None:
    args = parse_args(argv)
    batch_norm = not args.no_batchnorm
    dataset, data, class_names = load_data(args)
    x_train, y_train = data.x_train[:args.limit], data.y_train[:args.limit]
    out = args.out or Path("runs") / f"{dataset}-{'bn' if batch_norm else 'plain'}"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.npz"

    # The network, its initial weights and the optimizer, all from one seed.
    npnet.manual_seed(args.seed)
    model = lenet(batch_norm=batch_norm)
    if args.init == "xavier":
        npnet.init_xavier(model)
    lr = args.lr if args.lr is not None else (1.0 if batch_norm else 0.9)
    optimizer = npnet.SGD(model.parameters(), lr=lr)
    history = History()

    if args.resume:
        if not checkpoint_path.is_file():
            sys.exit(f"error: --resume: there is no {checkpoint_path} to continue; run without "
                     f"--resume first (or pass the run's folder with --out)")
        try:
            saved = load_checkpoint(checkpoint_path, model, optimizer)
        except CheckpointError as error:
            sys.exit(f"error: {error}\n(was the run in {out} trained "
                     f"{'without' if batch_norm else 'with'} --no-batchnorm?)")
        history = saved["history"] or History()
        if args.lr is not None:  # an explicit --lr wins over the checkpoint's
            optimizer.lr = args.lr
        print(f"resuming {checkpoint_path} after epoch {len(history)}")
        if len(history) >= args.epochs:
            print(f"it has already trained {len(history)} epochs; raise --epochs to train more")
    elif checkpoint_path.exists():
        print(f"note: starting a new run in {out}, replacing its files (--resume continues "
              f"the saved run instead)")

    # fit's fast=None: the fast backend (unless NPNET_FAST=0); False: the layers as written
    fast = False if args.no_fast else None
    name = "LeNet-BN" if batch_norm else "LeNet"
    print(f"{name} on {TITLES[dataset]}: {len(x_train)} training and {len(data.x_test)} test "
          f"images; lr {optimizer.lr}, batch size {args.batch_size}, {args.epochs} epochs, "
          f"{args.init} init, seed {args.seed}"
          + ("; every layer as written (--no-fast)" if args.no_fast else ""))
    config = {"dataset": dataset, "batch_norm": batch_norm, "batch_size": args.batch_size,
              "init": args.init, "seed": args.seed, "limit": args.limit}
    title = f"{name} on {TITLES[dataset]}"

    def save_run(epoch: int, history: History) -> None:
        """After every epoch: everything needed to resume, and the curves so far."""
        save_checkpoint(checkpoint_path, model, optimizer, epoch=epoch, history=history,
                        extra=config)
        history.save(out / "history.json")
        plot_history(history, out / "learning_curves.png", title=title)

    try:
        fit(model, (x_train, y_train), (data.x_test, data.y_test),
            epochs=max(args.epochs - len(history), 0), batch_size=args.batch_size,
            optimizer=optimizer, seed=args.seed, history=history, on_epoch_end=save_run,
            progress=not args.no_progress, fast=fast)
    except DivergenceError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit(f"\ninterrupted; {checkpoint_path} holds epoch {len(history)}: continue with "
                 f"--resume{'' if args.out is None else f' --out {out}'}")

    if len(history) == 0:
        print("no epochs trained (--epochs 0)")
        return
    plot_history(history, out / "learning_curves.png", title=title)
    # what runs the model for the predictions: a FastNet over it, or (--no-fast) the model
    plot_predictions(runner_for(model, fast), data.x_test, data.y_test, class_names,
                     out / "predictions.png")
    best = history.best_epoch()
    print(f"final test acc {history.test_acc[-1]:.3f} (epoch {len(history)}), best "
          f"{history.test_acc[best - 1]:.3f} (epoch {best})")
    print(f"files in {out}/: checkpoint.npz, history.json, learning_curves.png, "
          f"predictions.png")


if __name__ == "__main__":
    main()
