"""examples/train_lenet.py when things go wrong (issue #10): every failure is one line on stderr
and exit code 1 (130 for Ctrl-C), before the first epoch where it can be told then, and nothing
of a run is lost or mixed up: no silent switch of data on --resume, no other run's files
overwritten, no truncated or stale files.

Most tests call the example's ``main`` in this process (fast: no interpreter start); a few run
it as a user does, in a subprocess, to see that no traceback reaches the terminal. Nothing uses
the network: downloads go to a closed port on 127.0.0.1, and any other connection fails the
test (``no_network``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import npnet
from npnet.atomic import FolderLock
from npnet.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "train_lenet.py"
# a tiny run on the shipped sample: two steps of 32 images per epoch
TINY = ["--dataset", "sample", "--limit", "64", "--batch-size", "32"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DEAD_MIRROR = f"http://127.0.0.1:{closed_port()}/mnist/"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Only connections to this machine; anything else fails the test."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    local = ("127.0.0.1", "localhost", "::1")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            raise AssertionError(f"the test tried to connect to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in local:
            raise AssertionError(f"the test tried to look up {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module")
def example():
    """examples/train_lenet.py as a module; its downloads go to a closed port."""
    spec = importlib.util.spec_from_file_location("train_lenet_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("load_mnist", "load_fashion_mnist"):
        setattr(module, name, functools.partial(getattr(module, name), mirrors=[DEAD_MIRROR]))
    return module


class Result(NamedTuple):
    code: int
    out: str
    err: str


def invoke(example, folder: Path, *args: str) -> Result:
    """Run the example's main(args) in ``folder``, as its own user: no data anywhere but in
    folder/data (empty), caches and home inside ``folder``."""
    (folder / "data").mkdir(exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        for name, value in {"NPNET_DATA": folder / "data", "HOME": folder,
                            "XDG_CACHE_HOME": folder / "cache",
                            "NPNET_MNIST_MIRRORS": DEAD_MIRROR,
                            "NPNET_FASHION_MNIST_MIRRORS": DEAD_MIRROR}.items():
            patch.setenv(name, str(value))
        patch.chdir(folder)
        # nor where Debian's dataset-fashion-mnist package puts Fashion-MNIST (this machine
        # has it)
        patch.setattr(npnet.datasets.mnist, "FASHION_MNIST_SYSTEM_DIRS", [])
        try:
            example.main([*args, "--no-progress"])
            code = 0
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def run(example, tmp_path):
    return functools.partial(invoke, example, tmp_path)


def assert_one_line_error(result: Result, *phrases: str) -> str:
    """Exit code 1 and one line on stderr, starting with "error: " and holding ``phrases``."""
    assert result.code == 1, result
    line = result.err.rstrip("\n")
    assert line.startswith("error: ") and "\n" not in line, result.err
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    return line


@pytest.fixture(scope="module")
def saved_runs(example, tmp_path_factory):
    """One epoch of a tiny LeNet-BN run in bn/ and of the plain LeNet in plain/."""
    folder = tmp_path_factory.mktemp("saved_runs")
    for out, extra in (("bn", []), ("plain", ["--no-batchnorm"])):
        result = invoke(example, folder, *TINY, "--epochs", "1", "--out", out, *extra)
        assert result.code == 0, result
    return folder


def copy_run(saved_runs: Path, name: str, to: Path) -> Path:
    shutil.copytree(saved_runs / name, to)
    return to


def change_recorded_settings(checkpoint: Path, **changes) -> None:
    """Rewrite what the checkpoint records about its run (its ``extra`` dict)."""
    with np.load(checkpoint, allow_pickle=False) as archive:
        entries = dict(archive.items())
    metadata = json.loads(str(entries["metadata"]))
    metadata["extra"].update(changes)
    entries["metadata"] = np.array(json.dumps(metadata))
    with open(checkpoint, "wb") as file:
        np.savez(file, **entries)


def files(folder: Path) -> dict:
    """Every file in folder, by name, with its bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


# --------------------------------- #10.8: --resume continues only the same run, on its data
RESUME = [*TINY, "--epochs", "2", "--resume", "--out", "bn"]


@pytest.mark.parametrize("change, told", [
    (["--limit", "32"], "it was trained with --limit 64, this run with --limit 32"),
    (["--batch-size", "16"], "with --batch-size 32, this run with --batch-size 16"),
    (["--seed", "1"], "with --seed 0, this run with --seed 1"),
    (["--init", "default"], "with --init xavier, this run with --init default"),
    (["--lr", "0.5"], "with --lr 1, this run with --lr 0.5"),
    (["--dataset", "mnist"], "with --dataset sample, this run with --dataset mnist"),
    (["--optimizer", "adam"], "with --optimizer sgd, this run with --optimizer adam"),
    (["--momentum", "0.9"], "with --momentum 0, this run with --momentum 0.9"),
    (["--weight-decay", "0.1"], "with --weight-decay 0, this run with --weight-decay 0.1"),
    (["--schedule", "cosine"], "with --schedule none, this run with --schedule cosine"),
    (["--update-bn"], "it was trained without --update-bn, this run with --update-bn"),
])
def test_resume_refuses_other_data_or_recipe_and_says_how_to_continue(run, saved_runs, tmp_path,
                                                                      change, told):
    out = copy_run(saved_runs, "bn", tmp_path / "bn")
    before = files(out)
    args = list(RESUME)
    position = args.index(change[0]) if change[0] in args else None
    if position is None:
        args += change
    else:
        args[position + 1] = change[1]
    assert_one_line_error(run(*args), "--resume", told, "To continue it, use its options",
                          "choose a new --out")
    assert files(out) == before  # nothing trained, nothing written


def test_resume_without_limit_is_refused_too(run, saved_runs, tmp_path):
    copy_run(saved_runs, "bn", tmp_path / "bn")
    args = [arg for arg in RESUME if arg not in ("--limit", "64")]
    assert_one_line_error(run(*args), "with --limit 64, this run without --limit",
                          "(--limit 64)")


@pytest.mark.parametrize("saved, flag, told, fix", [
    ("plain", [], "it was trained with --no-batchnorm (the plain LeNet), this run without "
                  "--no-batchnorm (LeNet-BN)", "use its options (--no-batchnorm)"),
    ("bn", ["--no-batchnorm"], "it was trained without --no-batchnorm (LeNet-BN), this run "
                               "with --no-batchnorm", "use its options (no --no-batchnorm)"),
])
def test_resume_with_the_other_model_says_which_way_round(run, saved_runs, tmp_path, saved,
                                                          flag, told, fix):
    """#10.14: the --no-batchnorm hint was inverted in both directions."""
    copy_run(saved_runs, saved, tmp_path / "out")
    assert_one_line_error(run(*TINY, "--epochs", "2", "--resume", "--out", "out", *flag),
                          told, fix)


def test_resume_of_a_full_mnist_run_does_not_fall_back_to_the_sample(run, saved_runs, tmp_path):
    """The issue's case: trained with --data-dir on full MNIST, resumed without it."""
    out = copy_run(saved_runs, "bn", tmp_path / "runs" / "mnist-bn")
    change_recorded_settings(out / "checkpoint.npz", dataset="mnist", limit=None,
                             batch_size=256, train_images=60000, test_images=10000,
                             data_dir="/data/mnist")
    before = files(out)
    line = assert_one_line_error(run("--resume", "--epochs", "11"),
                                 "--resume: the run in", "was trained on MNIST",
                                 "--data-dir /data/mnist")
    assert "sample" not in line.split("(--resume")[1]
    assert files(out) == before
    assert not (tmp_path / "runs" / "sample-bn").exists()


def test_resume_with_default_options_points_to_the_run_on_the_sample(run, saved_runs, tmp_path):
    """A first run without options that fell back to the sample went to runs/sample-bn;
    `--resume` alone looks in runs/mnist-bn and says where the run is."""
    copy_run(saved_runs, "bn", tmp_path / "runs" / "sample-bn")
    assert_one_line_error(run("--resume", "--epochs", "3"), "there is no",
                          "runs/sample-bn holds a LeNet-BN run on the MNIST sample: continue "
                          "it with --dataset sample --resume")
    assert not (tmp_path / "runs" / "mnist-bn").exists()


def test_resume_with_the_same_settings_continues(run, saved_runs, tmp_path):
    out = copy_run(saved_runs, "bn", tmp_path / "bn")
    result = run(*RESUME)
    assert result.code == 0, result
    assert "resuming" in result.out and "epoch 2/2" in result.out
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 2
    assert not (out / ".lock").exists()


def test_a_damaged_checkpoint_on_resume_is_one_line(run, saved_runs, tmp_path):
    out = copy_run(saved_runs, "bn", tmp_path / "bn")
    (out / "checkpoint.npz").write_bytes((out / "checkpoint.npz").read_bytes()[:3000])
    assert_one_line_error(run(*RESUME), "checkpoint.npz: not a readable npnet checkpoint")


# ----------------------- #10.8, 11, 12: data; the fallback is for a default first run only
def test_a_default_run_falls_back_to_the_sample_in_one_line_with_the_reason(run, tmp_path):
    result = run("--epochs", "0")
    assert result.code == 0, result
    first = result.out.splitlines()[0]
    assert first.startswith("MNIST is not on this machine and could not be downloaded; "
                            "training on the 5,000-digit MNIST sample shipped with npnet")
    assert "Reason: " in first and DEAD_MIRROR.split("/mnist")[0] in first
    assert (tmp_path / "runs" / "sample-bn").is_dir()


def test_a_cache_that_cannot_be_written_still_falls_back(run, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "npnet").write_text("a file where the cache folder should be")
    result = run("--epochs", "0")
    assert result.code == 0, result
    assert result.out.startswith("MNIST is not on this machine and could not be downloaded")
    assert "Reason: " in result.out.splitlines()[0]


@pytest.mark.parametrize("options", [["--no-download"], ["--dataset", "mnist"],
                                     ["--data-dir", "mnist-files"],
                                     ["--dataset", "fashion-mnist", "--no-download"]])
def test_asking_for_full_data_that_is_missing_is_an_error_not_a_switch(run, tmp_path, options):
    (tmp_path / "mnist-files").mkdir()
    result = run(*options, "--epochs", "1")
    assert_one_line_error(result, "--dataset sample trains on the MNIST sample")
    assert not (tmp_path / "runs").exists()


def test_a_damaged_data_file_is_one_line_naming_it(run, tmp_path):
    folder = tmp_path / "mnist-files"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes(b"\x1f\x8b" + b"\0" * 100)  # gzip's magic, then garbage
    assert_one_line_error(run("--data-dir", str(folder), "--no-download"),
                          "train-images-idx3-ubyte.gz: ", "damaged")


# --------------------------------------------- #10.13: a folder that cannot take the results
def test_out_that_is_a_file_is_refused(run, tmp_path):
    (tmp_path / "results").write_text("not a folder")
    assert_one_line_error(run(*TINY, "--out", "results"), "results is a file, not a folder",
                          "choose another --out")


@pytest.mark.parametrize("name", ["checkpoint.npz", "history.json"])
def test_a_folder_in_place_of_a_result_file_is_refused_before_training(run, example, tmp_path,
                                                                       monkeypatch, name):
    (tmp_path / "out" / name).mkdir(parents=True)
    monkeypatch.setattr(example, "fit", fail_if_called)
    assert_one_line_error(run(*TINY, "--out", "out"), f"{name} is a folder",
                          "remove or rename it, or choose another --out")


def fail_if_called(*args, **kwargs):
    raise AssertionError("training started")


def test_out_that_cannot_be_written_is_refused_before_training(run, example, tmp_path,
                                                               monkeypatch):
    # (chmod would not stop root, which runs the tests in some containers)
    real_open = os.open
    forbidden = str(tmp_path / "out")

    def os_open(path, *args, **kwargs):
        if os.path.abspath(path).startswith(forbidden + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(example, "fit", fail_if_called)
    assert_one_line_error(run(*TINY, "--out", "out"), "cannot write in out: Permission denied",
                          "choose another --out")


def test_a_full_disk_is_refused_before_training(run, example, tmp_path, monkeypatch):
    usage = NamedTuple("usage", [("total", int), ("used", int), ("free", int)])
    monkeypatch.setattr(npnet.atomic.shutil, "disk_usage",
                        lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    monkeypatch.setattr(example, "fit", fail_if_called)
    assert_one_line_error(run(*TINY, "--out", "out"), "only 50 kB free on the disk holding out",
                          "MB are needed; free some space or choose another --out")
    assert not (tmp_path / "out" / ".lock").exists()


def test_a_disk_that_fills_up_during_the_run_is_one_line_and_leaves_no_temp_file(
        run, tmp_path, monkeypatch):
    real_savez, calls = np.savez, []

    def savez(file, **arrays):  # the second checkpoint finds the disk full halfway
        calls.append(1)
        if len(calls) == 2:
            file.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(file, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    line = assert_one_line_error(run(*TINY, "--epochs", "3", "--out", "out"),
                                 "could not save epoch 2: No space left on device",
                                 "checkpoint.npz holds epoch 1", "--resume --out out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "checkpoint.npz", "history.json", "learning_curves.png"]  # no temporary file, no lock
    assert "Traceback" not in line


# --------------------------------------------- #10.10: temporary files of a killed run
def test_temporary_files_left_by_a_killed_run_are_removed_on_the_next_run(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()  # its pid is free now, like that of a killed run
    left = [out / f".{name}.{process.pid}.tmp" for name in
            ("checkpoint.npz", "history.json", "learning_curves.png", "predictions.png")]
    for path in left:
        path.write_bytes(b"half")
    result = run(*TINY, "--epochs", "0", "--out", "out")
    assert result.code == 0, result
    assert "deleted 4 temporary file(s)" in result.out
    assert not any(path.exists() for path in left)


# -------------------------------------------------------- #10.17: one run per folder
def test_a_second_run_in_a_busy_folder_is_refused_naming_the_first(run, example, tmp_path,
                                                                   monkeypatch):
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(example, "fit", fail_if_called)
    with FolderLock(tmp_path / "out", info={"command": "train_lenet.py --out out"}):
        line = assert_one_line_error(run(*TINY, "--out", "out"), "out is in use by another "
                                     f"run (pid {os.getpid()}, started ", "wait for it to "
                                     "finish, or choose another --out")
    assert "train_lenet.py --out out" in line


def test_the_lock_of_a_killed_run_is_taken_over_with_a_note(run, tmp_path):
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".lock").write_text(json.dumps({"pid": process.pid,
                                                        "started": "2024-01-01 12:00:00"}))
    result = run(*TINY, "--epochs", "0", "--out", "out")
    assert result.code == 0, result
    assert f"note: out was locked by run pid {process.pid}, started 2024-01-01 12:00:00, " \
           f"which ended without releasing it" in result.out
    assert not (tmp_path / "out" / ".lock").exists()


@pytest.mark.parametrize("stop, code, said", [
    (KeyboardInterrupt(), 130, "interrupted before the first epoch ended; nothing saved"),
    (npnet.train.DivergenceError("the loss became nan at epoch 1, step 2"), 1,
     "error: the loss became nan at epoch 1, step 2"),
])
def test_the_lock_is_released_after_ctrl_c_and_errors(run, example, tmp_path, monkeypatch, stop,
                                                      code, said):
    def fit(*args, **kwargs):
        assert (tmp_path / "out" / ".lock").exists()
        raise stop

    monkeypatch.setattr(example, "fit", fit)
    result = run(*TINY, "--out", "out")
    assert result.code == code and result.err == said + "\n", result
    assert not (tmp_path / "out" / ".lock").exists()


# -------------------------------- #10.15: as a user sees it: one line, never a traceback
def run_script(tmp_path: Path, *args: str, **popen) -> subprocess.Popen:
    (tmp_path / "data").mkdir(exist_ok=True)
    # matplotlib's own config folder: a new one would be announced on stderr ("building the
    # font cache")
    import matplotlib
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(tmp_path / "data"),
               HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"),
               MPLCONFIGDIR=matplotlib.get_configdir(), NPNET_MNIST_MIRRORS=DEAD_MIRROR,
               NPNET_FASHION_MNIST_MIRRORS=DEAD_MIRROR)
    return subprocess.Popen([sys.executable, str(SCRIPT), *args, "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint, **popen)


def default_sigint() -> None:
    """In the child, before Python starts: Ctrl-C's default action. A test run started in the
    background by a shell (`pytest &`) inherits SIGINT ignored, and Python then keeps
    ignoring it, so a SIGINT sent to the child would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("args, phrase", [
    (["--no-download"], "MNIST"),
    ([*TINY, "--out", "a-file"], "a-file is a file, not a folder"),
])
def test_failures_reach_the_terminal_as_one_line(tmp_path, args, phrase):
    (tmp_path / "a-file").write_text("x")
    process = run_script(tmp_path, *args)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stdout + stderr
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: ") and phrase in stderr


def test_a_running_run_holds_its_folder_and_ctrl_c_releases_it(example, tmp_path):
    """A real second process: the first run's pid is named; SIGINT ends it with one line,
    exit code 130, its lock and no temporary file left."""
    first = run_script(tmp_path, *TINY, "--epochs", "1000", "--out", "shared")
    try:
        lock, curves = tmp_path / "shared" / ".lock", tmp_path / "shared" / "learning_curves.png"
        deadline = time.monotonic() + 60
        while not curves.exists() and time.monotonic() < deadline:  # epoch 1 saved and plotted
            time.sleep(0.05)
        assert json.loads(lock.read_text())["pid"] == first.pid
        second = invoke(example, tmp_path, *TINY, "--out", "shared")
        assert_one_line_error(second, f"shared is in use by another run (pid {first.pid}")
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=60)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 130, stdout + stderr
    assert stderr.startswith("interrupted; shared/checkpoint.npz holds epoch ")
    assert stderr.endswith(": continue with the same options and --resume --out shared\n")
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert not lock.exists()
    assert not [p for p in (tmp_path / "shared").iterdir() if p.name.endswith(".tmp")]


def test_the_saved_checkpoint_records_the_run(saved_runs):
    """What --resume checks against."""
    from npnet.checkpoint import read_checkpoint_metadata
    extra = read_checkpoint_metadata(saved_runs / "bn" / "checkpoint.npz")["extra"]
    assert extra == {"dataset": "sample", "model": "lenet", "batch_norm": True,
                     "batch_size": 32, "init": "xavier", "seed": 0, "limit": 64,
                     "optimizer": "sgd", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.0,
                     "step_size": None, "update_bn": False, "schedule": "none",
                     "scheduler": None, "train_images": 64, "test_images": 1000,
                     "data_dir": None}


def test_a_hand_made_checkpoint_is_not_resumed_blindly(tmp_path, run):
    """A checkpoint that records no settings (saved by hand) is not resumed blindly."""
    (tmp_path / "out").mkdir()
    npnet.manual_seed(0)
    save_checkpoint(tmp_path / "out" / "checkpoint.npz", npnet.models.lenet())
    assert_one_line_error(run(*TINY, "--resume", "--out", "out"),
                          "does not record the settings it was trained with")


# ---------------------------- #11: other networks, optimizers and learning-rate schedules
@pytest.fixture(scope="module")
def saved_resnet_run(example, tmp_path_factory):
    """One epoch of a tiny ResNet run in resnet/."""
    folder = tmp_path_factory.mktemp("saved_resnet_run")
    result = invoke(example, folder, *TINY, "--epochs", "1", "--model", "resnet", "--out",
                    "resnet")
    assert result.code == 0, result
    return folder


@pytest.mark.parametrize("saved, args, told, fix", [
    ("resnet", [], "it was trained with --model resnet (ResNet), this run with --model lenet "
                   "(LeNet-BN)", "use its options (--model resnet)"),
    ("resnet", ["--model", "densenet"], "it was trained with --model resnet (ResNet), this run "
                                        "with --model densenet (DenseNet)", "(--model resnet)"),
    ("plain", ["--model", "resnet"], "it was trained with --model lenet --no-batchnorm (the "
                                     "plain LeNet), this run with --model resnet (ResNet)",
     "use its options (--model lenet --no-batchnorm)"),
])
def test_resume_with_another_network_is_refused(run, request, tmp_path, saved, args, told, fix):
    runs = request.getfixturevalue("saved_resnet_run" if saved == "resnet" else "saved_runs")
    out = copy_run(runs, saved, tmp_path / "out")
    before = files(out)
    line = assert_one_line_error(run(*TINY, "--epochs", "2", "--resume", "--out", "out", *args),
                                 told, fix, "for a new run, choose a new --out")
    assert "without --no-batchnorm" not in line  # the network's option says it all
    assert files(out) == before


@pytest.mark.parametrize("args, told", [
    (["--model", "resnet", "--no-batchnorm"], "--no-batchnorm applies to --model lenet only: "
                                              "the ResNet is built with batch normalization"),
    (["--model", "densenet", "--no-batchnorm"], "the DenseNet is built with batch normalization"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum applies to --optimizer sgd only"),
    (["--step-size", "2"], "--step-size applies to --schedule step only"),
    (["--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
    (["--no-batchnorm", "--update-bn"], "--update-bn re-estimates the statistics of BatchNorm "
                                        "layers, and the plain LeNet (--no-batchnorm) has none"),
])
def test_options_that_do_not_fit_the_network_or_optimizer_are_refused(run, tmp_path, args, told):
    """Exit code 2, as for every invalid option, before anything is made."""
    result = run(*TINY, *args)
    assert result.code == 2, result
    assert told in result.err.splitlines()[-1]
    assert not (tmp_path / "runs").exists()


def saved_state(out: Path) -> tuple[dict, dict]:
    """The checkpoint in ``out``: its arrays (model and optimizer), and its metadata without
    the timings."""
    with np.load(out / "checkpoint.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "metadata"}
        metadata = json.loads(str(archive["metadata"]))
    for timing in ("epoch_time", "examples_per_sec"):
        metadata["history"].pop(timing)
    return arrays, metadata


def assert_bitwise_equal(resumed: Path, straight: Path) -> dict:
    arrays, metadata = saved_state(resumed)
    expected_arrays, expected_metadata = saved_state(straight)
    assert arrays.keys() == expected_arrays.keys()
    for name, expected in expected_arrays.items():
        assert np.array_equal(arrays[name], expected), name  # exact: no tolerance
    assert metadata == expected_metadata  # epoch, history, optimizer settings, schedule
    return metadata


RECIPES = {
    "Adam, lr x0.1 every epoch": ["--optimizer", "adam", "--schedule", "step",
                                  "--step-size", "1"],
    "SGD with momentum and weight decay, lr x0.1 every 2 epochs": [
        "--lr", "0.2", "--momentum", "0.9", "--weight-decay", "0.001", "--schedule", "step",
        "--step-size", "2"],
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_a_resumed_run_with_its_optimizer_and_schedule_is_the_uninterrupted_run(
        run, tmp_path, recipe):
    """1 epoch, then --resume to 3: bitwise the weights, momentum or Adam's running means,
    learning rate and schedule position of 3 epochs straight."""
    options = [*TINY, *RECIPES[recipe]]
    for args in (["--epochs", "3", "--out", "straight"], ["--epochs", "1", "--out", "split"],
                 ["--epochs", "3", "--out", "split", "--resume"]):
        result = run(*options, *args)
        assert result.code == 0, result
    metadata = assert_bitwise_equal(tmp_path / "split", tmp_path / "straight")
    assert metadata["epoch"] == 3
    first_lr = 1e-3 if "adam" in options else 0.2
    drops = 3 if "adam" in options else 1  # after epochs 1, 2, 3; after epoch 2
    assert metadata["optimizer"]["settings"]["lr"] == pytest.approx(first_lr * 0.1 ** drops)
    assert metadata["extra"]["scheduler"]["last_epoch"] == 3
    assert metadata["extra"]["lr"] == first_lr  # the recipe's, not the schedule's current


def test_an_interrupted_cosine_run_resumes_on_its_cosine(run, example, tmp_path, monkeypatch):
    """Ctrl-C after epoch 1 of 3 (AdamW, cosine over 3 epochs), then --resume: bitwise the
    run that was not interrupted."""
    options = [*TINY, "--optimizer", "adamw", "--schedule", "cosine", "--epochs", "3"]
    assert run(*options, "--out", "straight").code == 0
    real_fit = example.fit

    def fit_interrupted_after_one_epoch(*args, on_epoch_end, **kwargs):
        def save_then_stop(epoch, history):
            on_epoch_end(epoch, history)
            raise KeyboardInterrupt

        return real_fit(*args, on_epoch_end=save_then_stop, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(example, "fit", fit_interrupted_after_one_epoch)
        stopped = run(*options, "--out", "split")
    assert stopped.code == 130 and "split/checkpoint.npz holds epoch 1" in stopped.err, stopped
    resumed = run(*options, "--out", "split", "--resume")
    assert resumed.code == 0, resumed
    assert "resuming split/checkpoint.npz after epoch 1" in resumed.out
    metadata = assert_bitwise_equal(tmp_path / "split", tmp_path / "straight")
    assert metadata["optimizer"]["settings"]["lr"] == 0.0  # the cosine's end
    # past its end a cosine rises again: not what "more epochs" means, so it is refused
    before = files(tmp_path / "split")
    assert_one_line_error(run(*TINY, "--optimizer", "adamw", "--schedule", "cosine",
                              "--epochs", "4", "--out", "split", "--resume"),
                          "lowers the learning rate to 0 over 3 epochs",
                          "Resume with --epochs 3 or fewer")
    assert files(tmp_path / "split") == before


def test_a_checkpoint_of_the_lenet_only_example_still_resumes(run, saved_runs, tmp_path):
    """Checkpoints written before --model, --optimizer and --schedule recorded none of them:
    they are LeNet runs with plain SGD, and resume as such."""
    out = copy_run(saved_runs, "bn", tmp_path / "bn")
    checkpoint = out / "checkpoint.npz"
    with np.load(checkpoint, allow_pickle=False) as archive:
        entries = dict(archive.items())
    metadata = json.loads(str(entries["metadata"]))
    for key in ("model", "optimizer", "momentum", "weight_decay", "step_size", "schedule",
                "scheduler"):
        del metadata["extra"][key]
    entries["metadata"] = np.array(json.dumps(metadata))
    with open(checkpoint, "wb") as file:
        np.savez(file, **entries)
    result = run(*RESUME)
    assert result.code == 0, result
    assert "LeNet-BN on the MNIST sample" in result.out and "epoch 2/2" in result.out
    assert_one_line_error(run(*TINY, "--epochs", "3", "--resume", "--out", "bn", "--optimizer",
                              "adam"), "with --optimizer sgd, this run with --optimizer adam")
