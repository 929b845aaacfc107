"""examples/residual_vs_plain.py: the shortcut's gradient reaches the first layer, measured.

The experiment's core (``compare``) runs here on a tiny configuration: 4 blocks (9
convolutions) of 8 channels without BatchNorm, batch 16, 3 steps, recorded at every step; a
few tenths of a second per seed. Without BatchNorm the plain network's gradient shrinks layer
by layer (a product of 8 Jacobians), while the residual network's shortcut hands it down
whole. Measured on seeds 0-7 (2026-11-29), at each of the 3 recorded steps:

    residual first conv ||dL/dW|| / plain first conv ||dL/dW||   299 .. 8.0e4 (seeds 0, 1: >= 4.8e3)
    plain    first conv / its last conv                          1.1e-5 .. 6.1e-3
    residual first conv / its last conv                          0.24 .. 1.7

The bars below sit a factor 3 or more inside those ranges: 100, 0.03 and 0.1. A Residual
whose backward drops the shortcut's gradient (seed 0, measured) gives factors 14 .. 29 and a
residual first / last of 1.7e-3 at most: it fails both bars.
"""

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import npnet
from npnet.datasets import load_mnist_sample
from npnet.residual import Residual

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "residual_vs_plain.py"

TINY = dict(depth=4, width=8, steps=3, batch_norm=False, batch_size=16, every=1)
FACTOR = 100         # residual / plain, first convolution's ||dL/dW||: measured >= 299
PLAIN_RATIO = 0.03   # plain, first / last convolution: measured <= 6.1e-3
RESIDUAL_RATIO = 0.1  # residual, first / last convolution: measured >= 0.24


def load_example():
    spec = importlib.util.spec_from_file_location("residual_vs_plain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    module = load_example()
    # one BLAS thread, as the script trains: on a busy 2-core machine two OpenBLAS threads
    # spinning over these small products made this file take 29 s instead of 5
    with module.blas_threads(1):
        yield module


@pytest.fixture(scope="module")
def data():
    sample = load_mnist_sample()
    return sample.x_train[:256], sample.y_train[:256], sample.x_test[:100], sample.y_test[:100]


def first_conv_factor(runs) -> np.ndarray:
    """residual / plain ||dL/dW|| of the first convolution, at each recorded step."""
    return runs["residual"]["grad_norms"][:, 0] / runs["plain"]["grad_norms"][:, 0]


def first_over_last(run) -> np.ndarray:
    return run["grad_norms"][:, 0] / run["grad_norms"][:, -1]


def test_both_networks_start_from_the_same_weights(example):
    plain = example.build(3, 8, residual=False, seed=5)
    residual = example.build(3, 8, residual=True, seed=5)
    assert example.same_parameters(plain, residual)
    assert not example.same_parameters(plain, example.build(3, 8, residual=False, seed=6))
    assert sum(isinstance(m, Residual) for m in residual.modules()) == 3
    assert not any(isinstance(m, Residual) for m in plain.modules())
    # a block of the residual network is npnet's own residual block; the plain one, its body
    block = npnet.models.residual_block(8, 8)
    assert repr(residual[3]) == repr(block)
    assert repr(plain[3]) == repr(npnet.Sequential(block[0].body, block[1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_residual_networks_first_layer_gets_a_far_larger_gradient(example, data, seed):
    runs = example.compare(data, seed=seed, **TINY)
    assert runs["plain"]["grad_norms"].shape == (3, 9)  # 3 recorded steps, 9 convolutions
    assert first_conv_factor(runs).min() > FACTOR
    # the plain network's first layer gets a small part of its last layer's gradient; the
    # residual network's, one of the same size
    assert first_over_last(runs["plain"]).max() < PLAIN_RATIO
    assert first_over_last(runs["residual"]).min() > RESIDUAL_RATIO


def test_a_shortcut_whose_gradient_is_dropped_fails_the_bar(example, data, monkeypatch):
    """The test above can fail: a Residual whose backward forgets the identity path's dL/dy
    (``return grad_x``, not ``grad_x + grad_out``) leaves only the product of Jacobians, and
    its first layer's gradient falls below the bar. (The fast backend finds that Residual's
    backward no longer agrees with its kernel, says so, and runs it as written.)"""
    def backward_without_shortcut(self, grad_out):
        grad_out = self.check_grad(grad_out, self.require_cache())
        return self.body.run_backward(grad_out)

    monkeypatch.setattr(Residual, "backward", backward_without_shortcut)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = example.compare(data, seed=0, **TINY)
    assert first_conv_factor(runs).min() < FACTOR  # measured: 14 .. 29
    assert first_over_last(runs["residual"]).max() < RESIDUAL_RATIO  # measured: <= 1.7e-3
    if npnet.fast.enabled_by_default():
        assert any(issubclass(w.category, npnet.FastPathWarning) and "Residual" in
                   str(w.message) for w in caught)


@pytest.mark.parametrize("batch_norm", [True, False], ids=["batchnorm", "no-batchnorm"])
def test_fast_and_as_written_record_the_same_numbers(example, data, batch_norm):
    """The Recorder's hooks fire on the fast backend too: every recorded gradient norm and
    every loss agree with the layers as written, to float32 rounding (measured over 5 steps:
    3e-6 relative at most)."""
    settings = dict(TINY, batch_norm=batch_norm, steps=5)
    fast = example.compare(data, fast=True, **settings)
    written = example.compare(data, fast=False, **settings)
    for name in example.NETWORKS:
        expected = written[name]["grad_norms"]
        assert fast[name]["grad_norms"].shape == expected.shape == (5, 9)
        np.testing.assert_allclose(fast[name]["grad_norms"], expected, rtol=1e-4)
        np.testing.assert_allclose(fast[name]["losses"], written[name]["losses"], rtol=1e-5)


def test_the_script_prints_the_table_and_writes_the_figure(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, MPLBACKEND="Agg", NPNET_DATA=str(empty), HOME=str(empty),
               XDG_CACHE_HOME=str(empty), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--depth", "2", "--steps", "4", "--every", "2",
         "--test-size", "100", "--no-progress", "--no-batchnorm", "--out", "figures"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    png = tmp_path / "figures" / "residual_vs_plain_no_batchnorm.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line.split()[0] for line in done.stdout.splitlines()
            if line.startswith(("plain ", "residual "))]
    assert rows == ["plain", "residual"]
    assert "first / last" in done.stdout and "5 convolutions" in done.stdout
