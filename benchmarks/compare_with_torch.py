"""The small ResNet or DenseNet trained by npnet and by PyTorch with the same recipe, side by side.

    python benchmarks/compare_with_torch.py --model resnet                 # Fashion-MNIST, 3 epochs
    python benchmarks/compare_with_torch.py --model densenet --epochs 5
    python benchmarks/compare_with_torch.py --model resnet --dataset sample --limit 1000 --epochs 1
    python benchmarks/compare_with_torch.py --model resnet --optimizer adam --schedule cosine

What is the same on both sides:
- the network: npnet.models.resnet() or densenet(), translated layer by layer into torch.nn
  (``to_torch``): Conv2d, Linear, ReLU, the pooling layers, Flatten, and the two containers,
  Residual (body(x) + shortcut(x)) and Concat (branches joined on the channels);
- the initial weights: npnet's (Xavier init from ``--seed``, as train_lenet.py does), copied
  into torch entry by entry;
- the batches: npnet.datasets.DataLoader with the same seed gives both sides epoch k's order
  (npnet.fit uses the same loader), float32 throughout;
- the recipe: the optimizer (torch.optim.SGD / Adam / AdamW, the same settings), lr, weight
  decay, momentum, schedule (torch.optim.lr_scheduler, stepped once per epoch), batch size,
  epochs, mean cross-entropy loss.

BatchNorm: npnet's is the seed notebook's (d2l 7.5): moving = 0.9 * moving + 0.1 * batch, with
the *biased* batch variance. ``--torch-bn scratch`` (the default) runs the seed's BatchNorm on
the torch side too, so the two sides compute the same function and only rounding differs.
``--torch-bn nn`` uses nn.BatchNorm2d (momentum 0.1 on the new value: the same averaging; its
running_var takes the *unbiased* variance, larger by N/(N-1) with N = batch x H x W values per
channel: at most 1/(256*49-1) for the 7x7 maps, so evaluation-mode accuracy may differ a little;
training mode is the same function).

Both sides run in this process, one after the other within each epoch (npnet's epoch, then
torch's on the same batches), with a short pause between them (OpenBLAS's threads keep spinning
for a while after a matrix product and would slow whichever side runs next). The time of an
epoch is training plus evaluation on the test set. npnet runs its fast backend, as fit does
(--no-fast: its layers as written). Each epoch prints both sides' training loss and accuracy,
test accuracy and seconds, and how far the two sets of weights have drifted apart (float32
rounding differences grow with every step; --dtype float64 keeps them near 1e-12 for longer).

npnet itself never imports torch: this script is a benchmark and an oracle, kept apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import npnet  # noqa: E402
from npnet.datasets import (DataLoader, load_fashion_mnist, load_mnist,  # noqa: E402
                            load_mnist_sample)
from npnet.models import densenet, resnet  # noqa: E402
from npnet.train import History, evaluate, fit  # noqa: E402

PAUSE = 0.3  # seconds between the two sides, for OpenBLAS's spinning threads to stop


# ------------------------------------------------------------------- the network in torch
class ScratchBatchNorm(nn.Module):
    """The seed notebook's BatchNorm (d2l 7.5) in torch: biased batch variance, moving
    averages with momentum 0.9 on the old value; parameters gamma and beta of shape
    (1, F) or (1, F, 1, 1), as npnet's."""

    def __init__(self, num_features: int, num_dims: int, eps: float = 1e-5,
                 momentum: float = 0.9):
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.eps, self.momentum = eps, momentum
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, X):
        if not self.training:
            X_hat = (X - self.moving_mean) / torch.sqrt(self.moving_var + self.eps)
        else:
            axes = (0,) if X.dim() == 2 else (0, 2, 3)
            mean = X.mean(dim=axes, keepdim=True)
            var = ((X - mean) ** 2).mean(dim=axes, keepdim=True)
            X_hat = (X - mean) / torch.sqrt(var + self.eps)
            with torch.no_grad():
                self.moving_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
                self.moving_var.mul_(self.momentum).add_((1 - self.momentum) * var)
        return self.gamma * X_hat + self.beta


class Residual(nn.Module):
    """y = body(x) + shortcut(x), x itself without a shortcut (npnet.Residual)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class Concat(nn.Sequential):
    """The branches' outputs for the same input, joined on the channels (npnet.Concat).
    A Sequential only for its naming of the branches, 0, 1, ... as npnet names them."""

    def forward(self, x):
        return torch.cat([branch(x) for branch in self], dim=1)


def to_torch(module: npnet.Module, batch_norm: str) -> nn.Module:
    """The torch.nn network that computes what the npnet ``module`` computes, layer for layer
    and with the same names (``3.0.body.0.weight``), with fresh parameters: copy them with
    ``copy_weights``. ``batch_norm``: 'scratch' (the seed's) or 'nn' (nn.BatchNorm2d/1d)."""
    if isinstance(module, npnet.Sequential):
        return nn.Sequential(*[to_torch(layer, batch_norm) for layer in module])
    if isinstance(module, npnet.Residual):
        shortcut = None if module.shortcut is None else to_torch(module.shortcut, batch_norm)
        return Residual(to_torch(module.body, batch_norm), shortcut)
    if isinstance(module, npnet.Concat):
        return Concat(*[to_torch(branch, batch_norm) for branch in module.branches])
    if isinstance(module, npnet.Conv2d):
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                         stride=module.stride, padding=module.padding,
                         bias=module.bias is not None)
    if isinstance(module, npnet.Linear):
        return nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, npnet.BatchNorm):
        if batch_norm == "scratch":
            return ScratchBatchNorm(module.num_features, module.num_dims, module.eps,
                                    module.momentum)
        kind = nn.BatchNorm2d if module.num_dims == 4 else nn.BatchNorm1d
        # torch's momentum weighs the new value: 1 - the seed's 0.9
        return kind(module.num_features, eps=module.eps, momentum=1 - module.momentum)
    if isinstance(module, npnet.AvgPool2d):
        return nn.AvgPool2d(module.kernel_size, stride=module.stride, padding=module.padding)
    if isinstance(module, npnet.AdaptiveAvgPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    simple = {npnet.ReLU: nn.ReLU, npnet.Sigmoid: nn.Sigmoid, npnet.Flatten: nn.Flatten,
              npnet.Identity: nn.Identity}
    for npnet_type, torch_type in simple.items():
        if type(module) is npnet_type:
            return torch_type()
    raise TypeError(f"to_torch: no torch counterpart for {module!r}")


# npnet's BatchNorm names -> nn.BatchNorm's
NN_BATCH_NORM_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                       "moving_var": "running_var"}


def copy_weights(model: npnet.Module, torch_model: nn.Module, batch_norm: str) -> None:
    """Every parameter and buffer of the npnet ``model`` into ``torch_model`` (built by
    ``to_torch``), by name; every torch entry must receive one."""
    targets = dict(torch_model.state_dict())
    targets = {name: value for name, value in targets.items()
               if not name.endswith("num_batches_tracked")}
    filled = set()
    for name, value in model.state_dict().items():
        torch_name = name
        if batch_norm == "nn":
            head, _, last = name.rpartition(".")
            torch_name = f"{head}.{NN_BATCH_NORM_NAMES.get(last, last)}"
        target = targets[torch_name]
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.asarray(value)).reshape(target.shape))
        filled.add(torch_name)
    missing = sorted(set(targets) - filled)
    if missing:
        raise RuntimeError(f"copy_weights: torch entries {missing} got no npnet value")


def weight_drift(model: npnet.Module, torch_model: nn.Module, batch_norm: str) -> float:
    """max |w_npnet - w_torch| / max |w_npnet| over every parameter."""
    torch_params = dict(torch_model.named_parameters())
    worst, scale = 0.0, 0.0
    for name, param in model.named_parameters():
        if batch_norm == "nn":
            head, _, last = name.rpartition(".")
            name = f"{head}.{NN_BATCH_NORM_NAMES.get(last, last)}"
        theirs = torch_params[name].detach().numpy().reshape(param.data.shape)
        worst = max(worst, float(np.abs(param.data - theirs).max()))
        scale = max(scale, float(np.abs(param.data).max()))
    return worst / scale


# ------------------------------------------------------------------------------- recipe
def optimizers(args, model: npnet.Module, torch_model: nn.Module):
    """(npnet optimizer, torch optimizer, npnet schedule or None, torch schedule or None)."""
    if args.optimizer == "sgd":
        ours = npnet.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                         weight_decay=args.weight_decay)
        theirs = torch.optim.SGD(torch_model.parameters(), lr=args.lr, momentum=args.momentum,
                                 weight_decay=args.weight_decay)
    else:
        ours = {"adam": npnet.Adam, "adamw": npnet.AdamW}[args.optimizer](
            model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        theirs = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[args.optimizer](
            torch_model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.schedule == "step":
        step_size = args.step_size or max(1, -(-args.epochs // 2))
        return (ours, theirs, npnet.lr_scheduler.StepLR(ours, step_size, gamma=0.1),
                torch.optim.lr_scheduler.StepLR(theirs, step_size, gamma=0.1))
    if args.schedule == "cosine":
        return (ours, theirs, npnet.lr_scheduler.CosineAnnealingLR(ours, T_max=args.epochs),
                torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=args.epochs))
    return ours, theirs, None, None


def torch_epoch(torch_model, optimizer, loader, x_test, y_test) -> dict:
    """One epoch of training on ``loader``'s batches, then the test accuracy."""
    torch_model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for x, y in loader:
        x, y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        optimizer.zero_grad()
        logits = torch_model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(dim=1) == y).sum())
        seen += len(y)
    torch_model.eval()
    right = 0
    with torch.no_grad():
        for begin in range(0, len(x_test), 1000):
            x = torch.from_numpy(x_test[begin:begin + 1000])
            right += int((torch_model(x).argmax(dim=1).numpy()
                          == y_test[begin:begin + 1000]).sum())
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen,
            "test_acc": right / len(x_test), "seconds": time.perf_counter() - start}


def load(args):
    if args.dataset == "sample":
        return load_mnist_sample()
    loader = load_fashion_mnist if args.dataset == "fashion-mnist" else load_mnist
    return loader(root=args.data_dir)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet", "densenet"], default="resnet")
    parser.add_argument("--dataset", choices=["fashion-mnist", "mnist", "sample"],
                        default="fashion-mnist")
    parser.add_argument("--data-dir", help="folder of the IDX files (default: npnet's search)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    parser.add_argument("--lr", type=float, default=None,
                        help="default: 0.1 for SGD, 0.001 for Adam and AdamW "
                             "(train_lenet.py's defaults for these networks)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD only (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="default: 0, and 0.01 for AdamW")
    parser.add_argument("--schedule", choices=["none", "step", "cosine"], default="none")
    parser.add_argument("--step-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="the first N training images only")
    parser.add_argument("--torch-bn", choices=["scratch", "nn"], default="scratch",
                        help="torch's BatchNorm: the seed's from-scratch one, as npnet's "
                             "(default), or nn.BatchNorm2d (unbiased running variance)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, help="pin numpy's BLAS and torch to N threads")
    parser.add_argument("--no-fast", action="store_true",
                        help="npnet: every layer as written, not the fast backend")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.lr is None:
        args.lr = 0.1 if args.optimizer == "sgd" else 1e-3
    if args.weight_decay is None:
        args.weight_decay = 0.01 if args.optimizer == "adamw" else 0.0
    if args.optimizer != "sgd":
        args.momentum = None
    if args.threads:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]

    data = load(args)
    x_train = data.x_train[:args.limit].astype(dtype)
    y_train = data.y_train[:args.limit]
    x_test, y_test = data.x_test.astype(dtype), data.y_test

    npnet.manual_seed(args.seed)
    model = {"resnet": resnet, "densenet": densenet}[args.model]()
    npnet.init_xavier(model)
    model = model.astype(dtype)
    torch_model = to_torch(model, args.torch_bn).to(torch_dtype)
    copy_weights(model, torch_model, args.torch_bn)
    ours, theirs, our_schedule, their_schedule = optimizers(args, model, torch_model)
    # a batch of one image cannot train BatchNorm: leave out such a last batch (both sides)
    drop_last = len(x_train) % args.batch_size == 1
    loader = DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True,
                        seed=args.seed, drop_last=drop_last)
    parameters = sum(param.data.size for param in model.parameters())
    print(f"{args.model} ({parameters:,} parameters) on {args.dataset}: {len(x_train)} "
          f"training, {len(x_test)} test images; {args.optimizer} lr {args.lr:g}"
          + (f" momentum {args.momentum:g}" if args.momentum else "")
          + (f" weight decay {args.weight_decay:g}" if args.weight_decay else "")
          + (f", {args.schedule} schedule" if args.schedule != "none" else "")
          + f", batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, {args.dtype}; "
          f"torch {torch.__version__} with {args.torch_bn} BatchNorm, "
          f"{torch.get_num_threads()} threads", flush=True)
    print(f"{'epoch':>5} | {'npnet: loss':>11} {'train':>6} {'test':>6} {'s':>7} | "
          f"{'torch: loss':>11} {'train':>6} {'test':>6} {'s':>7} | {'weights apart':>13}",
          flush=True)

    history, rows = History(), []
    for epoch in range(1, args.epochs + 1):
        time.sleep(PAUSE)
        start = time.perf_counter()
        fit(model, (x_train, y_train), epochs=1, batch_size=args.batch_size, optimizer=ours,
            seed=args.seed, history=history, progress=False, verbose=False,
            fast=False if args.no_fast else None, drop_last=drop_last)
        test_acc = evaluate(model, x_test, y_test, fast=False if args.no_fast else None)
        npnet_row = {"train_loss": history.train_loss[-1], "train_acc": history.train_acc[-1],
                     "test_acc": test_acc, "seconds": time.perf_counter() - start}
        time.sleep(PAUSE)
        loader.set_epoch(epoch - 1)  # the order fit gave npnet's epoch
        torch_row = torch_epoch(torch_model, theirs, loader, x_test, y_test)
        for schedule in (our_schedule, their_schedule):
            if schedule is not None:
                schedule.step()
        drift = weight_drift(model, torch_model, args.torch_bn)
        rows.append({"epoch": epoch, "npnet": npnet_row, "torch": torch_row,
                     "weights_apart": drift})
        print(f"{epoch:>5} | {npnet_row['train_loss']:>11.4f} {npnet_row['train_acc']:>6.4f} "
              f"{npnet_row['test_acc']:>6.4f} {npnet_row['seconds']:>7.1f} | "
              f"{torch_row['train_loss']:>11.4f} {torch_row['train_acc']:>6.4f} "
              f"{torch_row['test_acc']:>6.4f} {torch_row['seconds']:>7.1f} | {drift:>13.2e}",
              flush=True)
    total = {side: sum(row[side]["seconds"] for row in rows) for side in ("npnet", "torch")}
    print(f"total seconds: npnet {total['npnet']:.1f}, torch {total['torch']:.1f} "
          f"(npnet / torch {total['npnet'] / total['torch']:.2f}x)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"settings": vars(args), "epochs": rows, "total_seconds": total}, file,
                      indent=1)


if __name__ == "__main__":
    main()
