"""examples/train_lenet.py end to end, as a user runs it: a subprocess in a temporary folder.

NPNET_DATA, HOME and XDG_CACHE_HOME point into the temporary folder, so nothing is found or
downloaded from elsewhere, and nothing is written outside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "train_lenet.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    empty = tmp_path / "data"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(empty), HOME=str(tmp_path),
               XDG_CACHE_HOME=str(tmp_path / "cache"), MPLCONFIGDIR=str(tmp_path / "mpl"))
    result = subprocess.run([sys.executable, str(SCRIPT), *args, "--no-progress"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One epoch on 1,000 digits of the sample, into the default folder runs/sample-bn."""
    tmp_path = tmp_path_factory.mktemp("example")
    result = run_example(tmp_path, "--dataset", "sample", "--epochs", "1", "--limit", "1000")
    return tmp_path, result


def test_the_example_writes_its_four_files(first_run):
    tmp_path, result = first_run
    out = tmp_path / "runs" / "sample-bn"
    for name in ("learning_curves.png", "predictions.png"):
        content = (out / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE), name
        assert len(content) > 10_000, f"{name} is only {len(content)} bytes"
    with np.load(out / "checkpoint.npz", allow_pickle=False) as checkpoint:
        assert "model/0.weight" in checkpoint.files
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 1
    assert "epoch 1/1: loss" in result.stdout
    assert "final test acc" in result.stdout and str(Path("runs") / "sample-bn") in result.stdout
    # everything stayed inside the temporary folder, and nothing was downloaded
    assert not any((tmp_path / "data").iterdir())
    assert not (tmp_path / "cache" / "npnet").exists()


def test_resume_continues_the_run(first_run):
    tmp_path, _ = first_run
    result = run_example(tmp_path, "--dataset", "sample", "--epochs", "2", "--limit", "1000",
                         "--resume")
    assert "resuming" in result.stdout and "after epoch 1" in result.stdout
    assert "epoch 2/2: loss" in result.stdout and "epoch 1/" not in result.stdout
    history = json.loads((tmp_path / "runs" / "sample-bn" / "history.json").read_text())
    assert len(history["train_loss"]) == len(history["test_acc"]) == 2


def test_no_fast_runs_the_layers_as_written_with_the_same_numbers(first_run, tmp_path):
    """--no-fast: fit, evaluation and the predictions run every layer's own forward and
    backward; the first run (the fast backend, by default) gave the same numbers."""
    fast_dir, _ = first_run
    result = run_example(tmp_path, "--dataset", "sample", "--epochs", "1", "--limit", "1000",
                         "--no-fast")
    assert "every layer as written (--no-fast)" in result.stdout
    assert (tmp_path / "runs" / "sample-bn" / "predictions.png").read_bytes()[:8] == \
        PNG_SIGNATURE
    fast = json.loads((fast_dir / "runs" / "sample-bn" / "history.json").read_text())
    written = json.loads((tmp_path / "runs" / "sample-bn" / "history.json").read_text())
    for name in ("train_loss", "test_loss"):  # epoch 1 (a resumed first run has more)
        assert written[name][0] == pytest.approx(fast[name][0], rel=1e-4), name
    for name in ("train_acc", "test_acc"):  # a prediction at a near tie may flip
        assert written[name][0] == pytest.approx(fast[name][0], abs=2e-3), name


@pytest.mark.parametrize("model, title", [("resnet", "ResNet"), ("densenet", "DenseNet")])
def test_the_residual_and_dense_networks_train_from_one_command(tmp_path, model, title):
    """--model resnet / densenet: the same run as LeNet's, into runs/sample-<model>."""
    result = run_example(tmp_path, "--model", model, "--dataset", "sample", "--epochs", "1",
                         "--limit", "128", "--batch-size", "64")
    assert f"{title} on the MNIST sample: 128 training and 1000 test images; SGD, lr 0.1, " \
           f"momentum 0.9" in result.stdout
    assert "epoch 1/1: loss" in result.stdout and "final test acc" in result.stdout
    out = tmp_path / "runs" / f"sample-{model}"
    assert str(Path("runs") / f"sample-{model}") in result.stdout
    for name in ("learning_curves.png", "predictions.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    with np.load(out / "checkpoint.npz", allow_pickle=False) as checkpoint:
        entries = checkpoint.files
        extra = json.loads(str(checkpoint["metadata"]))["extra"]
    shape_of = {"resnet": "model/3.0.body.0.weight", "densenet": "model/3.0.1.0.gamma"}
    assert shape_of[model] in entries  # a residual block's body; a dense block's branch
    assert any(name.startswith("optimizer/velocity/") for name in entries)  # momentum
    assert extra["model"] == model and extra["optimizer"] == "sgd"
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 1


def test_mnist_asked_for_but_missing_is_one_line_not_a_switch_to_the_sample(tmp_path):
    """--no-download asks for MNIST as it is on this machine: not there, it is an error (the
    fallback to the sample is for a first run without options; tests/test_example_failures.py
    runs that one with its download going nowhere)."""
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(tmp_path), HOME=str(tmp_path),
               XDG_CACHE_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, str(SCRIPT), "--no-download", "--epochs", "1",
                             "--limit", "300", "--no-batchnorm", "--init", "default"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: MNIST") and result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_the_plain_lenet_trains_with_the_books_rate(tmp_path):
    result = run_example(tmp_path, "--dataset", "sample", "--epochs", "1", "--limit", "300",
                         "--no-batchnorm", "--init", "default")
    assert "lr 0.9" in result.stdout  # the book's rate for the plain LeNet
    assert (tmp_path / "runs" / "sample-plain" / "checkpoint.npz").is_file()


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(tmp_path), HOME=str(tmp_path),
               XDG_CACHE_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "sample", "--resume"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "there is no" in result.stderr and "checkpoint.npz" in result.stderr


def test_help_explains_every_option():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--dataset", "--data-dir", "--epochs", "--batch-size", "--lr",
                   "--no-batchnorm", "--seed", "--init", "--out", "--resume", "--no-download",
                   "--limit", "--no-fast", "--no-progress", "--model", "--optimizer",
                   "--momentum", "--weight-decay", "--schedule", "--step-size",
                   "--update-bn"):
        assert option in result.stdout


def test_update_bn_re_estimates_the_statistics_and_resumes_bitwise(tmp_path):
    """--update-bn: the weights are those of the run without it (the statistics are
    re-estimated, nothing is trained), the moving averages differ; the option is recorded, a
    resume without it is refused, and 1 epoch + --resume to 2 is bitwise 2 epochs straight."""
    common = ("--dataset", "sample", "--limit", "512", "--batch-size", "128")

    def arrays(name: str) -> dict:
        with np.load(tmp_path / name / "checkpoint.npz", allow_pickle=False) as checkpoint:
            return {key: checkpoint[key] for key in checkpoint.files if key != "metadata"} | {
                "extra": json.loads(str(checkpoint["metadata"]))["extra"]}

    straight = run_example(tmp_path, *common, "--epochs", "2", "--update-bn", "--out", "straight")
    assert "BatchNorm statistics re-estimated after every epoch (--update-bn)" in straight.stdout
    run_example(tmp_path, *common, "--epochs", "2", "--out", "without")
    run_example(tmp_path, *common, "--epochs", "1", "--update-bn", "--out", "resumed")

    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(tmp_path / "data"),
               HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    refused = subprocess.run([sys.executable, str(SCRIPT), *common, "--epochs", "2", "--out",
                              "resumed", "--resume", "--no-progress"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "it was trained with --update-bn, this run without --update-bn" in refused.stderr
    run_example(tmp_path, *common, "--epochs", "2", "--update-bn", "--out", "resumed",
                "--resume")

    straight, without, resumed = arrays("straight"), arrays("without"), arrays("resumed")
    assert straight["extra"]["update_bn"] is True and without["extra"]["update_bn"] is False
    weights = [key for key in straight if key.startswith("model/") and "moving" not in key]
    moving = [key for key in straight if "moving" in key]
    assert weights and moving
    for key in weights:
        np.testing.assert_array_equal(straight[key], without[key], err_msg=key)
    assert all(not np.array_equal(straight[key], without[key]) for key in moving)
    for key in [*weights, *moving]:
        np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)


def test_threads_one_and_two_train_the_same_run(first_run, tmp_path):
    """--threads 2: two workers, each on half of every batch (npnet/fast/workers.py), give
    the one-thread run to float32 rounding."""
    first_tmp, _ = first_run
    one = json.loads((first_tmp / "runs" / "sample-bn" / "history.json").read_text())
    for threads in ("1", "2"):
        out = tmp_path / threads
        run_example(tmp_path, "--dataset", "sample", "--epochs", "1", "--limit", "1000",
                    "--threads", threads, "--out", str(out))
        history = json.loads((out / "history.json").read_text())
        np.testing.assert_allclose(history["train_loss"], one["train_loss"][:1], rtol=1e-4)
        assert abs(history["test_acc"][0] - one["test_acc"][0]) <= 0.01


def test_threads_must_be_positive(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--threads", "0"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--threads must be 1 or more; got 0" in result.stderr
