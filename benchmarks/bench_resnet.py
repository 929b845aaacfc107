"""Throughput of the small ResNet (and DenseNet) of npnet.models: npnet against PyTorch CPU.

    python benchmarks/bench_resnet.py                      # the ResNet, 2 threads
    python benchmarks/bench_resnet.py --threads 1
    python benchmarks/bench_resnet.py --model densenet
    python benchmarks/bench_resnet.py --profile            # where npnet's time goes
    python benchmarks/bench_resnet.py --quick              # a few iterations (CI): times nothing

The method is bench_lenet.py's (its timing functions are used): random 28x28 images, the same
arrays on both sides, float32; a training step at batch 256 (forward, softmax cross-entropy,
backward, SGD step) and evaluation at batch 256 and 1000; the two libraries alternate in
blocks after a warm-up, with a 0.3 s pause before each block; each figure is the median over
blocks. npnet runs ``npnet.FastNet(model)``; PyTorch runs the same network (``torch-nn``:
nn.BatchNorm2d, torch's own residual sum and torch.cat). npnet never imports torch.

``--profile`` times each kernel of npnet's plan (forward and backward separately, summed by
kind: convolutions by their kernel size, BatchNorm, ReLU, the blocks' own sums and joins,
...), to show where the time goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import npnet  # noqa: E402
from bench_lenet import (compare, have_torch, make_batch, print_table,  # noqa: E402
                         set_threads)
from npnet.fast.branches import BranchesKernel  # noqa: E402
from npnet.models import densenet, resnet  # noqa: E402

BATCH = 256
EVAL_BATCHES = (256, 1000)
LR = 0.1
MODELS = {"resnet": resnet, "densenet": densenet}
# passes before timing: a FastNet first times each way of running a split batch (helper
# processes, threads, one worker: 1 + 3 passes each, npnet/fast/workers.py WorkerChoice)
WARMUP = 15


def npnet_sides(model_name: str, workers: int | None = None):
    npnet.manual_seed(0)
    model = MODELS[model_name]()
    fast = npnet.FastNet(model, input_grad=False, workers=workers)
    optimizer, criterion = npnet.SGD(model.parameters(), lr=LR), npnet.CrossEntropyLoss()

    def train_step(images, labels):
        fast.train()
        criterion(fast(images), labels)
        optimizer.zero_grad()
        fast.backward(criterion.backward())
        optimizer.step()

    def evaluate(images):
        fast.eval()
        return fast(images)
    return train_step, evaluate, model, fast


def torch_twin(module):
    """The same network in torch (nn.BatchNorm2d; parameters not copied: speed only)."""
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, body, shortcut):
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class Concat(nn.Module):
        def __init__(self, branches):
            super().__init__()
            self.branches = nn.ModuleList(branches)

        def forward(self, x):
            import torch
            return torch.cat([branch(x) for branch in self.branches], dim=1)

    if isinstance(module, npnet.Sequential):
        return nn.Sequential(*[torch_twin(layer) for layer in module])
    if isinstance(module, npnet.Residual):
        return Residual(torch_twin(module.body),
                        None if module.shortcut is None else torch_twin(module.shortcut))
    if isinstance(module, npnet.Concat):
        return Concat([torch_twin(branch) for branch in module.branches])
    if isinstance(module, npnet.Conv2d):
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                         module.stride, module.padding)
    if isinstance(module, npnet.BatchNorm):
        return nn.BatchNorm2d(module.num_features) if module.num_dims == 4 else \
            nn.BatchNorm1d(module.num_features)
    if isinstance(module, npnet.Linear):
        return nn.Linear(module.in_features, module.out_features)
    if isinstance(module, npnet.AdaptiveAvgPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    if isinstance(module, npnet.AvgPool2d):
        return nn.AvgPool2d(module.kernel_size, module.stride)
    return {npnet.ReLU: nn.ReLU, npnet.Identity: nn.Identity, npnet.Flatten: nn.Flatten}[
        type(module)]()


def torch_sides(model_name: str):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    npnet.manual_seed(0)
    model = torch_twin(MODELS[model_name]())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def train_step(images, labels):
        model.train()
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    def evaluate(images):
        model.eval()
        with torch.inference_mode():
            return model(images)
    return train_step, evaluate


# -------------------------------------------------------------------------------- profile
def kind_of(kernel) -> str:
    layer = kernel.layers[0]
    if isinstance(layer, npnet.Conv2d):
        kh, kw = layer.kernel_size
        return f"Conv2d {kh}x{kw}"
    if isinstance(kernel, BranchesKernel):
        return f"{type(layer).__name__} (the sum / join itself)"
    return type(layer).__name__


def profile(model_name: str, iterations: int) -> None:
    """Milliseconds per training step spent in each kind of kernel, forward and backward. A
    block's own line counts its sum or join only: time inside nested kernels is theirs."""
    train_step, _, _, _ = npnet_sides(model_name, workers=1)  # kernels timed one at a time
    images, labels = make_batch(BATCH)
    train_step(images, labels)  # plans and proves
    totals = defaultdict(float)
    nested = [0.0]  # per open kernel call: time spent in the kernels it called

    def timed(original, direction):
        def run(kernel, array):
            nested.append(0.0)
            start = time.perf_counter()
            result = original(kernel, array)
            spent = time.perf_counter() - start
            totals[(kind_of(kernel), direction)] += spent - nested.pop()
            nested[-1] += spent
            return result
        return run

    patched = []
    for cls in all_kernel_classes():
        for direction in ("forward", "backward"):
            if direction in vars(cls):
                patched.append((cls, direction, vars(cls)[direction]))
                setattr(cls, direction, timed(vars(cls)[direction], direction))
    try:
        start = time.perf_counter()
        for _ in range(iterations):
            train_step(images, labels)
        step = (time.perf_counter() - start) / iterations
    finally:
        for cls, direction, original in patched:
            setattr(cls, direction, original)
    rows = sorted(((key, seconds / iterations) for key, seconds in totals.items()),
                  key=lambda row: -row[1])
    print(f"\nnpnet {model_name}, training step at batch {BATCH}: {step * 1e3:.1f} ms "
          f"(with the timers)")
    print(f"{'kernel':<40}{'direction':>10}{'ms':>9}{'share':>8}")
    for (kind, direction), seconds in rows:
        print(f"{kind:<40}{direction:>10}{seconds * 1e3:9.1f}{seconds / step:8.0%}")
    outside = step - sum(seconds for _, seconds in rows)
    print(f"{'outside the kernels (loss, SGD, layout)':<50}{outside * 1e3:9.1f}"
          f"{outside / step:8.0%}")


def all_kernel_classes() -> list:
    from npnet.fast.kernel import Kernel
    found, todo = [], [Kernel]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for each side (npnet: workers)")
    parser.add_argument("--npnet-workers", type=int, default=None,
                        help="npnet's workers, whatever --threads says")
    parser.add_argument("--quick", action="store_true", help="a few iterations, for CI")
    parser.add_argument("--profile", action="store_true", help="npnet's time per kernel kind")
    parser.add_argument("--no-torch", action="store_true", help="measure npnet only")
    parser.add_argument("--blocks", type=int, default=5)
    args = parser.parse_args()

    set_threads(args.threads)
    blocks, iterations, warmup = (1, 1, 1) if args.quick else (args.blocks, 3, WARMUP)
    use_torch = have_torch() and not args.no_torch
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"{args.model} 28x28, float32, {args.threads} thread(s) (npnet: workers); numpy "
          f"{np.__version__}"
          f"; load average {load:.2f} before the run")
    npnet.manual_seed(0)
    print(f"parameters {sum(p.data.size for p in MODELS[args.model]().parameters()):,}; "
          f"forward MACs per image "
          f"{MODELS[args.model]().summary((1, 28, 28)).total_macs:,}")

    images, labels = make_batch(BATCH)
    workers = args.threads if args.npnet_workers is None else args.npnet_workers
    print(f"npnet: {workers} worker(s)")
    train_step, evaluate, _, _ = npnet_sides(args.model, workers=workers)
    sides = {"npnet": (train_step, evaluate)}
    if use_torch:
        import torch
        sides["torch-nn"] = torch_sides(args.model)

    def data(name, array):
        return array if name == "npnet" else torch.from_numpy(array)

    rows = []
    train = {name: (lambda s=side, n=name: s[0](data(n, images), data(n, labels)))
             for name, side in sides.items()}
    times = compare(train, blocks, iterations, warmup)
    rows.append((f"training step, batch {BATCH}",
                 {name: BATCH / statistics.median(t) for name, t in times.items()}))
    for batch in EVAL_BATCHES:
        eval_images, _ = make_batch(batch, seed=1)
        evaluate = {name: (lambda s=side, d=data(name, eval_images): s[1](d))
                    for name, side in sides.items()}
        times = compare(evaluate, blocks, max(1, iterations * BATCH // batch), warmup)
        rows.append((f"evaluation, batch {batch}",
                     {name: batch / statistics.median(t) for name, t in times.items()}))
    print_table(rows, list(sides))
    if args.profile:
        profile(args.model, 2 if args.quick else 5)


if __name__ == "__main__":
    main()
