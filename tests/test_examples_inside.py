"""The two "look inside" examples: they run end to end on the shipped sample, write their
figures, and the planted mistakes of break_a_layer.py are the ones gradcheck must catch.

The examples run as a user would run them (a subprocess, in a temporary folder), with tiny
budgets and with NPNET_DATA, HOME and XDG_CACHE_HOME pointing at empty temporary folders, so
nothing outside is read and nothing is downloaded.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npnet
from npnet.models import lenet

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(script: str, args: list, tmp_path: Path) -> str:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(empty), HOME=str(empty),
               XDG_CACHE_HOME=str(empty), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_batchnorm_study_writes_its_figures(tmp_path):
    out = run_example("batchnorm_study.py",
                      ["--train-size", "256", "--test-size", "200", "--epochs", "1",
                       "--batch-size", "64", "--sample-size", "100", "--no-progress",
                       "--out", "figures"], tmp_path)
    for name in ("learning_curves", "activation_histograms", "activation_stats",
                 "gradient_norms"):
        png = tmp_path / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    results = json.loads((tmp_path / "figures" / "results.json").read_text())
    assert set(results["networks"]) == {"without BatchNorm", "with BatchNorm"}
    assert results["every"] == 1 and results["train_size"] == 256
    assert "test accuracy by epoch" in out


def test_break_a_layer_runs_and_flags_the_mistake(tmp_path):
    out = run_example("break_a_layer.py",
                      ["--layer", "batchnorm", "--epochs", "1", "--train-size", "256",
                       "--batch-size", "128", "--max-entries", "3"], tmp_path)
    assert "FrozenStatsBatchNorm" in out
    assert "--- correct: worst relative error" in out and "arrays above 1e-6: none" in out
    assert "epoch   correct: loss" in out


def load_break_a_layer():
    spec = importlib.util.spec_from_file_location("break_a_layer", EXAMPLES / "break_a_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("which", ["batchnorm", "sigmoid", "conv"])
def test_each_planted_mistake_fails_gradcheck_and_the_original_passes(which):
    example = load_break_a_layer()
    npnet.manual_seed(0)
    layer, x = example.single_layer(which)
    broken = example.BREAKS[which][1](layer)
    broken.load_state_dict(layer.state_dict())
    assert npnet.gradcheck(layer, x, training=True).max_error < 1e-6
    assert npnet.gradcheck(broken, x, training=True).max_error > 1e-2


def test_broken_batchnorm_is_right_in_evaluation_mode():
    """The planted BatchNorm mistake is the evaluation-mode formula, so there it is correct."""
    example = load_break_a_layer()
    layer, x = example.single_layer("batchnorm")
    broken = example.BREAKS["batchnorm"][1](layer)
    assert npnet.gradcheck(broken, x, training=False).max_error < 1e-6


def test_broken_network_has_the_same_weights_and_the_broken_backward_runs():
    """In a Sequential (which may run layers on a faster path), the overridden backward is
    the one that runs: the broken network's gradient differs from the correct one's."""
    example = load_break_a_layer()
    npnet.manual_seed(0)
    net = lenet()
    broken = example.break_network(net, "batchnorm")
    before = net.state_dict()
    assert all(np.array_equal(before[k], v) for k, v in broken.state_dict().items())
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    labels = np.arange(8)
    grads = []
    for model in (net, broken):
        criterion = npnet.CrossEntropyLoss()
        model.zero_grad()
        criterion(model(x), labels)
        model.backward(criterion.backward())
        grads.append(model[0].weight.grad.copy())
    assert not np.allclose(grads[0], grads[1])
