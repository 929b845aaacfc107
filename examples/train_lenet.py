"""Train LeNet (d2l 7.5, 6.6), a small ResNet (7.6) or a small DenseNet (7.7) on MNIST or
Fashion-MNIST.

    python examples/train_lenet.py                           # LeNet-BN on MNIST, 10 epochs
    python examples/train_lenet.py --dataset fashion-mnist   # the book's run in section 7.5
    python examples/train_lenet.py --dataset fashion-mnist --no-batchnorm   # section 6.6
    python examples/train_lenet.py --model resnet --dataset fashion-mnist --epochs 3   # 7.6
    python examples/train_lenet.py --model densenet --optimizer adam --schedule cosine   # 7.7
    python examples/train_lenet.py --dataset sample --epochs 2   # offline, about a minute
    python examples/train_lenet.py --resume --epochs 15      # 5 more epochs of a 10-epoch run
    python examples/train_lenet.py --dataset sample --no-fast   # every layer as written
    python examples/train_lenet.py --update-bn               # BatchNorm statistics re-estimated

The networks (npnet.models): ``lenet()`` with BatchNorm and sigmoids, or the plain sigmoid
LeNet (--no-batchnorm, LeNet only); ``resnet()``, a ResNet-8 of residual blocks with 16, 32
and 64 channels; ``densenet()``, three dense blocks of two layers with transition blocks
between them. All take 1x28x28 images and give 10 logits.

The recipe: Xavier init (the book's train_ch6, for every network), batch size 256, and
--optimizer sgd (default), adam or adamw. The default learning rate is the book's for LeNet
(SGD: 1.0 with BatchNorm, 0.9 without) and 0.1 with momentum 0.9 for the ResNet and the
DenseNet (chosen from short runs on the sample: see RESIDUAL_SGD_LR below); Adam and AdamW
start at 1e-3, PyTorch's default.
--schedule step or cosine changes the learning rate once per epoch (npnet.lr_scheduler).
--update-bn re-estimates every BatchNorm's moving averages from the training images after each
epoch, before the evaluation (npnet.update_bn: one forward pass over them; no weight
changes): at lr 1.0 the moving averages lag behind the weights, and the test accuracy
jumps from epoch to epoch without it (README, "Why the test accuracy jumps").

Training and evaluation run on npnet's fast backend (npnet/fast), which uses a kernel in place
of a layer's own forward and backward only where it has first shown, on a tiny batch, that the
kernel gives what the layer as written gives (a layer that disagrees, e.g. one you edited, runs
as written, with a one-line FastPathWarning). --no-fast runs every layer's own forward and
backward, as written: slower, the same numbers.

Everything goes into one folder (--out, default runs/<dataset>-<bn|plain> for LeNet,
runs/<dataset>-resnet and runs/<dataset>-densenet for the others): checkpoint.npz and
history.json after every epoch, so an interrupted run can be continued with --resume;
learning_curves.png (updated every epoch) and predictions.png at the end. Every file is
replaced atomically, so a run killed at any moment leaves whole files.

The data: without options, full MNIST is found on disk or downloaded, and if neither works
the 5,000-digit MNIST sample shipped with npnet is used instead (one line says why). Asking
for a data set explicitly (--dataset, --data-dir, --no-download) or resuming never falls back:
data that cannot be loaded is then an error.

--resume continues the run in --out only with the settings it was started with (data set,
--limit, --model, --no-batchnorm, --batch-size, --init, --seed, --optimizer, --lr,
--momentum, --weight-decay, --schedule, --step-size, --update-bn, all recorded in the
checkpoint, with the optimizer's and the schedule's state); a different one is refused, saying
which. A resumed run is bitwise the run it continues, its learning-rate schedule included,
when both set --threads (by default npnet picks per pass between one core and two by timing,
and runs agree to float rounding only).

One run at a time writes a folder: a second run with the same --out is refused, naming the
first (its process id); a lock left by a killed run is taken over.

Every failure (data that cannot be loaded, a checkpoint that does not fit, a folder that
cannot be written, a diverging loss, ...) ends with one line on stderr saying what is wrong
and what to do, and exit code 1 (2 for invalid options); Ctrl-C exits with code 130.

Runs from a source checkout without installing npnet: if ``import npnet`` fails, the folder
above examples/ is put on the import path.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import sys
import threading
from pathlib import Path

try:
    import npnet
except ImportError:  # a source checkout without `pip install -e .`: use the repository's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import npnet

from npnet.atomic import (FolderLock, FolderLockedError, FolderNotWritableError,
                          check_folder_writable, remove_stale_temp_files)
from npnet.checkpoint import (CheckpointError, load_checkpoint, read_checkpoint_metadata,
                              save_checkpoint)
from npnet.datasets import (FASHION_MNIST_CLASSES, MNIST_CLASSES, DatasetError,
                            DatasetNotFoundError, load_fashion_mnist, load_mnist,
                            load_mnist_sample)
from npnet.lr_scheduler import CosineAnnealingLR, StepLR
from npnet.models import densenet, lenet, resnet
from npnet.plots import plot_history, plot_predictions
from npnet.train import DivergenceError, History, fit, runner_for

from npnet.batchnorm import BatchTooSmallError

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "sample": "the MNIST sample"}
MODELS = ("lenet", "resnet", "densenet")
OPTIMIZERS = {"sgd": npnet.SGD, "adam": npnet.Adam, "adamw": npnet.AdamW}
SCHEDULES = ("none", "step", "cosine")
FILES = ("checkpoint.npz", "history.json", "learning_curves.png", "predictions.png")
# What a resumed run must share with the run it continues, in the order a mismatch is told.
SETTINGS = ("dataset", "model", "batch_norm", "limit", "batch_size", "init", "seed",
            "optimizer", "lr", "momentum", "weight_decay", "schedule", "step_size", "update_bn")
# SGD's default for the ResNet and the DenseNet, measured on the sample: 3 epochs of the
# 5,000 digits, batch 256, Xavier init; held-out accuracy after epoch 3 (training loss):
#
#                               ResNet seed 0   seed 1         DenseNet seed 0  seed 1
#   lr 0.05 (the book's)       0.532 (1.648)                  0.283 (2.018)
#   lr 0.05, momentum 0.9      0.833 (0.494)                  0.365 (1.312)
#   lr 0.1, momentum 0.9       0.913 (0.264)   0.847 (0.252)  0.546 (0.756)    0.673 (0.733)
#   lr 0.2, momentum 0.9       0.925 (0.192)   0.734 (0.180)  0.549 (0.361)    0.809 (0.421)
#   Adam, lr 0.001             0.904 (0.778)                  0.153 (1.784)
#
# (60 steps in all: BatchNorm's moving averages still lag, so the held-out accuracy jumps.)
# lr 0.1 with momentum 0.9, the ResNet paper's, for both; 0.2 trains faster and is less steady.
RESIDUAL_SGD_LR, RESIDUAL_SGD_MOMENTUM = 0.1, 0.9
ADAM_LR = 1e-3  # PyTorch's default, for every network


class Failure(Exception):
    """A user error: ``main`` prints ``error: <message>`` (one line) and exits with code 1."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line; for an OSError from the system (errno set) its
    reason and file, without the "[Errno 28]"."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror and text.startswith("[Errno"):
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(text.split()) or type(error).__name__


def model_title(model: str, batch_norm: bool = True) -> str:
    if model == "lenet":
        return "LeNet-BN" if batch_norm else "LeNet"
    return {"resnet": "ResNet", "densenet": "DenseNet"}[model]


def run_kind(model: str, batch_norm: bool) -> str:
    """The model's part of the default folder's name: runs/<dataset>-<kind>."""
    if model == "lenet":
        return "bn" if batch_norm else "plain"
    return model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train LeNet with batch normalization (d2l 7.5), the plain sigmoid LeNet "
                    "(d2l 6.6), a small ResNet (d2l 7.6) or a small DenseNet (d2l 7.7) on "
                    "MNIST or Fashion-MNIST with npnet.")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist", "sample"],
                        help="the data: full MNIST or Fashion-MNIST (found on disk or "
                             "downloaded), or the 5,000-digit MNIST sample shipped with npnet "
                             "(offline). Without --dataset, --data-dir, --no-download and "
                             "--resume, MNIST is used if it can be found or downloaded, else "
                             "the sample (default: mnist)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder holding the four IDX files (also searched: $NPNET_DATA, "
                             "~/.cache/npnet, and for Fashion-MNIST /usr/share/datasets); "
                             "downloads go here")
    parser.add_argument("--no-download", action="store_true",
                        help="never download; use only data already on this machine")
    parser.add_argument("--model", choices=MODELS, default="lenet",
                        help="the network (npnet.models): LeNet (with BatchNorm unless "
                             "--no-batchnorm), a small ResNet (a ResNet-8: residual blocks of "
                             "16, 32, 64 channels) or a small DenseNet (3 dense blocks of 2 "
                             "layers) (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="train until this many epochs are done (with --resume, the "
                             "epochs already in the checkpoint count; default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (default: %(default)s)")
    parser.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd",
                        help="npnet.SGD, npnet.Adam or npnet.AdamW (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (the first one, with --schedule). Default: for SGD "
                             "1.0 for LeNet-BN, 0.9 with --no-batchnorm (the book's values), "
                             f"{RESIDUAL_SGD_LR:g} for the ResNet and the DenseNet; "
                             f"{ADAM_LR:g} for Adam and AdamW. With --resume, the run's, and "
                             f"a different --lr is refused")
    parser.add_argument("--momentum", type=float, default=None,
                        help="momentum of SGD (--optimizer sgd only). Default: 0 for LeNet "
                             f"(the book's), {RESIDUAL_SGD_MOMENTUM:g} for the ResNet and the "
                             f"DenseNet; with --resume, the run's")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="weight decay: an L2 penalty's gradient for SGD and Adam, "
                             "decoupled for AdamW. Default: 0, and 0.01 for AdamW (PyTorch's "
                             "defaults); with --resume, the run's")
    parser.add_argument("--schedule", choices=SCHEDULES, default="none",
                        help="change the learning rate once per epoch: step multiplies it by "
                             "0.1 every --step-size epochs (npnet.lr_scheduler.StepLR), cosine "
                             "lowers it along half a cosine to 0 at the end of --epochs "
                             "(CosineAnnealingLR with T_max = --epochs of the first run) "
                             "(default: %(default)s)")
    parser.add_argument("--step-size", type=int, default=None, metavar="N",
                        help="with --schedule step: epochs between two drops of the learning "
                             "rate (default: half of --epochs, rounded up)")
    parser.add_argument("--no-batchnorm", action="store_true",
                        help="train the plain sigmoid LeNet of d2l 6.6 instead of LeNet-BN "
                             "(--model lenet only)")
    parser.add_argument("--update-bn", action="store_true",
                        help="after every epoch, before the evaluation, re-estimate the "
                             "BatchNorm layers' moving averages from the training images at "
                             "the epoch's final weights (npnet.update_bn: one forward pass; "
                             "the weights do not change). At lr 1.0 the moving averages lag "
                             "behind the weights and the test accuracy jumps without it")
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
                             "(default: runs/<dataset>-<bn|plain> for LeNet, "
                             "runs/<dataset>-<model> for the others); one run at a time")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out: load its checkpoint, keep its "
                             "history and epoch count. The data set, --limit, model and "
                             "recipe (--batch-size, --init, --seed, --optimizer, --lr, "
                             "--momentum, --weight-decay, --schedule, --step-size, "
                             "--update-bn) must be the run's")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar, only one line per epoch (for log files)")
    parser.add_argument("--no-fast", action="store_true",
                        help="run every layer's own forward and backward, as written: slower; "
                             "the same numbers. By default training, evaluation and the "
                             "predictions run on npnet's fast backend (npnet/fast), whose "
                             "kernels are each checked against the layers as written first "
                             "(setting the environment variable NPNET_FAST=0 is the same as "
                             "--no-fast)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="cores npnet uses: N workers on the fast backend, each on a "
                             "part of every batch (worker 0 in this process, the others in "
                             "helper processes or threads, NumPy's BLAS at one thread each); "
                             "with --threads 1 NumPy's BLAS is held to one thread as well. A "
                             "run with --threads set repeats bit for bit, and --resume "
                             "continues it bit for bit. Default: the environment variable "
                             "NPNET_THREADS, else the cores this process may use (at most 2), "
                             "each pass split over them or run on one, whichever is faster at "
                             "the moment (a busy machine): two such runs agree to float "
                             "rounding, not bit for bit")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be 1 or more; got {args.threads}")
    if args.epochs < 0 or args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--epochs must be >= 0, --batch-size and --limit >= 1")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error("--lr must be a number > 0")
    for name in ("momentum", "weight_decay"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            parser.error(f"--{name.replace('_', '-')} must be a number >= 0")
    if args.no_batchnorm and args.update_bn:
        parser.error("--update-bn re-estimates the statistics of BatchNorm layers, and the "
                     "plain LeNet (--no-batchnorm) has none")
    if args.no_batchnorm and args.model != "lenet":
        parser.error(f"--no-batchnorm applies to --model lenet only: the "
                     f"{model_title(args.model)} is built with batch normalization")
    if args.momentum is not None and args.optimizer != "sgd":
        parser.error(f"--momentum applies to --optimizer sgd only ({args.optimizer}'s running "
                     f"means, betas (0.9, 0.999), play its part)")
    if args.step_size is not None and args.schedule != "step":
        parser.error("--step-size applies to --schedule step only")
    if args.step_size is not None and args.step_size < 1:
        parser.error("--step-size must be >= 1")
    return args


def default_recipe(args, batch_norm: bool) -> dict:
    """The optimizer's settings this run gets without --lr, --momentum, --weight-decay,
    --step-size (a resumed run takes the run's instead)."""
    if args.optimizer != "sgd":
        lr, momentum = ADAM_LR, None
    elif args.model == "lenet":
        lr, momentum = (1.0 if batch_norm else 0.9), 0.0
    else:
        lr, momentum = RESIDUAL_SGD_LR, RESIDUAL_SGD_MOMENTUM
    return {"lr": lr, "momentum": momentum,
            "weight_decay": 0.01 if args.optimizer == "adamw" else 0.0,
            "step_size": max(1, math.ceil(args.epochs / 2)) if args.schedule == "step" else None}


def build_model(name: str, batch_norm: bool):
    if name == "lenet":
        return lenet(batch_norm=batch_norm)
    return resnet() if name == "resnet" else densenet()


def make_optimizer(config: dict, params):
    kind = OPTIMIZERS[config["optimizer"]]
    if config["optimizer"] == "sgd":
        return kind(params, lr=config["lr"], momentum=config["momentum"],
                    weight_decay=config["weight_decay"])
    return kind(params, lr=config["lr"], weight_decay=config["weight_decay"])


def make_scheduler(config: dict, optimizer, epochs: int):
    """The schedule asked for, or None. It steps after every epoch (save_run below)."""
    if config["schedule"] == "step":
        return StepLR(optimizer, step_size=config["step_size"], gamma=0.1)
    if config["schedule"] == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    return None


def recipe_text(config: dict, scheduler) -> str:
    """``SGD, lr 0.1, momentum 0.9``, ``AdamW, lr 0.001, weight decay 0.01, cosine ...``."""
    name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[config["optimizer"]]
    parts = [name, f"lr {config['lr']}"]
    if config["optimizer"] == "sgd" and config["momentum"]:
        parts.append(f"momentum {config['momentum']:g}")
    if config["weight_decay"]:
        parts.append(f"weight decay {config['weight_decay']:g}")
    if isinstance(scheduler, StepLR):
        parts.append(f"lr x0.1 every {scheduler.step_size} epochs")
    elif isinstance(scheduler, CosineAnnealingLR):
        parts.append(f"cosine schedule to 0 over {scheduler.T_max} epochs")
    return ", ".join(parts)


def main(argv=None) -> None:
    args = parse_args(argv)
    # matplotlib is imported where npnet plots, i.e. after the first epoch; import it now, so
    # that a Ctrl-C cannot land in the middle of that import (which Python then reports as
    # a confusing RuntimeError instead of the interruption)
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    status = {"interrupted": "interrupted; nothing was saved"}
    restore_sigterm = stop_on_sigterm()
    if args.threads is not None:
        use_threads(args.threads)
    try:
        train(args, status)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM: the lock and temporary files are gone
        print(status["interrupted"], file=sys.stderr)
        sys.exit(130)
    finally:
        restore_sigterm()


def use_threads(threads: int) -> None:
    """--threads: the FastNets that fit and evaluate make take ``threads`` workers; with one,
    NumPy's BLAS is held to one thread too (threadpoolctl), for the whole run."""
    os.environ["NPNET_THREADS"] = str(threads)
    if threads == 1:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1, user_api="blas")


def stop_on_sigterm():
    """Make SIGTERM (``kill``) stop the run like Ctrl-C, so that it cleans up (the folder's
    lock, a half-written temporary file). Returns a function that restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):  # someone else handles it: leave it alone
        return lambda: None

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def train(args, status: dict) -> None:
    batch_norm = args.model != "lenet" or not args.no_batchnorm
    kind = run_kind(args.model, batch_norm)
    asked = args.dataset or "mnist"
    # Only a first run with no data option may fall back to the sample.
    may_fall_back = not (args.resume or args.dataset or args.data_dir or args.no_download)

    # The network and its initial weights, from one seed.
    npnet.manual_seed(args.seed)
    model = build_model(args.model, batch_norm)
    if args.init == "xavier":
        npnet.init_xavier(model)
    # room for a checkpoint (weights, up to two optimizer arrays per weight) and its
    # temporary copy, and the plots
    need_bytes = 6 * sum(value.nbytes for value in model.state_dict().values()) + 2_000_000

    with contextlib.ExitStack() as stack:
        out = recorded = None
        if args.out is not None or args.resume:  # the folder is known: check it first
            out = args.out or Path("runs") / f"{asked}-{kind}"
            if args.resume:
                require_checkpoint(args, out, asked, kind)
            open_out(out, stack, need_bytes)
        if args.resume:
            recorded = check_resume(args, out, asked, batch_norm)
        dataset, data, class_names = load_data(args, asked, may_fall_back, out, recorded)
        if out is None:
            out = Path("runs") / f"{dataset}-{kind}"
            open_out(out, stack, need_bytes)
        x_train, y_train = data.x_train[:args.limit], data.y_train[:args.limit]
        name = model_title(args.model, batch_norm)
        if batch_norm and len(x_train) < 2:  # BatchNorm normalizes over the images of a batch
            raise Failure(f"{name} cannot train on {len(x_train)} image: batch normalization "
                          f"needs 2 or more per batch; use --limit 2 or more"
                          + (", or --no-batchnorm" if args.model == "lenet" else ""))
        checkpoint_path = out / "checkpoint.npz"
        # the recipe: what was asked, else (resuming) the run's, else the defaults
        defaults = default_recipe(args, batch_norm)
        config = {"dataset": dataset, "model": args.model, "batch_norm": batch_norm,
                  "batch_size": args.batch_size, "init": args.init, "seed": args.seed,
                  "limit": args.limit, "optimizer": args.optimizer}
        for key in ("lr", "momentum", "weight_decay", "step_size"):
            value = getattr(args, key)
            if value is None and args.resume:
                value = recorded["extra"].get(key)
            config[key] = defaults[key] if value is None else value
        config.update({"update_bn": args.update_bn, "schedule": args.schedule,
                       "scheduler": None,
                       "train_images": len(x_train), "test_images": len(data.x_test),
                       "data_dir": args.data_dir})
        optimizer = make_optimizer(config, model.parameters())
        scheduler = make_scheduler(config, optimizer, args.epochs)
        history = History()
        saved_epoch = None  # the epoch checkpoint_path holds for this run

        if args.resume:
            for key in ("train_images", "test_images"):
                if recorded["extra"].get(key, config[key]) != config[key]:
                    raise Failure(f"--resume: the run in {out} trained with "
                                  f"{recorded['extra'][key]} {key.replace('_', ' ')}, this "
                                  f"one has {config[key]}: other data. Pass the run's data "
                                  f"options, or choose a new --out for a new run")
            history = resume(checkpoint_path, model, optimizer, scheduler, recorded, args)
            saved_epoch = len(history)
            # what the checkpoints of this run go on recording: where its data was if this
            # run did not say
            config["data_dir"] = args.data_dir or recorded["extra"].get("data_dir")
            print(f"resuming {checkpoint_path} after epoch {len(history)}")
            if len(history) >= args.epochs:
                print(f"it has already trained {len(history)} epochs; raise --epochs to "
                      f"train more")
        elif checkpoint_path.exists():
            print(f"note: starting a new run in {out}, replacing its files (--resume "
                  f"continues the saved run instead)")

        # fit's fast=None: the fast backend (unless NPNET_FAST=0); False: the layers as written
        fast = False if args.no_fast else None
        now = dict(config, lr=optimizer.lr)  # a resumed schedule: the lr of the next epoch
        print(f"{name} on {TITLES[dataset]}: {len(x_train)} training and {len(data.x_test)} "
              f"test images; {recipe_text(now, scheduler)}, batch size {args.batch_size}, "
              f"{args.epochs} epochs, {args.init} init, seed {args.seed}"
              + ("; BatchNorm statistics re-estimated after every epoch (--update-bn)"
                 if args.update_bn else "")
              + ("; every layer as written (--no-fast)" if args.no_fast else ""))
        title = f"{name} on {TITLES[dataset]}"
        resume_hint = "continue with the same options and --resume" + (
            f" --out {out}" if args.out is not None else "")

        def say_where_we_are():
            status["interrupted"] = (
                f"interrupted; {checkpoint_path} holds epoch {saved_epoch}: {resume_hint}"
                if saved_epoch else "interrupted before the first epoch ended; nothing saved")

        def save_run(epoch: int, history: History) -> None:
            """After every epoch: the next epoch's learning rate, then everything needed to
            resume (the schedule's position with the rest), and the curves so far."""
            nonlocal saved_epoch
            if scheduler is not None:
                scheduler.step()  # once per epoch, after its optimizer steps, as in PyTorch
                config["scheduler"] = scheduler.state_dict()
                if epoch < args.epochs:
                    print(f"  lr {optimizer.lr:.4g} for epoch {epoch + 1}", flush=True)
            try:
                save_checkpoint(checkpoint_path, model, optimizer, epoch=epoch,
                                history=history, extra=config)
                saved_epoch = epoch
                say_where_we_are()
                history.save(out / "history.json")
                plot_history(history, out / "learning_curves.png", title=title)
            except OSError as error:
                raise SaveFailed(epoch, error) from error

        # A BatchNorm network cannot train on a last batch of one image: leave it out
        drop_last = batch_norm and len(x_train) > 1 and len(x_train) % args.batch_size == 1
        say_where_we_are()
        try:
            fit(model, (x_train, y_train), (data.x_test, data.y_test),
                epochs=max(args.epochs - len(history), 0), batch_size=args.batch_size,
                optimizer=optimizer, seed=args.seed, history=history, on_epoch_end=save_run,
                progress=not args.no_progress, fast=fast, drop_last=drop_last,
                update_bn=args.update_bn)
        except DivergenceError as error:
            raise Failure(f"{one_line(error)} ({checkpoint_path} holds epoch {saved_epoch}; "
                          f"a lower --lr needs a new --out)" if saved_epoch
                          else one_line(error)) from None
        except BatchTooSmallError as error:
            raise Failure(one_line(error)) from None
        except SaveFailed as error:
            kept = (f"{checkpoint_path} holds epoch {saved_epoch}: fix this, then "
                    f"{resume_hint}" if saved_epoch else "nothing was saved")
            raise Failure(f"{error}; {kept}") from None

        if len(history) == 0:
            print("no epochs trained (--epochs 0)")
            return
        try:
            plot_history(history, out / "learning_curves.png", title=title)
            # what runs the model for the predictions: a FastNet over it, or (--no-fast) it
            plot_predictions(runner_for(model, fast), data.x_test, data.y_test, class_names,
                             out / "predictions.png")
        except OSError as error:
            raise Failure(f"could not save the plots in {out}: {one_line(error)} (the "
                          f"checkpoint holds epoch {len(history)})") from None
        best = history.best_epoch()
        print(f"final test acc {history.test_acc[-1]:.3f} (epoch {len(history)}), best "
              f"{history.test_acc[best - 1]:.3f} (epoch {best})")
        print(f"files in {out}/: checkpoint.npz, history.json, learning_curves.png, "
              f"predictions.png")


class SaveFailed(Exception):
    """Writing the run's files after an epoch failed (full disk, a folder removed, ...)."""

    def __init__(self, epoch: int, error: OSError):
        super().__init__(f"could not save epoch {epoch}: {one_line(error)}")


# ------------------------------------------------------------------------ the folder
def open_out(out: Path, stack: contextlib.ExitStack, need_bytes: int) -> None:
    """Make sure the run's results can be written to ``out`` before any work: it is (or can
    be made) a folder, none of the run's file names is taken by a folder, no other run
    writes there (lock it until the end), it can be written and has room. Deletes the
    temporary files a killed run left there."""
    fix = "choose another --out"
    if out.exists() and not out.is_dir():
        raise Failure(f"{out} is a file, not a folder: the run writes its files into a "
                      f"folder; {fix}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Failure(f"cannot create the folder {out}: {error.strerror or one_line(error)}; "
                      f"{fix}") from None
    for name in FILES:
        path = out / name
        if path.exists() and not path.is_file():
            raise Failure(f"{path} is a folder (or other non-file), where the run writes its "
                          f"{name}: remove or rename it, or {fix}")
    try:
        lock = stack.enter_context(FolderLock(out))
    except FolderLockedError as error:
        raise Failure(f"{error}; wait for it to finish, or {fix}") from None
    except OSError as error:
        raise Failure(f"cannot write in {out}: {error.strerror or one_line(error)}; "
                      f"{fix}") from None
    if lock.note:
        print(f"note: {lock.note}")
    stale = remove_stale_temp_files(out)
    if stale:
        print(f"note: deleted {len(stale)} temporary file(s) in {out} left by a run that was "
              f"killed while saving ({', '.join(path.name for path in stale)})")
    try:
        check_folder_writable(out, need_bytes)
    except FolderNotWritableError as error:
        more = "free some space or " if error.errno == errno.ENOSPC else ""
        raise Failure(f"{error}; {more}{fix}") from None


# ------------------------------------------------------------------------ resuming
def require_checkpoint(args, out: Path, asked: str, kind: str) -> None:
    """Failure unless ``out`` holds a checkpoint to resume (naming another run that the user
    may have meant)."""
    checkpoint_path = out / "checkpoint.npz"
    if not checkpoint_path.exists():
        message = (f"--resume: there is no {checkpoint_path} to continue; run without --resume "
                   f"first (or pass the run's folder with --out)")
        if args.out is None:  # the default folder of other options: say how to continue it
            kinds = {"bn": ("a LeNet-BN", ""), "plain": ("a plain LeNet", " --no-batchnorm"),
                     "resnet": ("a ResNet", " --model resnet"),
                     "densenet": ("a DenseNet", " --model densenet")}
            others = [(name, other) for name in TITLES for other in kinds
                      if (name, other) != (asked, kind)
                      and (Path("runs") / f"{name}-{other}" / "checkpoint.npz").is_file()]
            message += "".join(
                f"; runs/{name}-{other} holds {kinds[other][0]} run on {TITLES[name]}: "
                f"continue it with --dataset {name}{kinds[other][1]} --resume"
                for name, other in others)
        raise Failure(message)


def check_resume(args, out: Path, asked: str, batch_norm: bool) -> dict:
    """The checkpoint's metadata, if the run in ``out`` can be continued with these options;
    else Failure saying which setting differs and how to continue."""
    checkpoint_path = out / "checkpoint.npz"
    try:
        metadata = read_checkpoint_metadata(checkpoint_path)
    except (CheckpointError, OSError) as error:
        raise Failure(f"--resume: {one_line(error)}; start a new run with a new --out (or "
                      f"without --resume, which replaces it)") from None
    recorded = metadata["extra"]
    if not isinstance(recorded, dict) or not {"dataset", "batch_norm"} <= set(recorded):
        raise Failure(f"--resume: {checkpoint_path} does not record the settings it was "
                      f"trained with (it was not written by this example), so it cannot be "
                      f"continued safely; choose a new --out for a new run")
    recorded = {**older_runs_recipe(metadata["optimizer"]), **recorded}
    asked_settings = {"dataset": asked, "model": args.model, "batch_norm": batch_norm,
                      "limit": args.limit, "batch_size": args.batch_size, "init": args.init,
                      "seed": args.seed, "optimizer": args.optimizer,
                      "schedule": args.schedule, "update_bn": args.update_bn}
    for key in ("lr", "momentum", "weight_decay", "step_size"):
        if getattr(args, key) is not None:  # without the option the run's is used
            asked_settings[key] = getattr(args, key)
    differ = [key for key in SETTINGS if key in asked_settings and key in recorded
              and recorded[key] != asked_settings[key]]
    if "model" in differ:  # the model's option says it all (with --no-batchnorm for LeNet)
        differ = [key for key in differ if key != "batch_norm"]
    if "optimizer" in differ:  # momentum belongs to SGD alone
        differ = [key for key in differ if key != "momentum"]
    if differ:
        def setting(key, settings):
            return (settings["model"], settings["batch_norm"]) if key == "model" \
                else settings[key]
        told = "; ".join(f"it was trained {how(key, setting(key, recorded))}, this run "
                         f"{how(key, setting(key, asked_settings))}" for key in differ)
        same = ", ".join(option(key, setting(key, recorded)) for key in differ)
        raise Failure(f"--resume: {checkpoint_path} holds a run with other settings: {told}. "
                      f"To continue it, use its options ({same}); for a new run, choose a "
                      f"new --out")
    return {**metadata, "extra": recorded}


def older_runs_recipe(optimizer: dict | None) -> dict:
    """What a checkpoint of an earlier version of this example (LeNet and SGD only, no
    schedule, no --update-bn) did not record, from its optimizer's settings where they tell."""
    settings = (optimizer or {}).get("settings", {})
    return {"model": "lenet",
            "optimizer": (optimizer or {}).get("type", "SGD").lower(),
            "lr": settings.get("lr"), "momentum": settings.get("momentum", 0.0),
            "weight_decay": settings.get("weight_decay", 0.0),
            "schedule": "none", "step_size": None, "scheduler": None, "update_bn": False}


def how(key: str, value) -> str:
    """A recorded setting as options: ``with --batch-size 128``, ``without --limit``."""
    if key == "model":
        model, batch_norm = value
        if model == "lenet" and not batch_norm:
            return "with --model lenet --no-batchnorm (the plain LeNet)"
        return f"with --model {model} ({model_title(model)})"
    if key == "batch_norm":
        return "without --no-batchnorm (LeNet-BN)" if value else \
            "with --no-batchnorm (the plain LeNet)"
    if key == "update_bn":
        return "with --update-bn" if value else "without --update-bn"
    if value is None:
        return f"without --{key.replace('_', '-')}"
    if key in ("lr", "momentum", "weight_decay"):
        return f"with --{key.replace('_', '-')} {value:g}"
    return f"with --{key.replace('_', '-')} {value}"


def option(key: str, value) -> str:
    """What to pass to get a recorded setting back: ``--batch-size 128``, ``no --limit``."""
    if key == "model":
        model, batch_norm = value
        return f"--model {model}" + ("" if batch_norm or model != "lenet" else " --no-batchnorm")
    if key == "batch_norm":
        return "no --no-batchnorm" if value else "--no-batchnorm"
    if key == "update_bn":
        return "--update-bn" if value else "no --update-bn"
    if value is None:
        return f"no --{key.replace('_', '-')}"
    if key in ("lr", "momentum", "weight_decay", "step_size"):
        return f"--{key.replace('_', '-')} {value:g} or no --{key.replace('_', '-')}"
    return f"--{key.replace('_', '-')} {value}"


def resume(checkpoint_path: Path, model, optimizer, scheduler, recorded: dict,
           args) -> History:
    """Load the checkpoint into the model and the optimizer, and the schedule's position
    (recorded with the run's settings) into ``scheduler``; its History."""
    if scheduler is not None:
        state = recorded["extra"].get("scheduler")
        try:
            if state is None:
                raise ValueError("it records no state of its schedule")
            scheduler.load_state_dict(state)
        except (TypeError, ValueError, KeyError) as error:
            raise Failure(f"--resume: {checkpoint_path}: {one_line(error)}; the file was "
                          f"changed, or choose a new --out for a new run") from None
        if isinstance(scheduler, CosineAnnealingLR) and args.epochs > scheduler.T_max:
            raise Failure(f"--resume: the run in {checkpoint_path.parent} lowers the learning "
                          f"rate to 0 over {scheduler.T_max} epochs (--schedule cosine); past "
                          f"them it would rise again. Resume with --epochs {scheduler.T_max} "
                          f"or fewer, or choose a new --out for a new run")
    try:
        saved = load_checkpoint(checkpoint_path, model, optimizer)
    except (CheckpointError, OSError) as error:
        # which network the file holds, by its entries (BatchNorm has moving averages)
        hint = ""
        if args.model == "lenet":
            holds_bn = any(name.endswith("moving_mean") for name in recorded["entries"])
            if holds_bn != (not args.no_batchnorm):
                hint = (" (it holds LeNet-BN: resume without --no-batchnorm)" if holds_bn
                        else " (it holds the plain LeNet: resume with --no-batchnorm)")
        raise Failure(f"--resume: {one_line(error)}{hint}; or choose a new --out for a new "
                      f"run") from None
    history = saved["history"] or History()
    if saved["epoch"] is not None and saved["epoch"] != len(history):
        raise Failure(f"--resume: {checkpoint_path} says epoch {saved['epoch']} but holds the "
                      f"history of {len(history)} epochs: the file was changed; choose a new "
                      f"--out for a new run")
    return history


# ------------------------------------------------------------------------ the data
def load_data(args, asked: str, may_fall_back: bool, out: Path | None, recorded: dict | None):
    """The data set asked for, as (dataset name actually used, TrainTestData, class names).

    Full MNIST that cannot be loaded falls back to the sample only when ``may_fall_back``
    (a first run with no data option); otherwise every data failure is a Failure."""
    if asked == "sample":
        return "sample", load_sample(), MNIST_CLASSES
    loader, class_names = ((load_mnist, MNIST_CLASSES) if asked == "mnist"
                           else (load_fashion_mnist, FASHION_MNIST_CLASSES))
    try:
        return asked, loader(root=args.data_dir, download=not args.no_download), class_names
    except (DatasetError, OSError) as error:  # OSError: an npnet that did not wrap one
        reason = one_line(error)
        not_found = isinstance(error, (DatasetNotFoundError, FileNotFoundError))
    if may_fall_back:
        what = ("MNIST is not on this machine and could not be downloaded" if not_found
                else "MNIST could not be loaded")
        print(f"{what}; training on the 5,000-digit MNIST sample shipped with npnet instead "
              f"(see --data-dir). Reason: {reason}")
        return "sample", load_sample(), MNIST_CLASSES
    if recorded is not None:
        where = recorded["extra"].get("data_dir")
        raise Failure(f"{reason} (--resume: the run in {out} was trained on {TITLES[asked]}"
                      f"{f' from --data-dir {where}' if where else ''}: pass --data-dir with "
                      f"the folder that holds it)")
    raise Failure(f"{reason} (--dataset sample trains on the MNIST sample shipped with npnet)")


def load_sample():
    try:
        return load_mnist_sample()
    except (DatasetError, OSError) as error:
        raise Failure(one_line(error)) from None


if __name__ == "__main__":
    main()
