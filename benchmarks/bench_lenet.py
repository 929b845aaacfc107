"""Throughput of the book's 28x28 LeNet-BN: npnet against PyTorch CPU, in one process.

    python benchmarks/bench_lenet.py                # each side's defaults (2 cores here)
    python benchmarks/bench_lenet.py --threads 1    # both sides pinned to one thread
    python benchmarks/bench_lenet.py --load         # with one busy process on the machine
    python benchmarks/bench_lenet.py --threads 2 --npnet-workers 1   # npnet as before phase 6
    python benchmarks/bench_lenet.py --profile      # npnet's time per layer, forward/backward
    python benchmarks/bench_lenet.py --as-written   # npnet's layers as written, not FastNet
    python benchmarks/bench_lenet.py --quick        # a few iterations (CI): runs, times nothing

What is measured, on random 28x28 images (the same arrays on both sides), float32:
- training step at batch 256: forward, softmax cross-entropy, backward, SGD step (lr 0.1);
- evaluation (``model.eval()``, no gradients) at batch 256 and 1000.

npnet's side runs the network through ``npnet.FastNet(model)``, the fast backend that ``fit``
and ``evaluate`` use, created once, with its default number of workers (threads, each on a
part of the batch, OpenBLAS held to one thread each: npnet/fast/workers.py) or
``--npnet-workers``; ``--threads N`` gives npnet N workers and pins OpenBLAS and torch to N
threads. ``--load`` starts one busy process (a Python loop) for the whole measurement: a
learner's laptop always has something else running. It is built with ``input_grad=False``: the images need no
gradient (as a torch input without ``requires_grad``), so the first convolution skips dL/dx.
``--as-written`` measures the plain ``Sequential`` instead: every layer's own forward and
backward, as written. The FastNet's first call in each mode plans and proves its kernels
(npnet/fast/proof.py); that once-per-network cost is reported on its own line, and the
warm-up takes it out of the timed blocks.
The two libraries alternate in blocks after a warm-up; before every timed block the process
sleeps 0.3 s, because OpenBLAS's worker threads keep spinning for a while after a matrix
product and would slow whichever side runs next. Each throughput is the median over blocks.

The PyTorch model is the same network with Xavier init and plain SGD, in two versions:
``torch-scratch`` uses the seed's from-scratch ``batch_norm`` (the fair comparison to the
book), ``torch-nn`` uses nn.BatchNorm2d/1d (the stronger baseline). npnet never imports torch;
without torch installed, only npnet is measured.

Peak memory of a training step: each library in a fresh subprocess builds the model and a
batch, then the kernel's resident-set high-water mark (VmHWM) is reset and three training steps
run; peak = VmHWM - VmRSS before the steps (the same method for both sides; it counts the
activations, gradients and any buffers the steps allocate, not the library's code).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import npnet  # noqa: E402
from npnet.models import lenet  # noqa: E402

BATCH = 256
EVAL_BATCHES = (256, 1000)
LR = 0.1
# passes before timing: a FastNet first times each way of running a split batch (helper
# processes, threads, one worker: 1 + 3 passes each, npnet/fast/workers.py WorkerChoice)
WARMUP = 15


# ------------------------------------------------------------------------------ the models
def npnet_model():
    npnet.manual_seed(0)
    model = lenet(batch_norm=True)
    npnet.init_xavier(model)
    return model


def npnet_train_step(model, optimizer, criterion):
    def step(images, labels):
        logits = model(images)
        criterion(logits, labels)
        optimizer.zero_grad()
        model.backward(criterion.backward())
        optimizer.step()
    return step


WORKERS = None  # npnet's workers: None for FastNet's default (set by main)


def npnet_sides(as_written: bool = False):
    """(train_step, eval_fn) for npnet: through one ``npnet.FastNet`` over the model, or with
    ``as_written`` through the model itself (a plain Sequential)."""
    model = npnet_model()
    # the images need no gradient (torch: requires_grad=False), so input_grad=False
    net = model if as_written else npnet.FastNet(model, input_grad=False, workers=WORKERS)
    optimizer = npnet.SGD(model.parameters(), lr=LR)
    train = npnet_train_step(net, optimizer, npnet.CrossEntropyLoss())

    def train_step(images, labels):
        net.train()
        train(images, labels)

    def evaluate(images):
        net.eval()
        return net(images)
    return train_step, evaluate


def planning_ms(repeats: int) -> dict:
    """{mode: ms} for a FastNet's first call in training and in evaluation mode: planning
    and proving its kernels (``FastNet.plan``; later calls find the plan in its cache).
    Median over ``repeats`` fresh networks (the first one in the process also walks the layers'
    code once for ``proof.code_version``)."""
    images, _ = make_batch(BATCH)
    times = {"train": [], "eval": []}
    for _ in range(repeats):
        fast = npnet.FastNet(npnet_model(), input_grad=False)
        for mode in times:
            getattr(fast, mode)()
            start = time.perf_counter()
            fast.plan(images)
            times[mode].append((time.perf_counter() - start) * 1e3)
    return {mode: statistics.median(values) for mode, values in times.items()}


def torch_model(batch_norm_kind: str):
    import torch
    from torch import nn

    class ScratchBatchNorm(nn.Module):
        """The seed notebook's BatchNorm, written with torch tensors (momentum 0.9 on the old
        value, biased variance)."""

        def __init__(self, num_features, num_dims):
            super().__init__()
            shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
            self.gamma = nn.Parameter(torch.ones(shape))
            self.beta = nn.Parameter(torch.zeros(shape))
            self.register_buffer("moving_mean", torch.zeros(shape))
            self.register_buffer("moving_var", torch.ones(shape))

        def forward(self, X):
            eps, momentum = 1e-5, 0.9
            if not self.training:
                X_hat = (X - self.moving_mean) / torch.sqrt(self.moving_var + eps)
            else:
                axes = (0,) if X.dim() == 2 else (0, 2, 3)
                mean = X.mean(dim=axes, keepdim=True)
                var = ((X - mean) ** 2).mean(dim=axes, keepdim=True)
                X_hat = (X - mean) / torch.sqrt(var + eps)
                with torch.no_grad():
                    self.moving_mean.mul_(momentum).add_((1 - momentum) * mean)
                    self.moving_var.mul_(momentum).add_((1 - momentum) * var)
            return self.gamma * X_hat + self.beta

    def bn(features, dims):
        if batch_norm_kind == "scratch":
            return ScratchBatchNorm(features, dims)
        return nn.BatchNorm2d(features) if dims == 4 else nn.BatchNorm1d(features)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), bn(6, 4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), bn(16, 4), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), bn(120, 2), nn.Sigmoid(),
        nn.Linear(120, 84), bn(84, 2), nn.Sigmoid(),
        nn.Linear(84, 10))
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
    return model


def torch_sides(batch_norm_kind: str):
    import torch
    import torch.nn.functional as F

    model = torch_model(batch_norm_kind)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def train_step(images, labels):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    def evaluate(images):
        model.eval()
        with torch.inference_mode():
            return model(images)
    return train_step, evaluate


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------- timing
def set_threads(threads: int) -> None:
    """Pin OpenBLAS (numpy's matrix products) and, if present, torch to ``threads``."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)  # every BLAS/OpenMP pool loaded so far, numpy's included
    except ImportError:
        print("threadpoolctl is not installed: OpenBLAS keeps its default thread count")
    if have_torch():
        import torch
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1) if threads == 1 else None


def time_block(fn, iterations: int) -> float:
    """Seconds per iteration over one block, after the 0.3 s pause that lets OpenBLAS's
    spinning worker threads go to sleep."""
    time.sleep(0.3)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations


def compare(candidates: dict, blocks: int, iterations: int, warmup: int) -> dict:
    """Run every candidate's ``fn`` in alternation; return {name: [seconds per iteration]}."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    for _ in range(blocks):
        for name, fn in candidates.items():
            times[name].append(time_block(fn, iterations))
    return times


def print_table(rows: list, names: list) -> None:
    """rows: (what, {side: images per second}); one column per side, then npnet's ratio to
    each other side."""
    header = f"{'images per second':<26}" + "".join(f"{name:>15}" for name in names)
    header += "".join(f"{'npnet/' + name[6:]:>16}" for name in names[1:])
    print(header)
    for what, speeds in rows:
        line = f"{what:<26}" + "".join(f"{speeds[name]:15,.0f}" for name in names)
        line += "".join(f"{speeds['npnet'] / speeds[name]:15.2f}x" for name in names[1:])
        print(line)


def make_batch(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, size=batch)
    return images, labels


# --------------------------------------------------------------------------------- memory
def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(side: str, threads: int, as_written: bool) -> None:
    """Runs in a subprocess: print the peak RSS growth (KiB) of three training steps."""
    set_threads(threads)
    images, labels = make_batch(BATCH)
    if side == "npnet":
        train_step, _ = npnet_sides(as_written)
    else:
        import torch
        train_step, _ = torch_sides(side.split("-")[1])
        images, labels = torch.from_numpy(images), torch.from_numpy(labels)
    before = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    for _ in range(3):
        train_step(images, labels)
    print(rss_kib("VmHWM") - before)


def peak_memory_mib(side: str, threads: int, as_written: bool) -> float | None:
    try:
        out = subprocess.run([sys.executable, __file__, "--memory-child", side,
                              "--threads", str(threads)]
                             + (["--as-written"] if as_written else []),
                             capture_output=True, text=True, check=True, timeout=300)
        return int(out.stdout.split()[-1]) / 1024
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as error:
        print(f"memory measurement for {side} failed: {error}")
        return None


def tracemalloc_peak_mib(as_written: bool) -> float:
    """npnet only: numpy reports its allocations to tracemalloc; peak of a training step."""
    import tracemalloc
    images, labels = make_batch(BATCH)
    train_step, _ = npnet_sides(as_written)
    train_step(images, labels)  # the plan, and buffers kept between steps, are made here...
    tracemalloc.start()
    train_step(images, labels)  # ...so this measures what a step needs on top of them
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


# -------------------------------------------------------------------------------- profile
def profile_layers(model, net, images, labels, iterations: int):
    """[(layer name, forward ms, backward ms)], medians over ``iterations`` training steps of
    ``net`` (a FastNet over ``model``, or ``model`` itself).

    Forward and backward hooks on ``model``'s layers stamp the clock after every layer (a
    FastNet fires them per layer too), so each layer's time is the gap since the previous
    stamp. Through a FastNet, the first layer's forward includes moving the input to the
    batch-last layout, the loss row moving the logits back, and the last layer's backward
    moving dL/dlogits; the loss and the SGD step are rows of their own.
    """
    criterion = npnet.CrossEntropyLoss()
    optimizer = npnet.SGD(model.parameters(), lr=LR)
    stamps = []
    handles = []
    for layer in model:
        handles.append(layer.register_forward_hook(lambda *_: stamps.append(time.perf_counter())))
        handles.append(layer.register_backward_hook(
            lambda *_: stamps.append(time.perf_counter())))
    layers = len(model)
    rows = []
    for _ in range(iterations + 2):  # the first (planning, with a FastNet) and second: warm-up
        stamps.clear()
        start = time.perf_counter()
        logits = net(images)
        criterion(logits, labels)
        optimizer.zero_grad()
        grad = criterion.backward()
        loss_done = time.perf_counter()
        net.backward(grad)
        backward_done = time.perf_counter()
        optimizer.step()
        step_done = time.perf_counter()
        forward = np.diff([start] + stamps[:layers])
        # backward stamps come last layer first; layer k's time is the gap before its stamp
        backward = np.diff([loss_done] + stamps[layers:])[::-1]
        rows.append((forward, backward, loss_done - stamps[layers - 1],
                     step_done - backward_done))
    for handle in handles:
        handle.remove()
    rows = rows[2:]  # warm-up
    forward = np.median([r[0] for r in rows], axis=0) * 1e3
    backward = np.median([r[1] for r in rows], axis=0) * 1e3
    table = [(f"{position}: {layer.short_name()}", forward[position], backward[position])
             for position, layer in enumerate(model)]
    table.append(("loss (forward and gradient)", np.median([r[2] for r in rows]) * 1e3, 0.0))
    table.append(("SGD step", 0.0, np.median([r[3] for r in rows]) * 1e3))
    return table


def profile_evaluation(model, net, images, iterations: int):
    """[(layer name, forward ms)] in evaluation mode, medians over ``iterations`` passes of
    ``net`` (a FastNet over ``model``, or ``model`` itself)."""
    net.eval()
    stamps = []
    handles = [layer.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
               for layer in model]
    rows = []
    for _ in range(iterations + 2):
        stamps.clear()
        start = time.perf_counter()
        net(images)
        rows.append(np.diff([start] + stamps))
    for handle in handles:
        handle.remove()
    net.train()
    forward = np.median(rows[2:], axis=0) * 1e3
    return [(f"{position}: {layer.short_name()}", forward[position])
            for position, layer in enumerate(model)]


def profile(iterations: int, as_written: bool) -> None:
    """npnet's time per layer, forward and backward, in training mode at batch 256."""
    images, labels = make_batch(BATCH)
    model = npnet_model()
    # one worker: the layers are timed one after another
    net = model if as_written else npnet.FastNet(model, input_grad=False, workers=1)
    rows = profile_layers(model, net, images, labels, iterations=iterations)
    total_forward = sum(row[1] for row in rows)
    total_backward = sum(row[2] for row in rows)
    print(f"\nnpnet LeNet-BN ({'layers as written' if as_written else 'npnet.FastNet'}), "
          f"training mode, batch {BATCH}, milliseconds per step (median of {iterations})")
    if not as_written:
        print("(the hooks that time each layer keep FastNet from fusing BatchNorm, Sigmoid and "
              "AvgPool2d:\n these rows are the layers unfused; the tables above run fused)")
    print(f"{'layer':<40} {'forward':>8} {'backward':>9}")
    for name, forward_ms, backward_ms in rows:
        print(f"{name:<40} {forward_ms:8.3f} {backward_ms:9.3f}")
    print(f"{'total':<40} {total_forward:8.3f} {total_backward:9.3f}")
    batch = EVAL_BATCHES[-1]
    rows = profile_evaluation(model, net, make_batch(batch)[0], iterations)
    print(f"\nevaluation mode, batch {batch}, milliseconds (median of {iterations})")
    for name, forward_ms in rows:
        print(f"{name:<40} {forward_ms:8.3f}")
    print(f"{'total':<40} {sum(row[1] for row in rows):8.3f}")


# ----------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for each side (npnet: workers); default: each side's own")
    parser.add_argument("--npnet-workers", type=int, default=None,
                        help="npnet's workers, whatever --threads says")
    parser.add_argument("--load", action="store_true",
                        help="run everything with one busy process on the machine")
    parser.add_argument("--quick", action="store_true", help="a few iterations, for CI")
    parser.add_argument("--profile", action="store_true", help="npnet's time per layer")
    parser.add_argument("--as-written", action="store_true",
                        help="measure npnet's layers as written (a plain Sequential: every "
                             "layer's own forward and backward) instead of npnet.FastNet")
    parser.add_argument("--no-torch", action="store_true", help="measure npnet only")
    parser.add_argument("--torch-bn", choices=["scratch", "nn", "both"], default="both",
                        help="which PyTorch BatchNorm to compare with")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    global WORKERS
    WORKERS = args.npnet_workers if args.npnet_workers is not None else args.threads
    if args.memory_child:
        memory_child(args.memory_child, args.threads, args.as_written)
        return
    if args.threads is not None:
        set_threads(args.threads)
    busy = start_busy_process() if args.load else None
    try:
        measure(args)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def start_busy_process() -> subprocess.Popen:
    """One process that keeps one core busy (a pure Python loop) until killed."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(1.0)  # running before anything is timed
    return busy


def measure(args) -> None:
    blocks, iterations, warmup = (1, 2, 1) if args.quick else (args.blocks, 10, WARMUP)
    use_torch = have_torch() and not args.no_torch
    kinds = ["scratch", "nn"] if args.torch_bn == "both" else [args.torch_bn]

    from npnet.fast.workers import default_workers
    threads = "each side's default threads" if args.threads is None else \
        f"{args.threads} thread(s)"
    workers = default_workers() if WORKERS is None else WORKERS
    print(f"LeNet-BN 28x28, float32, {threads}, npnet {workers} worker(s); numpy "
          f"{np.__version__}", end="")
    if use_torch:
        import torch
        print(f", torch {torch.__version__} ({torch.get_num_threads()} threads)", end="")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"; load average {load:.2f} before the run")
    if args.load:
        print("--load: one busy process (a Python loop) runs during every measurement")
    elif load > 0.9:
        print("note: other processes are running; with 2 threads OpenBLAS then waits for a "
              "busy core (see benchmarks/README.md), and the numbers mean little")

    if args.as_written:
        print("npnet: the layers as written (a plain Sequential), --as-written")
    else:
        planning = planning_ms(1 if args.quick else 3)
        print(f"npnet: npnet.FastNet(model, input_grad=False). FastNet planning and proof: "
              f"train {planning['train']:.1f} ms, eval {planning['eval']:.1f} ms (once per "
              f"network, mode and code version)")

    images, labels = make_batch(BATCH)
    sides = {"npnet": npnet_sides(args.as_written)}
    if use_torch:
        import torch
        for kind in kinds:
            sides[f"torch-{kind}"] = torch_sides(kind)
    inputs = {name: (images, labels) if name == "npnet"
              else (torch.from_numpy(images), torch.from_numpy(labels)) for name in sides}

    rows = []  # (what, {side: images per second})
    train = {name: (lambda s=side, i=inputs[name]: s[0](*i)) for name, side in sides.items()}
    times = compare(train, blocks, iterations, warmup)
    rows.append((f"training step, batch {BATCH}",
                 {name: BATCH / statistics.median(t) for name, t in times.items()}))
    for batch in EVAL_BATCHES:
        eval_images, _ = make_batch(batch, seed=1)
        evaluate = {}
        for name, side in sides.items():
            data = eval_images if name == "npnet" else torch.from_numpy(eval_images)
            evaluate[name] = lambda s=side, d=data: s[1](d)
        times = compare(evaluate, blocks, max(2, iterations * BATCH // batch), warmup)
        rows.append((f"evaluation, batch {batch}",
                     {name: batch / statistics.median(t) for name, t in times.items()}))

    names = list(sides)
    print_table(rows, names)

    if not args.quick:
        peaks = {name: peak_memory_mib(name, args.threads or os.cpu_count() or 1,
                                       args.as_written) for name in names}
        line = f"{'peak MiB, training step':<26}"
        line += "".join(f"{'?' if peaks[n] is None else f'{peaks[n]:.1f}':>15}" for n in names)
        print(line)
        print(f"npnet's peak by tracemalloc (numpy allocations during one step, after a first "
              f"step): {tracemalloc_peak_mib(args.as_written):.1f} MiB")
    if args.profile:
        if (args.threads or 2) > 1 and load > 0.9:
            print("\nnote: the per-layer profile at more than one thread is only meaningful on "
                  "an idle machine: each OpenBLAS product may wait for a core (rows of ~16 ms)")
        profile(3 if args.quick else 20, args.as_written)


if __name__ == "__main__":
    main()
