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
Every file is replaced atomically, so a run killed at any moment leaves whole files.

The data: without options, full MNIST is found on disk or downloaded, and if neither works
the 5,000-digit MNIST sample shipped with npnet is used instead (one line says why). Asking
for a data set explicitly (--dataset, --data-dir, --no-download) or resuming never falls back:
data that cannot be loaded is then an error.

--resume continues the run in --out only with the settings it was started with (data set,
--limit, model, --batch-size, --init, --seed, --lr, all recorded in the checkpoint); a
different one is refused, saying which.

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
from npnet.models import lenet
from npnet.plots import plot_history, plot_predictions
from npnet.train import DivergenceError, History, fit, runner_for

from npnet.batchnorm import BatchTooSmallError

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "sample": "the MNIST sample"}
FILES = ("checkpoint.npz", "history.json", "learning_curves.png", "predictions.png")
# What a resumed run must share with the run it continues, in the order a mismatch is told.
SETTINGS = ("dataset", "batch_norm", "limit", "batch_size", "init", "seed", "lr")


class Failure(Exception):
    """A user error: ``main`` prints ``error: <message>`` (one line) and exits with code 1."""


def one_line(error: BaseException) -> str:
    """An exception's message on one line; for an OSError from the system (errno set) its
    reason and file, without the "[Errno 28]"."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror and text.startswith("[Errno"):
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    return " ".join(text.split()) or type(error).__name__


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train LeNet with batch normalization (d2l 7.5), or the plain sigmoid "
                    "LeNet (d2l 6.6), on MNIST or Fashion-MNIST with npnet.")
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
    parser.add_argument("--epochs", type=int, default=10,
                        help="train until this many epochs are done (with --resume, the "
                             "epochs already in the checkpoint count; default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate of SGD (default: 1.0 with batch normalization, "
                             "0.9 with --no-batchnorm, the book's values; with --resume, the "
                             "run's, and a different --lr is refused)")
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
                             "(default: runs/<dataset>-<bn|plain>); one run at a time")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out: load its checkpoint, keep its "
                             "history and epoch count. The data set, --limit, model and "
                             "recipe (--batch-size, --init, --seed, --lr) must be the run's")
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
    if args.lr is not None and not args.lr > 0:
        parser.error("--lr must be a number > 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # matplotlib is imported where npnet plots, i.e. after the first epoch; import it now, so
    # that a Ctrl-C cannot land in the middle of that import (which Python then reports as
    # a confusing RuntimeError instead of the interruption)
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    status = {"interrupted": "interrupted; nothing was saved"}
    restore_sigterm = stop_on_sigterm()
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
    batch_norm = not args.no_batchnorm
    kind = "bn" if batch_norm else "plain"
    asked = args.dataset or "mnist"
    # Only a first run with no data option may fall back to the sample.
    may_fall_back = not (args.resume or args.dataset or args.data_dir or args.no_download)

    # The network, its initial weights and the optimizer, all from one seed.
    npnet.manual_seed(args.seed)
    model = lenet(batch_norm=batch_norm)
    if args.init == "xavier":
        npnet.init_xavier(model)
    lr = args.lr if args.lr is not None else (1.0 if batch_norm else 0.9)
    optimizer = npnet.SGD(model.parameters(), lr=lr)
    # room for a checkpoint (weights, optimizer state) and its temporary copy, and the plots
    need_bytes = 3 * sum(value.nbytes for value in model.state_dict().values()) + 2_000_000

    with contextlib.ExitStack() as stack:
        out = recorded = None
        if args.out is not None or args.resume:  # the folder is known: check it first
            out = args.out or Path("runs") / f"{asked}-{kind}"
            if args.resume:
                require_checkpoint(args, out, asked, batch_norm)
            open_out(out, stack, need_bytes)
        if args.resume:
            recorded = check_resume(args, out, asked, batch_norm)
        dataset, data, class_names = load_data(args, asked, may_fall_back, out, recorded)
        if out is None:
            out = Path("runs") / f"{dataset}-{kind}"
            open_out(out, stack, need_bytes)
        x_train, y_train = data.x_train[:args.limit], data.y_train[:args.limit]
        if batch_norm and len(x_train) < 2:  # BatchNorm normalizes over the images of a batch
            raise Failure(f"LeNet-BN cannot train on {len(x_train)} image: batch normalization "
                          f"needs 2 or more per batch; use --limit 2 or more, or "
                          f"--no-batchnorm")
        checkpoint_path = out / "checkpoint.npz"
        config = {"dataset": dataset, "batch_norm": batch_norm, "batch_size": args.batch_size,
                  "init": args.init, "seed": args.seed, "limit": args.limit, "lr": lr,
                  "train_images": len(x_train), "test_images": len(data.x_test),
                  "data_dir": args.data_dir}
        history = History()
        saved_epoch = None  # the epoch checkpoint_path holds for this run

        if args.resume:
            for key in ("train_images", "test_images"):
                if recorded["extra"].get(key, config[key]) != config[key]:
                    raise Failure(f"--resume: the run in {out} trained with "
                                  f"{recorded['extra'][key]} {key.replace('_', ' ')}, this "
                                  f"one has {config[key]}: other data. Pass the run's data "
                                  f"options, or choose a new --out for a new run")
            history = resume(checkpoint_path, model, optimizer, recorded, batch_norm)
            saved_epoch = len(history)
            # what the checkpoints of this run go on recording: the run's lr (the optimizer's
            # now), and where its data was if this run did not say
            config["lr"] = optimizer.lr
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
        name = "LeNet-BN" if batch_norm else "LeNet"
        print(f"{name} on {TITLES[dataset]}: {len(x_train)} training and {len(data.x_test)} "
              f"test images; lr {optimizer.lr}, batch size {args.batch_size}, {args.epochs} "
              f"epochs, {args.init} init, seed {args.seed}"
              + ("; every layer as written (--no-fast)" if args.no_fast else ""))
        title = f"{name} on {TITLES[dataset]}"
        resume_hint = "continue with the same options and --resume" + (
            f" --out {out}" if args.out is not None else "")

        def say_where_we_are():
            status["interrupted"] = (
                f"interrupted; {checkpoint_path} holds epoch {saved_epoch}: {resume_hint}"
                if saved_epoch else "interrupted before the first epoch ended; nothing saved")

        def save_run(epoch: int, history: History) -> None:
            """After every epoch: everything needed to resume, and the curves so far."""
            nonlocal saved_epoch
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
                progress=not args.no_progress, fast=fast, drop_last=drop_last)
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
def require_checkpoint(args, out: Path, asked: str, batch_norm: bool) -> None:
    """Failure unless ``out`` holds a checkpoint to resume (naming another run that the user
    may have meant)."""
    checkpoint_path = out / "checkpoint.npz"
    if not checkpoint_path.exists():
        message = (f"--resume: there is no {checkpoint_path} to continue; run without --resume "
                   f"first (or pass the run's folder with --out)")
        if args.out is None:  # the default folder of other options: say how to continue it
            mine = (asked, "bn" if batch_norm else "plain")
            others = [(name, kind) for name in TITLES for kind in ("bn", "plain")
                      if (name, kind) != mine
                      and (Path("runs") / f"{name}-{kind}" / "checkpoint.npz").is_file()]
            message += "".join(
                f"; runs/{name}-{kind} holds a {'LeNet-BN' if kind == 'bn' else 'plain LeNet'} "
                f"run on {TITLES[name]}: continue it with --dataset {name}"
                f"{' --no-batchnorm' if kind == 'plain' else ''} --resume"
                for name, kind in others)
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
    recorded = dict(recorded)
    if "lr" not in recorded and metadata["optimizer"] is not None:
        recorded["lr"] = metadata["optimizer"]["settings"].get("lr")
    asked_settings = {"dataset": asked, "batch_norm": batch_norm, "limit": args.limit,
                      "batch_size": args.batch_size, "init": args.init, "seed": args.seed}
    if args.lr is not None:  # without --lr the run's is used
        asked_settings["lr"] = args.lr
    differ = [key for key in SETTINGS if key in asked_settings and key in recorded
              and recorded[key] != asked_settings[key]]
    if differ:
        told = "; ".join(f"it was trained {how(key, recorded[key])}, this run "
                         f"{how(key, asked_settings[key])}" for key in differ)
        same = ", ".join(option(key, recorded[key]) for key in differ)
        raise Failure(f"--resume: {checkpoint_path} holds a run with other settings: {told}. "
                      f"To continue it, use its options ({same}); for a new run, choose a "
                      f"new --out")
    return {**metadata, "extra": recorded}


def how(key: str, value) -> str:
    """A recorded setting as options: ``with --batch-size 128``, ``without --limit``."""
    if key == "batch_norm":
        return "without --no-batchnorm (LeNet-BN)" if value else \
            "with --no-batchnorm (the plain LeNet)"
    if value is None:
        return f"without --{key.replace('_', '-')}"
    if key == "lr":
        return f"with --lr {value:g}"
    return f"with --{key.replace('_', '-')} {value}"


def option(key: str, value) -> str:
    """What to pass to get a recorded setting back: ``--batch-size 128``, ``no --limit``."""
    if key == "batch_norm":
        return "no --no-batchnorm" if value else "--no-batchnorm"
    if value is None:
        return f"no --{key.replace('_', '-')}"
    if key == "lr":
        return f"--lr {value:g} or no --lr"
    return f"--{key.replace('_', '-')} {value}"


def resume(checkpoint_path: Path, model, optimizer, recorded: dict, batch_norm: bool) -> History:
    """Load the checkpoint into the model and the optimizer; its History."""
    try:
        saved = load_checkpoint(checkpoint_path, model, optimizer)
    except (CheckpointError, OSError) as error:
        # which network the file holds, by its entries (BatchNorm has moving averages)
        holds_bn = any(name.endswith("moving_mean") for name in recorded["entries"])
        hint = ""
        if holds_bn != batch_norm:
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
