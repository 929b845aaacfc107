"""Why residual connections: a deep plain network and the same network with shortcuts.

Builds two networks from the same layers, with the same initial weights:

    stem:    Conv2d(1, C, 3, stride 2, padding 1) -> BatchNorm -> ReLU   (N, 1, 28, 28) ->
                                                                          (N, C, 14, 14)
    D times: plain     ReLU(body(x))                                     (N, C, 14, 14) kept
             residual  ReLU(body(x) + x)   body = Conv2d(C, C, 3x3) -> BatchNorm -> ReLU
                                                  -> Conv2d(C, C, 3x3) -> BatchNorm
    head:    AdaptiveAvgPool2d(1) -> Flatten -> Linear(C, 10)            -> (N, 10)

(the residual block is ``npnet.models.residual_block(C, C)``; the plain one is the same body
without the ``Residual`` around it), trains both with the same data order, optimizer and
number of steps, and watches every Conv2d with an ``npnet.instruments.Recorder``. The default,
D = 15 blocks of C = 8 channels, has 2 D + 1 = 31 convolutions. It prints a table (the gradient
norm at the first and the last convolution, their ratio, the training loss, the test
accuracy) and writes one figure, ``--out``/residual_vs_plain.png (default docs/figures/):
||dL/dW|| of every convolution by depth at three steps, the first convolution's ||dL/dW||
by step, and the training loss by step.

    python examples/residual_vs_plain.py                    # about a minute
    python examples/residual_vs_plain.py --no-batchnorm     # -> residual_vs_plain_no_batchnorm.png
    python examples/residual_vs_plain.py --depth 5 --steps 60 --out runs/rvp

Why the residual network's first layers get a gradient of the last layers' size: a residual
block's backward is ``dL/dx = dL/dy + body.backward(dL/dy)`` (npnet/residual.py); the identity
path hands dL/dy on unchanged, through every block, down to the stem. In the plain network
the only path is through every body, so dL/dx at the stem is dL/dy at the top multiplied by
30 Jacobians, and a product of 30 factors drifts far from 1, one way or the other.

Which way depends on the normalization; both are here. Measured 2026-11-29, seeds 0, 1, 2
(the defaults otherwise; ratios are ||dL/dW|| of the first convolution over the last's):

- With BatchNorm (the default) the plain network's gradient *grows* towards the input: at
  step 0 the ratio is 11-13 (the residual network's: 1.3-2.0). BatchNorm itself makes deep
  plain networks' gradients explode at initialization (Yang et al., "A mean field theory of
  batch normalization", ICLR 2019), and He et al. (2016), who introduced residual networks,
  note that their plain networks with BatchNorm did not suffer from vanishing gradients and
  still trained worse the deeper they were. So it is here: after the first steps the
  plain network's first convolution gets less gradient than the residual one's (median over
  the recorded steps 0.09-0.19 against 0.29-0.38), and after 150 steps its training loss is
  1.29-1.50 against 0.27-0.43 (test accuracy 0.23-0.41 against 0.71-0.79). A 3-convolution
  network (``--depth 1``, seed 0) reaches 1.20 (plain) and 1.15 (residual): depth made the
  plain network worse and the residual one better.
- Without BatchNorm (``--no-batchnorm``; npnet's default initialization, PyTorch's) the plain
  network's gradient *vanishes*: at step 0 the ratio is 2e-15 to 2e-13, and the plain network
  does not learn at all (its loss stays at ln 10 = 2.30, test accuracy 0.100). The residual
  network's ratio is 0.14-0.49. Its training, though, tells little in 150 steps: without
  normalization both kinds start slowly at these settings, however shallow (3 convolutions,
  seeds 0 and 1: losses 2.23-2.30), and the 31-convolution residual network reaches 2.08
  (seed 0) or stays at 2.29-2.30 (seeds 1 and 2).

The default is the BatchNorm pair, the network d2l builds, because it shows what the shortcut
does to *training* in every seed; ``--no-batchnorm`` shows the vanishing gradient, by 12
to 14 orders of magnitude, but not reliably its effect on 150 steps of training.

Fast and as written: ``npnet.fit`` runs the networks on the fast backend unless ``--no-fast``.
The Recorder's hooks fire on both paths and record the same numbers, to float32 rounding, on
a small network (tests/test_residual_vs_plain.py: 3e-6 relative over 5 steps). The deep plain
network with BatchNorm amplifies rounding: at step 0 its gradients on the two paths differ by
up to 7e-3 relative in float32 (2e-13 in float64), and over 150 steps the two runs part ways
(--no-fast, seed 0: plain loss 1.48, test accuracy 0.10; residual 0.33 and 0.68). The same
picture, other digits.

Time: 45-51 s for the default run on this project's 2-core machine while others used it, with
one BLAS thread (``--threads``, default 1); with NumPy's two OpenBLAS threads (``--threads
0``) the same run took 5.5 minutes there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np

import npnet
from npnet import (AdaptiveAvgPool2d, BatchNorm, Conv2d, Flatten, Linear, ReLU, Sequential)
from npnet.datasets import DataLoader, load_fashion_mnist, load_mnist, load_mnist_sample
from npnet.instruments import Recorder
from npnet.plots import save_figure_atomically
from npnet.residual import Residual
from npnet.train import fit

LOADERS = {"sample": load_mnist_sample, "mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
NETWORKS = ("plain", "residual")
COLORS = {"plain": "tab:orange", "residual": "tab:blue"}


# ------------------------------------------------------------------------------ networks
def body(width: int, batch_norm: bool) -> Sequential:
    """Conv2d(3x3) -> BatchNorm -> ReLU -> Conv2d(3x3) -> BatchNorm, (N, C, H, W) kept;
    without the BatchNorms if ``batch_norm`` is False."""
    layers = [Conv2d(width, width, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(BatchNorm(width, num_dims=4))
    layers += [ReLU(), Conv2d(width, width, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(BatchNorm(width, num_dims=4))
    return Sequential(*layers)


def build(depth: int, width: int, residual: bool, batch_norm: bool = True,
          seed: int = 0) -> Sequential:
    """The stem, ``depth`` blocks, the head; (N, 1, 28, 28) -> (N, 10) logits.

    A block is ``Sequential(Residual(body), ReLU())`` or, plain, ``Sequential(body, ReLU())``.
    Built with ``npnet.manual_seed(seed)`` first, the two kinds draw the same weights in the
    same order (a Residual draws nothing), so they start from the same parameters."""
    npnet.manual_seed(seed)
    layers = [Conv2d(1, width, kernel_size=3, stride=2, padding=1)]
    layers += [BatchNorm(width, num_dims=4)] if batch_norm else []
    layers.append(ReLU())
    for _ in range(depth):
        main = body(width, batch_norm)
        layers.append(Sequential(Residual(main) if residual else main, ReLU()))
    layers += [AdaptiveAvgPool2d(1), Flatten(), Linear(width, 10)]
    return Sequential(*layers)


def same_parameters(a: Sequential, b: Sequential) -> bool:
    """Whether two networks hold equal parameters in the same order (their names differ:
    '3.0.0.weight' in the plain one is '3.0.body.0.weight' in the residual one)."""
    first, second = a.parameters(), b.parameters()
    return len(first) == len(second) and all(
        np.array_equal(p.data, q.data) for p, q in zip(first, second))


# ------------------------------------------------------------------------------ training
class StepBatches:
    """Exactly ``steps`` shuffled batches of ``batch_size``, epoch after epoch (the last,
    incomplete batch of each epoch left out). The order depends on ``seed`` alone, so two
    networks trained on two StepBatches with one seed see the same batches in the same
    order. ``fit`` runs all of them as its one epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, steps: int, seed: int):
        self.loader = DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=seed,
                                 drop_last=True)
        if len(self.loader) == 0:
            raise ValueError(f"{len(x)} training images make no batch of {batch_size}")
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        given, epoch = 0, 0
        while given < self.steps:
            self.loader.set_epoch(epoch)
            for batch in self.loader:
                if given == self.steps:
                    return
                yield batch
                given += 1
            epoch += 1


class LoggedLoss(npnet.CrossEntropyLoss):
    """Cross-entropy that also keeps the loss of every training batch."""

    def __init__(self):
        super().__init__()
        self.values = []

    def forward(self, logits, labels):
        value = super().forward(logits, labels)
        self.values.append(value)  # fit evaluates with a CrossEntropyLoss of its own
        return value


def train_one(net: Sequential, data, steps: int, lr: float, momentum: float,
              batch_size: int, seed: int, every: int, fast: bool | None,
              progress: bool = False) -> dict:
    """Train ``net`` for ``steps`` steps of SGD under a Recorder watching its Conv2d layers.

    Returns {'grad_norms': (R, L) ||dL/dW|| of the L convolutions (forward order) at the R
    recorded steps, 'recorded_steps': (R,), 'losses': (steps,) the batch losses,
    'test_acc', 'seconds', 'recorder_seconds'}."""
    x_train, y_train, x_test, y_test = data
    criterion = LoggedLoss()
    optimizer = npnet.SGD(net.parameters(), lr=lr, momentum=momentum)
    start = time.perf_counter()
    with Recorder(net, every=every, layers=[Conv2d]) as recorder:
        history = fit(net, StepBatches(x_train, y_train, batch_size, steps, seed),
                      (x_test, y_test), epochs=1, optimizer=optimizer, loss=criterion,
                      progress=progress, verbose=False, fast=fast)
    arrays = recorder.to_arrays()
    return {"grad_norms": arrays["grad_norm.weight"], "recorded_steps": arrays["steps"],
            "losses": np.array(criterion.values), "test_acc": history.test_acc[0],
            "seconds": time.perf_counter() - start, "recorder_seconds": recorder.seconds}


def compare(data, depth: int = 15, width: int = 8, steps: int = 150, batch_norm: bool = True,
            lr: float = 0.05, momentum: float = 0.9, batch_size: int = 64, seed: int = 0,
            every: int = 10, fast: bool | None = None, progress: bool = False) -> dict:
    """Train the plain and the residual network on ``data`` = (x_train, y_train, x_test,
    y_test) with the same everything; returns {'plain': train_one's dict, 'residual': ...}.
    The experiment's core: ``main`` adds the options, the table and the figure."""
    runs = {}
    nets = {name: build(depth, width, residual=name == "residual", batch_norm=batch_norm,
                        seed=seed) for name in NETWORKS}
    if not same_parameters(nets["plain"], nets["residual"]):
        raise AssertionError("the plain and the residual network must start from the same "
                             "weights")
    for name, net in nets.items():
        if progress:
            print(f"--- {name}")
        runs[name] = train_one(net, data, steps, lr, momentum, batch_size, seed, every, fast,
                               progress)
    return runs


def summarize(run: dict, last_steps: int = 10) -> dict:
    """The table's numbers for one network: ||dL/dW|| of the first and the last convolution
    and their ratio, at step 0 and as the median over the recorded steps; the mean training
    loss over the last ``last_steps`` steps; the test accuracy."""
    norms = run["grad_norms"]
    first, last = norms[:, 0], norms[:, -1]
    return {"first_step0": float(first[0]), "last_step0": float(last[0]),
            "ratio_step0": float(first[0] / last[0]),
            "first_median": float(np.median(first)), "last_median": float(np.median(last)),
            "ratio_median": float(np.median(first / last)),
            "final_loss": float(run["losses"][-last_steps:].mean()),
            "test_acc": float(run["test_acc"])}


# ------------------------------------------------------------------------------- figure
def plot(runs: dict, path: str, title: str) -> None:
    """Left: ||dL/dW|| of each convolution by depth at the first, a middle and the last
    recorded step. Middle: the first convolution's ||dL/dW|| by step (the last one's dashed).
    Right: the training loss by step (thin) and its running mean over 10 steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.2))
    depth_ax, first_ax, loss_ax = fig.subplots(1, 3)
    for name, run in runs.items():
        color, norms, steps = COLORS[name], run["grad_norms"], run["recorded_steps"]
        depths = np.arange(1, norms.shape[1] + 1)
        picks = sorted({0, len(steps) // 2, len(steps) - 1})
        for pick, style in zip(picks, ("-", "--", ":")):
            depth_ax.plot(depths, norms[pick], style, color=color, marker=".",
                          label=f"{name}, step {steps[pick]}")
        first_ax.plot(steps, norms[:, 0], "-", color=color, label=f"{name}, first conv")
        first_ax.plot(steps, norms[:, -1], "--", color=color, alpha=0.6,
                      label=f"{name}, last conv")
        losses = run["losses"]
        window = min(10, len(losses))
        running = np.convolve(losses, np.ones(window) / window, mode="valid")
        loss_ax.plot(np.arange(len(losses)), losses, color=color, alpha=0.25, linewidth=0.8)
        loss_ax.plot(np.arange(window - 1, len(losses)), running, color=color,
                     label=f"{name} (test acc {run['test_acc']:.3f})")
    depth_ax.set(xlabel="convolution, from the input (1) to the output",
                 ylabel="||dL/dW||", yscale="log", title="gradient by depth")
    first_ax.set(xlabel="training step", ylabel="||dL/dW||", yscale="log",
                 title="first and last convolution")
    loss_ax.set(xlabel="training step", ylabel="training loss (batch)",
                title="training loss")
    for ax in (depth_ax, first_ax, loss_ax):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_figure_atomically(fig, path, dpi=110)


# --------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="sample",
                        help="default: the MNIST sample shipped with npnet (offline)")
    parser.add_argument("--depth", type=int, default=15,
                        help="blocks of two convolutions (2 depth + 1 convolutions in all)")
    parser.add_argument("--width", type=int, default=8, help="channels of every convolution")
    parser.add_argument("--steps", type=int, default=150, help="training steps per network")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--no-batchnorm", action="store_true",
                        help="blocks without BatchNorm: the vanishing gradient")
    parser.add_argument("--every", type=int, default=10, help="record every k steps")
    parser.add_argument("--test-size", type=int, default=None,
                        help="use only the first N test images")
    parser.add_argument("--seed", type=int, default=0,
                        help="of the initial weights and of the data order")
    parser.add_argument("--out", default=os.path.join("docs", "figures"),
                        help="folder of the figure")
    parser.add_argument("--no-fast", action="store_true",
                        help="run every layer as written, not on the fast backend")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads while training (threadpoolctl, if installed); 0 "
                             "leaves NumPy's default")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be 0 (NumPy's default) or more")
    if args.test_size is not None and args.test_size < 1:
        parser.error("--test-size must be at least 1")
    for option in ("depth", "width", "steps", "batch_size", "every"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return args


def blas_threads(threads: int):
    """A context that holds NumPy's BLAS to ``threads`` threads (0: as it is). The products of
    8-channel convolutions are small, and two OpenBLAS threads spin on a busy 2-core machine:
    the default run took 5.5 minutes there with two, 51 s with one."""
    if threads:
        try:
            from threadpoolctl import threadpool_limits  # npnet's "bench" extra
            return threadpool_limits(limits=threads, user_api="blas")
        except ImportError:
            pass
    return contextlib.nullcontext()


def main(argv=None) -> dict:
    args = parse_args(argv)
    loaded = LOADERS[args.dataset]()
    data = (loaded.x_train, loaded.y_train, loaded.x_test[:args.test_size],
            loaded.y_test[:args.test_size])
    batch_norm = not args.no_batchnorm
    kind = "with BatchNorm" if batch_norm else "without BatchNorm"
    print(f"{args.dataset}: {len(data[0])} training, {len(data[2])} test images; "
          f"{args.depth} blocks ({2 * args.depth + 1} convolutions) of width {args.width}, "
          f"{kind}; {args.steps} steps of SGD (lr {args.lr}, momentum {args.momentum}, "
          f"batch {args.batch_size}), seed {args.seed}; recording every {args.every} steps")

    with blas_threads(args.threads):
        runs = compare(data, depth=args.depth, width=args.width, steps=args.steps,
                       batch_norm=batch_norm, lr=args.lr, momentum=args.momentum,
                       batch_size=args.batch_size, seed=args.seed, every=args.every,
                       fast=False if args.no_fast else None, progress=not args.no_progress)

    name = "residual_vs_plain.png" if batch_norm else "residual_vs_plain_no_batchnorm.png"
    path = os.path.join(args.out, name)
    plot(runs, path, f"{2 * args.depth + 1} convolutions, {kind}, {args.dataset}, "
                     f"{args.steps} steps, seed {args.seed}")

    results = {name: summarize(run) for name, run in runs.items()}
    print(f"\n||dL/dW|| at step 0 (median over the {len(runs['plain']['recorded_steps'])} "
          f"recorded steps); loss: mean over the last 10 steps")
    print(f"{'network':<10} {'first conv':>18} {'last conv':>18} {'first / last':>18} "
          f"{'train loss':>11} {'test acc':>9} {'seconds':>8}")
    for network, numbers in results.items():
        cells = [f"{numbers[f'{which}_step0']:.3g} ({numbers[f'{which}_median']:.3g})"
                 for which in ("first", "last", "ratio")]
        print(f"{network:<10} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} "
              f"{numbers['final_loss']:>11.3f} {numbers['test_acc']:>9.3f} "
              f"{runs[network]['seconds']:>8.1f}")
    print(f"\nfigure: {path}")
    return {"runs": runs, "results": results, "figure": path}


if __name__ == "__main__":
    main()
