"""The two "look inside" examples: they run end to end on the shipped sample, write their
figures, and the planted mistakes of break_a_layer.py are the ones gradcheck must catch, and
the ones ``fit`` trains with (the fast backend runs a layer that disagrees with its kernel as
written).

The examples run as a user would run them (a subprocess, in a temporary folder), with tiny
budgets and with NPNET_DATA, HOME and XDG_CACHE_HOME pointing at empty temporary folders, so
nothing outside is read and nothing is downloaded.
"""

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import npnet
from npnet.models import lenet
from npnet.train import fit

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(script: str, args: list, tmp_path: Path, **env_changes) -> str:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(empty), HOME=str(empty),
               XDG_CACHE_HOME=str(empty), PYTHONPATH=str(ROOT), **env_changes)
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
                       "--batch-size", "128", "--max-entries", "3"], tmp_path,
                      NPNET_FAST="1")  # fit on the fast backend, as by default
    assert "FrozenStatsBatchNorm" in out
    assert "--- correct: worst relative error" in out and "arrays above 1e-6: none" in out
    assert "epoch   correct: loss" in out
    # training: the fast backend is silent for the correct network and names each broken
    # BatchNorm (layers 1, 5, 10 and 13 of LeNet-BN), which it then runs as written
    correct = out[out.index("--- training the correct network"):
                  out.index("--- training the broken network")]
    broken = out[out.index("--- training the broken network"):out.index("epoch   correct")]
    assert "FastPathWarning" not in correct and "no notice from the fast backend" in correct
    notices = [line for line in broken.splitlines() if "FastPathWarning: " in line]
    assert [int(n) for line in notices for n in re.findall(r"\(layer (\d+)\)", line)] \
        == [1, 5, 10, 13]
    assert all("FrozenStatsBatchNorm, a BatchNorm(" in line and "a subclass of BatchNorm"
               in line and "running it as written" in line for line in notices)
    assert "fit ran the layers named above as written" in broken


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


def test_broken_network_has_the_same_weights():
    example = load_break_a_layer()
    npnet.manual_seed(0)
    net = lenet()
    for which in example.BREAKS:
        broken = example.break_network(net, which)
        before = net.state_dict()
        assert broken.state_dict().keys() == before.keys()
        assert all(np.array_equal(before[k], v) for k, v in broken.state_dict().items())
        replaced = [k for k, layer in enumerate(broken) if type(layer) is not type(net[k])]
        assert replaced and all(isinstance(broken[k], example.BREAKS[which][0])
                                for k in replaced)


def fit_copy(model, data, fast: bool):
    """Train a copy of ``model`` for one short epoch (two steps; a small lr keeps the broken
    sigmoid's weights from exploding) with ``fit``; return (its weights after, the
    FastPathWarnings raised)."""
    model = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, data, data, epochs=1, lr=0.01, batch_size=32, seed=0, progress=False,
            verbose=False, fast=fast)
    notices = [str(w.message) for w in caught if issubclass(w.category, npnet.FastPathWarning)]
    return model.state_dict(), notices


@pytest.mark.parametrize("which", ["batchnorm", "sigmoid", "conv"])
def test_fit_trains_with_the_broken_backward(which):
    """``fit`` runs the network on the fast backend. Each broken layer overrides its parent's
    backward, so the backend names it (a FastPathWarning) and runs it as written: training on
    the backend gives the weights that the layers as written give, and not the correct
    network's."""
    example = load_break_a_layer()
    npnet.manual_seed(0)
    net = lenet()
    broken = example.break_network(net, which)
    positions = [k for k, layer in enumerate(broken) if type(layer) is not type(net[k])]
    rng = np.random.default_rng(0)
    data = (rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64))

    correct_fast, correct_notices = fit_copy(net, data, fast=True)
    broken_fast, broken_notices = fit_copy(broken, data, fast=True)
    broken_written, written_notices = fit_copy(broken, data, fast=False)

    assert correct_notices == [] and written_notices == []
    assert [int(re.search(r"\(layer (\d+)\)", notice).group(1)) for notice in broken_notices] \
        == positions  # once each, whatever the mode
    assert all("running it as written" in notice for notice in broken_notices)
    for name, weights in broken_written.items():  # the broken backward ran on the backend
        scale = max(float(np.abs(weights).max()), 1e-6)  # float32 rounding, on each array's
        assert np.abs(broken_fast[name] - weights).max() <= 1e-3 * scale, name  # own scale
    first = "0.weight"  # the broken gradient reaches the first layer's weights
    apart = np.abs(broken_fast[first] - correct_fast[first]).max()
    assert apart > 100 * max(np.abs(broken_fast[first] - broken_written[first]).max(), 1e-6)
