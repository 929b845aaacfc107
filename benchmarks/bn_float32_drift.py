"""Float32 BatchNorm drift from float64 in training: npnet (new and old sums) against PyTorch.

Issue #13, part 4: npnet's float32 BatchNorm summed each row of up to 147,456 values in one
running sum; it now sums blocks of ``npnet.fast.batchnorm.BLOCK`` values, then adds the
partial sums pairwise. How much closer to float64 does that bring training, next to PyTorch?

    python benchmarks/bn_float32_drift.py                      # full MNIST, 1 epoch (minutes)
    python benchmarks/bn_float32_drift.py --data-dir ~/data/mnist --json drift.json
    python benchmarks/bn_float32_drift.py --quick              # the shipped sample, seconds (CI)

What runs: LeNet-BN (``npnet.models.lenet(batch_norm=True)``, Xavier init from ``--seed`` as
examples/train_lenet.py does) with train_lenet.py's recipe for it (SGD lr 1.0, batch 256, mean
cross-entropy), trained from the same initial weights, on the same batches in the same order
(``npnet.datasets.DataLoader`` with the seed, the order ``fit`` gives), five times:

- npnet float64 (the reference), npnet float32 with the blocked sums of npnet/fast/batchnorm.py
  (``BLOCK = 1024`` values per partial sum) and npnet float32 with the old single running sum
  per row (``BLOCK = 10**9``, which runs the code as it was before the blocks); each on the fast
  backend, ``npnet.FastNet(model, input_grad=False)``, as ``fit`` runs it (``--workers``:
  its workers, each on a part of the batch, whose BatchNorm sums are added up at the end);
- PyTorch float64 and float32: the same network translated by compare_with_torch.py's
  ``to_torch``, with the seed's BatchNorm on the torch side (``--torch-bn scratch`` there), the
  same initial weights copied in.

For every BatchNorm layer and every entry (gamma, beta, moving mean, moving variance), the drift
of a float32 run is max|a32 - a64| / max|a64| against its own side's float64 run, after steps
1, 10 and 100 (``--steps``) and after each epoch.

Training (lr 1.0) carries every difference into the next steps, so the drift after an epoch
mixes the sums' error with every other rounding (convolutions, sigmoids, the updates), grown
over 235 steps. Two cleaner measures are printed too:
- the drift after 1, 10 and 100 steps (after step 1 it is one step's rounding, times lr);
- the same-input error: each BatchNorm's float32 input and dL/dy (taken from a float64 pass of
  npnet's layers as written on one batch, then rounded to float32) given to npnet's float32
  kernel (both sums) and to torch's float32 BatchNorm; their batch mean, batch variance,
  dL/dgamma and dL/dbeta against the same values computed in float64 from the same float32
  arrays. Only the arithmetic inside BatchNorm differs: this isolates the summation error.
  At the initial weights and at the float64 run's weights after training.

Finally the speed cost of the blocks: npnet's BatchNorm forward + backward on LeNet's first
BatchNorm (F = 6, M = 256 * 24 * 24 values per row, float32) and a whole training step at
batch 256, BLOCK 1024 against 10**9 in alternating blocks: the medians of each, their ratio,
and the median of the ratios of neighbouring blocks ("paired", less disturbed by the load of a
shared machine). ``--timing-only`` runs only this part, ``--no-timing`` leaves it out. The
thread settings are left at their defaults and printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import npnet  # noqa: E402
import npnet.fast.batchnorm as fast_bn  # noqa: E402
from bench_lenet import compare  # noqa: E402
from compare_with_torch import ScratchBatchNorm, copy_weights, to_torch  # noqa: E402
from npnet.datasets import DataLoader, load_mnist, load_mnist_sample  # noqa: E402
from npnet.fast.workers import default_workers  # noqa: E402
from npnet.models import lenet  # noqa: E402

OLD_BLOCK = 10**9   # longer than any row: one running sum per row, the code before the blocks
ENTRIES = ("gamma", "beta", "moving_mean", "moving_var")
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}


# ----------------------------------------------------------------------------- the runs
class Snapshots(dict):
    """{checkpoint: {'1.gamma': array, ...}}, checkpoint 'step 10' or 'epoch 1'; the
    BatchNorm entries of a network's state after those steps."""

    def take(self, label: str, state: dict, names: list) -> None:
        self[label] = {f"{name}.{entry}": np.array(state[f"{name}.{entry}"], dtype=np.float64)
                       for name in names for entry in ENTRIES}


def initial_model(seed: int, dtype) -> npnet.Sequential:
    """LeNet-BN with Xavier init from ``seed`` (float32, as train_lenet.py builds it), then
    converted: the float64 model starts from exactly the float32 model's values."""
    npnet.manual_seed(seed)
    model = lenet(batch_norm=True)
    npnet.init_xavier(model)
    return model.astype(dtype)


def batch_norm_names(model) -> list:
    return [name for name, module in model.named_modules() if isinstance(module, npnet.BatchNorm)]


def checkpoints(steps: list, epoch_steps: int, epochs: int) -> dict:
    """{global step after which to snapshot: label}."""
    marks = {step: f"step {step}" for step in steps if step < epoch_steps * epochs}
    marks.update({epoch * epoch_steps: f"epoch {epoch}" for epoch in range(1, epochs + 1)})
    return marks


def train_epochs(args, loader, marks: dict, names, step, state):
    """The loop both sides run: ``args.epochs`` epochs of ``step(x, y) -> loss`` (a float)
    over ``loader``, a snapshot of ``state()`` (a state dict) at each step in ``marks``.
    Returns the snapshots and the mean loss of the last epoch."""
    snapshots, count = Snapshots(), 0
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        loss_sum, seen = 0.0, 0
        for x, y in loader:
            loss = step(x, y)
            loss_sum, seen, count = loss_sum + loss * len(y), seen + len(y), count + 1
            if count in marks:
                snapshots.take(marks[count], state(), names)
    return snapshots, loss_sum / seen


def npnet_run(args, loader, dtype, block: int, marks: dict):
    """Train npnet's LeNet-BN in ``dtype`` with ``BLOCK = block``: the loop of ``fit``, on the
    network ``fit`` would run (a FastNet without the images' gradient). Returns the
    snapshots, the mean loss of the last epoch and the trained model."""
    model = initial_model(args.seed, dtype)
    net = npnet.FastNet(model, input_grad=False, workers=args.workers).train()
    optimizer = npnet.SGD(model.parameters(), lr=args.lr)
    criterion = npnet.CrossEntropyLoss()

    def step(x, y):
        optimizer.zero_grad()
        loss = criterion(net(x), y)
        net.backward(criterion.backward())
        optimizer.step()
        return loss

    saved_block, fast_bn.BLOCK = fast_bn.BLOCK, block
    try:
        snapshots, loss = train_epochs(args, loader, marks, batch_norm_names(model), step,
                                       model.state_dict)
    finally:
        fast_bn.BLOCK = saved_block
    return snapshots, loss, model


def torch_run(args, loader, dtype, marks: dict):
    """The same training in PyTorch: npnet's initial weights copied into the translated
    network (the seed's BatchNorm), the same batches, torch.optim.SGD."""
    model = initial_model(args.seed, dtype)
    torch_model = to_torch(model, "scratch").to(TORCH_DTYPES[dtype])
    copy_weights(model, torch_model, "scratch")
    torch_model.train()
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=args.lr)

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(torch_model(torch.from_numpy(x)),
                               torch.from_numpy(y.astype(np.int64)))
        loss.backward()
        optimizer.step()
        return loss.item()

    def state():
        return {name: value.detach().numpy() for name, value in torch_model.state_dict().items()}

    snapshots, loss = train_epochs(args, loader, marks, batch_norm_names(model), step, state)
    return snapshots, loss, torch_model


def drift(ours: Snapshots, reference: Snapshots) -> dict:
    """{checkpoint: {'1.gamma': max|a - b| / max|b|, ...}}."""
    return {label: {key: float(np.abs(value - reference[label][key]).max()
                               / np.abs(reference[label][key]).max())
                    for key, value in state.items()}
            for label, state in ours.items()}


# ------------------------------------------------------------------ the same-input error
def batch_norm_inputs(model, x: np.ndarray, y: np.ndarray) -> dict:
    """{name: (x, dL/dy)} of every BatchNorm, from a float64 training-mode pass of the
    layers as written over one batch (a copy of ``model``, which stays unchanged)."""
    model = copy.deepcopy(model).astype(np.float64)
    model.train()
    seen = {}
    for name in batch_norm_names(model):
        layer = dict(model.named_modules())[name]
        layer.register_forward_hook(
            lambda module, inp, out, name=name: seen.__setitem__(name, [inp]))
        layer.register_backward_hook(
            lambda module, grad_out, grad_in, name=name: seen[name].append(grad_out))
    criterion = npnet.CrossEntropyLoss()
    criterion(model(x.astype(np.float64)), y)
    model.backward(criterion.backward())
    return {name: tuple(pair) for name, pair in seen.items()}


def exact_statistics(x: np.ndarray, grad: np.ndarray, eps: float) -> dict:
    """Batch mean, biased variance, dL/dgamma, dL/dbeta of the float32 arrays x, dL/dy
    (N, F[, H, W]), computed in float64: the values a float32 run should round to."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    x, grad = x.astype(np.float64), grad.astype(np.float64)
    mean = x.mean(axis=axes)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    x_hat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return {"mean": mean, "var": var, "grad_gamma": (grad * x_hat).sum(axis=axes),
            "grad_beta": grad.sum(axis=axes)}


def npnet_statistics(x: np.ndarray, grad: np.ndarray, eps: float, block: int) -> dict:
    """The same four from npnet's float32 kernel (npnet/fast/batchnorm.py) on the rows of the
    batch-last layout it runs on: x (N, F, ...) -> (F, M)."""
    rows = np.ascontiguousarray(np.moveaxis(x, 0, -1)).reshape(x.shape[1], -1)
    grad_rows = np.ascontiguousarray(np.moveaxis(grad, 0, -1)).reshape(x.shape[1], -1)
    F_, dtype = rows.shape[0], rows.dtype.type
    ones, zeros = np.ones((F_, 1), rows.dtype), np.zeros((F_, 1), rows.dtype)
    saved_block = fast_bn.BLOCK
    fast_bn.BLOCK = block
    try:
        # momentum 0: the moving averages become this batch's statistics
        _, mean, var, cache = fast_bn.batch_norm_rows(rows, ones, zeros, zeros, ones,
                                                      dtype(eps), dtype(0.0), True)
        _, grad_gamma, grad_beta = fast_bn.batch_norm_rows_backward(grad_rows, cache)
    finally:
        fast_bn.BLOCK = saved_block
    return {"mean": mean[:, 0], "var": var[:, 0], "grad_gamma": grad_gamma[:, 0],
            "grad_beta": grad_beta[:, 0]}


def torch_statistics(x: np.ndarray, grad: np.ndarray, eps: float) -> dict:
    """The same four from torch's float32 autograd through the seed's BatchNorm (N, F, ...)."""
    layer = ScratchBatchNorm(x.shape[1], x.ndim, eps=eps, momentum=0.0)
    x_t = torch.from_numpy(x)
    layer(x_t).backward(torch.from_numpy(grad))
    return {"mean": layer.moving_mean.flatten().numpy(),
            "var": layer.moving_var.flatten().numpy(),
            "grad_gamma": layer.gamma.grad.flatten().numpy(),
            "grad_beta": layer.beta.grad.flatten().numpy()}


def statistics_errors(computed: dict, exact: dict) -> dict:
    """mean: max_f |m32 - m| / std (what shifts x_hat); var: max_f |v32 - v| / v; the two
    gradients: max_f |g32 - g| / max_f |g| (as the parameters' drift)."""
    std = np.sqrt(exact["var"])
    return {"mean": float(np.max(np.abs(computed["mean"] - exact["mean"]) / std)),
            "var": float(np.max(np.abs(computed["var"] - exact["var"]) / exact["var"])),
            **{key: float(np.abs(computed[key] - exact[key]).max() / np.abs(exact[key]).max())
               for key in ("grad_gamma", "grad_beta")}}


def same_input_errors(model, x: np.ndarray, y: np.ndarray) -> dict:
    """{layer: {side: {statistic: error}}} for one batch through ``model``'s weights."""
    results = {}
    for name, (x64, grad64) in batch_norm_inputs(model, x, y).items():
        eps = dict(model.named_modules())[name].eps
        x32, grad32 = x64.astype(np.float32), grad64.astype(np.float32)
        exact = exact_statistics(x32, grad32, eps)
        results[name] = {
            "M": int(x32.size // x32.shape[1]),
            "npnet": statistics_errors(npnet_statistics(x32, grad32, eps, fast_bn.BLOCK),
                                       exact),
            "npnet_old": statistics_errors(npnet_statistics(x32, grad32, eps, OLD_BLOCK),
                                           exact),
            "torch": statistics_errors(torch_statistics(x32, grad32, eps), exact)}
    return results


# --------------------------------------------------------------------------------- speed
def with_block(block: int, fn):
    def run():
        saved = fast_bn.BLOCK
        fast_bn.BLOCK = block
        try:
            fn()
        finally:
            fast_bn.BLOCK = saved
    return run


def speed(images: np.ndarray, labels: np.ndarray, seed: int, blocks: int,
          iterations: int, workers: int | None) -> dict:
    """ms per call, median over alternating blocks, of BLOCK default and OLD_BLOCK: the first
    BatchNorm's kernel (F = 6, M = N * 24 * 24), its two sums alone, a training step."""
    rng = np.random.default_rng(seed)
    N = len(images)
    layer = npnet.BatchNorm(6, num_dims=4)
    x = (rng.standard_normal((6, 24, 24, N), dtype=np.float32) * 0.3 + 0.2)  # (F, H, W, N)
    grad = rng.standard_normal((6, 24, 24, N), dtype=np.float32) * 1e-3

    def kernel():
        y, cache = fast_bn.scaled_forward(layer, x)
        fast_bn.scaled_backward(layer, grad.reshape(6, -1), cache)

    rows = x.reshape(6, -1)
    model = initial_model(seed, np.float32)
    net = npnet.FastNet(model, input_grad=False, workers=workers)
    optimizer = npnet.SGD(model.parameters(), lr=0.1)
    criterion = npnet.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        criterion(net(images), labels)
        net.backward(criterion.backward())
        optimizer.step()

    cases = {"BatchNorm(6) forward+backward": (kernel, iterations),
             "  row_sum (6, M)": (lambda: fast_bn.row_sum(rows), iterations),
             "  row_dot (6, M)": (lambda: fast_bn.row_dot(rows, rows), iterations),
             f"training step, batch {N}": (step, max(1, iterations // 2))}
    results = {}
    for what, (fn, count) in cases.items():
        times = compare({"blocked": with_block(fast_bn.BLOCK, fn),
                         "running": with_block(OLD_BLOCK, fn)},
                        blocks, count, warmup=2)
        results[what.strip()] = {side: [1e3 * t for t in ts] for side, ts in times.items()}
    return results


def thread_settings() -> dict:
    try:
        from threadpoolctl import threadpool_info
        pools = [f"{pool.get('internal_api')} {pool.get('version')} "
                 f"({pool.get('threading_layer', '-')}): {pool.get('num_threads')} threads"
                 for pool in threadpool_info()]
    except ImportError:
        pools = ["threadpoolctl is not installed"]
    return {"cpus": os.cpu_count(), "pools": pools, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# -------------------------------------------------------------------------------- output
def print_drift(table: dict, labels: list, names: list, entries: tuple) -> None:
    """One row per (checkpoint, layer, entry): the three sides' drift and the ratios."""
    print(f"{'after':<9} {'layer':<26} {'entry':<11} {'npnet new':>10} {'npnet old':>10} "
          f"{'torch':>10} {'new/torch':>10} {'old/torch':>10}")
    for label in labels:
        for name, title in names:
            for entry in entries:
                key = f"{name}.{entry}"
                new, old, theirs = (table[side][label][key]
                                    for side in ("npnet", "npnet_old", "torch"))
                print(f"{label:<9} {title:<26} {entry:<11} {new:10.2e} {old:10.2e} "
                      f"{theirs:10.2e} {new / theirs:10.2f} {old / theirs:10.2f}")


def print_same_input(results: dict, titles: dict) -> None:
    print(f"{'layer':<26} {'M':>7} {'statistic':<11} {'npnet new':>10} {'npnet old':>10} "
          f"{'torch':>10}")
    for name, sides in results.items():
        for statistic in ("mean", "var", "grad_gamma", "grad_beta"):
            print(f"{titles[name]:<26} {sides['M']:>7} {statistic:<11} "
                  + " ".join(f"{sides[side][statistic]:10.2e}"
                             for side in ("npnet", "npnet_old", "torch")))


def load(args):
    if args.dataset == "sample":
        return load_mnist_sample()
    return load_mnist(root=args.data_dir)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "sample"], default=None,
                        help="full MNIST (default) or the sample shipped with npnet "
                             "(default with --quick)")
    parser.add_argument("--data-dir", help="folder of MNIST's IDX files (default: npnet's "
                                           "search, see npnet.datasets.load_mnist)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, help="the first N training images only")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1.0, help="SGD (default: 1.0, "
                        "train_lenet.py's for LeNet-BN)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", default="1,10,100",
                        help="also measure the drift after these steps (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="npnet.FastNet's workers, each on a part of the batch (default: "
                             "FastNet's, as fit uses: NPNET_THREADS, else the cores, at most 2)")
    parser.add_argument("--timing-blocks", type=int, default=9,
                        help="alternating timed blocks per side (default: %(default)s)")
    parser.add_argument("--no-timing", action="store_true", help="skip the speed comparison")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the speed comparison (no training runs)")
    parser.add_argument("--quick", action="store_true",
                        help="the shipped sample's first 512 images, few timings (CI, seconds)")
    parser.add_argument("--json", help="also write every number to this file")
    args = parser.parse_args(argv)
    if args.dataset is None:
        args.dataset = "mnist" if args.data_dir or not args.quick else "sample"
    if args.workers is None:
        args.workers = default_workers()
    if args.quick:
        args.limit = args.limit or 512
        args.timing_blocks = 2
    if args.no_timing and args.timing_only:
        parser.error("--no-timing and --timing-only leave nothing to do")
    if args.epochs < 1 or args.batch_size < 2 or (args.limit is not None and args.limit < 2):
        parser.error("--epochs must be >= 1, --batch-size and --limit >= 2")
    args.steps = sorted({int(step) for step in args.steps.split(",") if step.strip()})
    return args


def measure_drift(args, x_train, y_train) -> dict:
    """The five training runs, the drift tables and the same-input errors (printed)."""
    # a batch of one image cannot train BatchNorm: leave out such a last batch (all runs)
    drop_last = len(x_train) % args.batch_size == 1
    loaders = {dtype: DataLoader(x_train.astype(dtype), y_train, batch_size=args.batch_size,
                                 shuffle=True, seed=args.seed, drop_last=drop_last)
               for dtype in (np.float32, np.float64)}
    epoch_steps = len(loaders[np.float32])
    marks = checkpoints(args.steps, epoch_steps, args.epochs)
    labels = list(dict.fromkeys(marks[step] for step in sorted(marks)))
    model = initial_model(args.seed, np.float32)
    titles = {name: dict(model.named_modules())[name].short_name()
              for name in batch_norm_names(model)}
    print(f"LeNet-BN on {args.dataset}: {len(x_train)} training images, SGD lr {args.lr:g}, "
          f"batch {args.batch_size}, {args.epochs} epoch(s) = {epoch_steps * args.epochs} "
          f"steps, Xavier init, seed {args.seed}; BLOCK {fast_bn.BLOCK} (npnet new) and "
          f"{OLD_BLOCK} (npnet old: one running sum per row)", flush=True)

    runs, losses, seconds, models = {}, {}, {}, {}
    plan = [("npnet float64", lambda: npnet_run(args, loaders[np.float64], np.float64,
                                                fast_bn.BLOCK, marks)),
            ("npnet float32", lambda: npnet_run(args, loaders[np.float32], np.float32,
                                                fast_bn.BLOCK, marks)),
            ("npnet_old float32", lambda: npnet_run(args, loaders[np.float32], np.float32,
                                                    OLD_BLOCK, marks)),
            ("torch float64", lambda: torch_run(args, loaders[np.float64], np.float64, marks)),
            ("torch float32", lambda: torch_run(args, loaders[np.float32], np.float32, marks))]
    for what, run in plan:
        start = time.perf_counter()
        runs[what], losses[what], models[what] = run()
        seconds[what] = time.perf_counter() - start
        print(f"  {what:<18} last epoch's training loss {losses[what]:.6f}  "
              f"({seconds[what]:.1f} s)", flush=True)

    table = {"npnet": drift(runs["npnet float32"], runs["npnet float64"]),
             "npnet_old": drift(runs["npnet_old float32"], runs["npnet float64"]),
             "torch": drift(runs["torch float32"], runs["torch float64"])}
    # how far apart the two float64 references are: the translation is the same function
    references = drift(runs["torch float64"], runs["npnet float64"])
    final = labels[-1]
    print(f"\nFloat32 against float64, max|a32 - a64| / max|a64| per BatchNorm, after "
          f"{final} (new: BLOCK {fast_bn.BLOCK}; old: one running sum per row; torch: "
          f"the seed's BatchNorm in torch {torch.__version__}):")
    print_drift(table, [final], list(titles.items()), ("gamma", "beta", "moving_var"))
    print("\nThe same, gamma only, after each checkpoint (gamma near 1 is stored to half a "
          "float32 ulp, 6e-8: no drift of gamma shows below that):")
    print_drift(table, labels, list(titles.items()), ("gamma",))
    worst_reference = max(references[final].values())
    print(f"\nThe two float64 runs (npnet, torch) differ by at most {worst_reference:.1e} "
          f"(any BatchNorm entry, after {final})")

    # the summation error alone: the same float32 arrays into each float32 BatchNorm
    x_batch, y_batch = first_batch(args, x_train, y_train)
    same_input = {"initial weights": same_input_errors(model, x_batch, y_batch),
                  f"float64 weights after {final}": same_input_errors(
                      models["npnet float64"], x_batch, y_batch)}
    for what, results in same_input.items():
        print(f"\nThe same float32 input and dL/dy into each float32 BatchNorm, {what} "
              f"(errors against float64 arithmetic on those float32 arrays; mean: / std, "
              f"var: relative, gradients: / max|g|):")
        print_same_input(results, titles)
    return {"layers": titles, "losses": losses, "seconds": seconds, "drift": table,
            "float64_npnet_vs_torch": references, "same_input": same_input}


def first_batch(args, x_train, y_train):
    """The first batch of epoch 1, as every run trains on it."""
    return next(iter(DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True,
                                seed=args.seed)))


def measure_speed(args, x_train, y_train) -> dict:
    images, labels = first_batch(args, x_train, y_train)
    iterations = 2 if args.quick else 20
    print(f"\nSpeed, ms per call (median of {args.timing_blocks} alternating blocks; "
          f"timings on a shared, busy machine are noisy: compare the two columns, not "
          f"runs), load average {os.getloadavg()[0]:.2f}:", flush=True)
    timings = speed(images, labels, args.seed, args.timing_blocks, iterations, args.workers)
    print(f"{'':<32} {'blocked':>10} {'running':>10} {'ratio':>7} {'paired':>7}   ranges")
    for what, sides in timings.items():
        blocked, running = (statistics.median(sides[side]) for side in ("blocked", "running"))
        # each blocked block against the running block right after it: less of the load
        paired = statistics.median(b / r for b, r in zip(sides["blocked"], sides["running"]))
        print(f"{what:<32} {blocked:10.3f} {running:10.3f} {blocked / running:6.2f}x "
              f"{paired:6.2f}x   {min(sides['blocked']):.3f}-{max(sides['blocked']):.3f} / "
              f"{min(sides['running']):.3f}-{max(sides['running']):.3f}")
    print(f"load average after the timings {os.getloadavg()[0]:.2f}")
    return timings


def main(argv=None) -> None:
    args = parse_args(argv)
    threads = thread_settings()
    print(f"numpy {np.__version__}, torch {torch.__version__}; {threads['cpus']} CPUs, load "
          f"average {threads['load_average']:.2f}; threads left at their defaults: "
          + "; ".join(threads["pools"])
          + f"; torch {threads['torch_threads']} (interop {threads['torch_interop_threads']})"
          + f"; npnet.FastNet with {args.workers} worker(s)")
    data = load(args)
    x_train, y_train = data.x_train[:args.limit], data.y_train[:args.limit]
    results = {"settings": vars(args), "threads": threads, "block": fast_bn.BLOCK}
    if not args.timing_only:
        results.update(measure_drift(args, x_train, y_train))
    if not args.no_timing:
        results["timings_ms"] = measure_speed(args, x_train, y_train)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
