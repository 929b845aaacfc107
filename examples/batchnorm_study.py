"""What batch normalization changes: LeNet with and without it, same data, same budget.

Trains the book's two LeNets (``npnet.models.lenet(batch_norm=False)`` and ``=True``) with
the same data, learning rate, batch size, number of epochs, initialization (the book's Xavier)
and shuffling seed, while an ``npnet.instruments.Recorder`` watches every layer. Writes four
figures to ``--out`` (default runs/batchnorm_study/):

- learning_curves.png        training loss by step, test accuracy by epoch, both networks
- activation_histograms.png  the outputs of each Sigmoid layer at the first and the last step
- activation_stats.png       mean, std and saturated fraction of each Sigmoid's output, by step
- gradient_norms.png         ||dL/dW|| of every Conv2d and Linear layer, by step

and results.json with the numbers printed at the end.

Run (the book's settings: lr 1.0, batch size 256, 10 epochs):

    python examples/batchnorm_study.py                              # the shipped MNIST sample
    python examples/batchnorm_study.py --dataset fashion-mnist      # the book's data set
    python examples/batchnorm_study.py --dataset mnist --epochs 5

``--dataset mnist`` and ``fashion-mnist`` find the files as ``npnet.datasets`` does (the
``NPNET_DATA`` folders, the cache, Debian's /usr/share/datasets/fashion-mnist) and download
them if missing.

The two networks differ in more than the BatchNorm layers, as in the book: the one without
pads its first convolution (16*5*5 features reach the first Linear, 16*4*4 in the other).
What the recorder costs (LeNet-BN, batch 256, a busy 2-core machine, measured with
``npnet.instruments.measure_overhead``): about 12 ms per recorded step, against 110 ms for
the training step itself, so +11% when recording every step, +1.1% every 10 steps (+2% with
2,000 sampled values per layer). In the 10-epoch Fashion-MNIST run (every 23 steps) the
hooks took 4.1 s of 705 s and 3.4 s of 550 s: 0.6%.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import npnet
from npnet.datasets import load_fashion_mnist, load_mnist, load_mnist_sample
from npnet.instruments import Recorder
from npnet.models import lenet
from npnet.plots_inside import (plot_activation_histograms, plot_activation_stats,
                                plot_gradient_norms)
from npnet.train import fit

LOADERS = {"sample": load_mnist_sample, "mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
NETWORKS = {"without BatchNorm": False, "with BatchNorm": True}


class LoggedLoss(npnet.CrossEntropyLoss):
    """Cross-entropy that also keeps the loss of every training batch (``fit`` keeps only
    the epoch means), for a learning curve by step."""

    def __init__(self):
        super().__init__()
        self.values = []

    def forward(self, logits, labels):
        value = super().forward(logits, labels)
        self.values.append(value)
        return value


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="sample")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=None,
                        help="use only the first N training images")
    parser.add_argument("--test-size", type=int, default=None,
                        help="use only the first N test images")
    parser.add_argument("--every", type=int, default=None,
                        help="record every k steps (default: about 100 records per run)")
    parser.add_argument("--sample-size", type=int, default=2000,
                        help="activation values kept per layer per recorded step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "batchnorm_study"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def train_one(batch_norm: bool, data, args, every: int):
    """Train one LeNet under a Recorder; returns (history, recorder, batch losses, seconds)."""
    x_train, y_train, x_test, y_test = data
    npnet.manual_seed(args.seed)  # the same initial weights for every run with this seed
    net = lenet(batch_norm=batch_norm)
    npnet.init_xavier(net)  # the book's train_ch6 does this
    criterion = LoggedLoss()
    start = time.perf_counter()
    with Recorder(net, every=every, sample_size=args.sample_size, seed=args.seed) as recorder:
        history = fit(net, (x_train, y_train), (x_test, y_test), epochs=args.epochs,
                      lr=args.lr, batch_size=args.batch_size, loss=criterion, seed=args.seed,
                      progress=not args.no_progress)
    return history, recorder, np.array(criterion.values), time.perf_counter() - start


def plot_learning_curves(runs: dict, steps_per_epoch: int, path: str) -> None:
    """Left: training loss by step (thin) and its running mean over an epoch (thick).
    Right: test accuracy (solid) and training accuracy (dashed) by epoch."""
    fig = Figure(figsize=(10, 3.8))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for (title, run), color in zip(runs.items(), ("tab:orange", "tab:blue")):
        losses = run["losses"]
        steps = np.arange(len(losses))
        window = max(1, min(steps_per_epoch, len(losses)))
        running = np.convolve(losses, np.ones(window) / window, mode="valid")
        loss_ax.plot(steps, losses, color=color, alpha=0.25, linewidth=0.8)
        loss_ax.plot(steps[window - 1:], running, color=color, label=title)
        epochs = np.arange(1, len(run["history"]) + 1)
        acc_ax.plot(epochs, run["history"].test_acc, "-o", color=color, label=f"{title}, test")
        acc_ax.plot(epochs, run["history"].train_acc, "--", color=color,
                    label=f"{title}, train")
    loss_ax.set(xlabel="training step", ylabel="training loss (batch)", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    acc_ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sigmoid_numbers(recorder: Recorder) -> dict:
    """Per Sigmoid layer, its output's std and saturated fraction at the first and last
    recorded step."""
    arrays = recorder.to_arrays()
    numbers = {}
    for column, name in enumerate(recorder.names):
        if isinstance(recorder.watched[name], npnet.Sigmoid):
            numbers[recorder.labels[name]] = {
                stat: [round(float(arrays[stat][0, column]), 4),
                       round(float(arrays[stat][-1, column]), 4)]
                for stat in ("mean", "std", "saturated")}
    return numbers


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = LOADERS[args.dataset]()
    x_train, y_train = data.x_train[:args.train_size], data.y_train[:args.train_size]
    x_test, y_test = data.x_test[:args.test_size], data.y_test[:args.test_size]
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    every = args.every or max(1, total_steps // 100)
    print(f"{args.dataset}: {len(x_train)} training and {len(x_test)} test images; "
          f"{args.epochs} epochs of {steps_per_epoch} steps, lr {args.lr}, batch size "
          f"{args.batch_size}; recording every {every} steps")

    runs = {}
    for title, batch_norm in NETWORKS.items():
        print(f"--- LeNet {title}")
        history, recorder, losses, seconds = train_one(
            batch_norm, (x_train, y_train, x_test, y_test), args, every)
        runs[title] = {"history": history, "recorder": recorder, "losses": losses,
                       "seconds": seconds}

    os.makedirs(args.out, exist_ok=True)
    recorders = {title: run["recorder"] for title, run in runs.items()}
    paths = {name: os.path.join(args.out, f"{name}.png") for name in
             ("learning_curves", "activation_histograms", "activation_stats", "gradient_norms")}
    plot_learning_curves(runs, steps_per_epoch, paths["learning_curves"])
    plot_activation_histograms(recorders, paths["activation_histograms"], layers=[npnet.Sigmoid],
                               value_range=(0, 1))
    plot_activation_stats(recorders, paths["activation_stats"], layers=[npnet.Sigmoid])
    plot_gradient_norms(recorders, paths["gradient_norms"])

    results = {"dataset": args.dataset, "train_size": len(x_train), "test_size": len(x_test),
               "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
               "seed": args.seed, "every": every, "networks": {}}
    for title, run in runs.items():
        history, recorder = run["history"], run["recorder"]
        first_steps = run["losses"][:steps_per_epoch]
        results["networks"][title] = {
            "test_acc": [round(acc, 4) for acc in history.test_acc],
            "train_loss": [round(loss, 4) for loss in history.train_loss],
            "train_acc": [round(acc, 4) for acc in history.train_acc],
            "mean_loss_first_epoch": round(float(first_steps.mean()), 4),
            "seconds": round(run["seconds"], 1),
            "recorder_seconds": round(recorder.seconds, 2),
            "sigmoid_outputs_first_last_step": sigmoid_numbers(recorder),
        }
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump(results, file, indent=1)

    print("\n                      test accuracy by epoch")
    for title, numbers in results["networks"].items():
        print(f"{title:<20}  " + " ".join(f"{acc:.3f}" for acc in numbers["test_acc"]) +
              f"   ({numbers['seconds']} s, of which recorder {numbers['recorder_seconds']} s)")
    print("\nSigmoid outputs, first -> last recorded step: std, fraction saturated")
    for title, numbers in results["networks"].items():
        for label, stats in numbers["sigmoid_outputs_first_last_step"].items():
            print(f"  {title:<18} {label:<12} std {stats['std'][0]:.3f} -> {stats['std'][1]:.3f}"
                  f"   saturated {stats['saturated'][0]:.3f} -> {stats['saturated'][1]:.3f}")
    print("\nfigures: " + ", ".join(paths.values()))
    return results


if __name__ == "__main__":
    main()
