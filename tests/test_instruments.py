"""The Recorder: its numbers equal a direct NumPy computation on the same arrays, it records
only the steps it should, and it leaves no trace once removed.

The reference arrays are captured by the test's own hooks, registered before the Recorder's,
so both see the same forward outputs and the same gradients.
"""

import numpy as np
import pytest

import npnet
from conftest import images
from npnet.instruments import Recorder, measure_overhead
from npnet.models import lenet


def train_step(net, criterion, optimizer, x, y):
    optimizer.zero_grad()
    loss = criterion(net(x), y)
    net.backward(criterion.backward())
    optimizer.step()
    return loss


def capture(net):
    """Hooks that keep a copy of every layer's output, input gradient and parameter grads."""
    seen = {"out": {}, "grad_in": {}, "param_grad": {}}
    handles = []
    for name, layer in net.named_modules():
        if name == "":
            continue

        def forward_hook(layer, x, y, name=name):
            seen["out"][name] = y.copy()

        def backward_hook(layer, grad_out, grad_in, name=name):
            seen["grad_in"][name] = None if grad_in is None else grad_in.copy()
            seen["param_grad"][name] = {p: param.grad.copy()
                                        for p, param in layer.named_parameters()}
        handles += [layer.register_forward_hook(forward_hook),
                    layer.register_backward_hook(backward_hook)]
    return seen, handles


def test_statistics_equal_numpy_on_the_same_arrays():
    npnet.manual_seed(0)
    net = lenet()
    seen, handles = capture(net)
    rec = Recorder(net, every=1)
    criterion, optimizer = npnet.CrossEntropyLoss(), npnet.SGD(net.parameters(), lr=0.1)
    train_step(net, criterion, optimizer, *images())
    stats = rec.history[0]
    assert set(stats) == {str(k) for k in range(len(net))}
    for name, y in seen["out"].items():
        y64 = y.astype(np.float64)
        assert stats[name]["mean"] == pytest.approx(y64.mean(), rel=1e-5, abs=1e-7)
        assert stats[name]["std"] == pytest.approx(y64.std(), rel=1e-5)
        if isinstance(net[int(name)], npnet.Sigmoid):
            saturated = np.mean((y64 < 0.01) | (y64 > 0.99))
            assert stats[name]["saturated"] == saturated
        else:
            assert np.isnan(stats[name]["saturated"])
        grad_in = seen["grad_in"][name]
        if grad_in is None:  # a first layer may skip its input gradient
            assert np.isnan(stats[name]["grad_in_norm"])
        else:
            direct = np.sqrt(np.sum(grad_in.astype(np.float64) ** 2))
            assert stats[name]["grad_in_norm"] == pytest.approx(direct, rel=1e-5)
        for param_name, grad in seen["param_grad"][name].items():
            direct = np.sqrt(np.sum(grad.astype(np.float64) ** 2))
            assert stats[name][f"grad_norm.{param_name}"] == pytest.approx(direct, rel=1e-5)
    assert {"grad_norm.gamma", "grad_norm.beta"} <= set(stats["1"])
    for handle in handles:
        handle.remove()
    rec.remove()


def test_saturation_rules_of_tanh_and_relu():
    from npnet.instruments import saturated_fraction
    y = np.array([-0.99, -0.5, 0.0, 0.97, 0.985])
    assert saturated_fraction(npnet.Tanh(), y) == 2 / 5
    assert saturated_fraction(npnet.ReLU(), np.array([0.0, 0.0, 1.0, 2.0])) == 0.5
    assert saturated_fraction(npnet.Sigmoid(), np.array([0.005, 0.5, 0.995, 0.99])) == 0.5


def test_every_k_steps_and_eval_forwards_are_not_steps():
    npnet.manual_seed(0)
    net = lenet()
    rec = Recorder(net, every=3)
    criterion, optimizer = npnet.CrossEntropyLoss(), npnet.SGD(net.parameters(), lr=0.1)
    x, y = images()
    for step in range(7):
        train_step(net, criterion, optimizer, x, y)
        net.eval()
        net(x)  # an evaluation in between: neither counted nor recorded
        net.train()
    assert rec.step == 6
    assert rec.steps == [0, 3, 6]
    arrays = rec.to_arrays()
    assert list(arrays["steps"]) == [0, 3, 6]
    assert arrays["std"].shape == (3, len(net))
    assert np.isnan(arrays["grad_norm.weight"][:, 2]).all()  # a Sigmoid has no weight
    assert np.isfinite(arrays["grad_norm.weight"][:, 0]).all()  # the first Conv2d has one
    rec.remove()


def test_layers_by_type_and_name_and_samples():
    npnet.manual_seed(0)
    net = lenet()
    seen, handles = capture(net)
    rec = Recorder(net, every=1, layers=[npnet.Sigmoid, "0"], sample_size=50)
    x, y = images()
    net(x)
    assert rec.names == ["0", "2", "6", "11", "14"]
    assert set(rec.samples[0]) == set(rec.names)
    assert rec.samples[0]["2"].shape == (50,)
    assert np.isin(rec.samples[0]["2"], seen["out"]["2"]).all()  # values of the output
    for handle in handles:
        handle.remove()
    step, samples = rec.samples_near(10)
    assert step == 0 and samples is rec.samples[0]
    rec.remove()
    with pytest.raises(ValueError, match="no layer named"):
        Recorder(net, layers=["99"])


def test_remove_detaches_every_hook_and_changes_nothing():
    npnet.manual_seed(0)
    net = lenet()
    hooks_before = [(len(m._forward_hooks), len(m._backward_hooks)) for m in net.modules()]
    x, y = images()
    with Recorder(net, every=1) as rec:
        net(x)
        assert any(m._forward_hooks for m in net.modules())
    assert [(len(m._forward_hooks), len(m._backward_hooks)) for m in net.modules()] == \
        hooks_before
    recorded = len(rec.history)
    criterion, optimizer = npnet.CrossEntropyLoss(), npnet.SGD(net.parameters(), lr=0.1)
    train_step(net, criterion, optimizer, x, y)
    assert len(rec.history) == recorded and rec.step == 0  # nothing more was recorded

    # the same training with and without a recorder gives the same weights: exactly for the
    # layers as written; to float32 rounding through npnet.FastNet (as fit runs a network),
    # where hooks keep the backend from fusing BatchNorm, Sigmoid and AvgPool2d
    for fast in (False, True):
        results = []
        for watched in (False, True):
            npnet.manual_seed(0)
            net = lenet()
            rec = Recorder(net, every=1, sample_size=10) if watched else None
            optimizer = npnet.SGD(net.parameters(), lr=0.1)
            model = npnet.FastNet(net) if fast else net
            for _ in range(2):
                train_step(model, criterion, optimizer, x, y)
            if watched:
                assert rec.step == 1 and len(rec.history) == 2  # its hooks fired both steps
            results.append(net.state_dict())
        for key in results[0]:
            if fast:
                np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-5,
                                           atol=1e-6, err_msg=key)
            else:
                np.testing.assert_array_equal(results[1][key], results[0][key], err_msg=key)


def test_measure_overhead_reports_times_and_restores_the_net():
    npnet.manual_seed(0)
    net = lenet()
    before = net.state_dict()
    x, y = images(16)
    times = measure_overhead(net, x, y, every=2, steps=4)
    assert set(times) == {"step", "hooks_every_step", "hooks_sampled"}
    # only that it measured something: orderings of timings flake on a shared machine
    assert all(np.isfinite(seconds) and seconds > 0 for seconds in times.values())
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_plots_write_pngs(tmp_path):
    from npnet.plots_inside import (plot_activation_histograms, plot_activation_stats,
                                    plot_gradient_norms)
    recorders = {}
    for batch_norm in (False, True):
        npnet.manual_seed(0)
        net = lenet(batch_norm=batch_norm)
        rec = Recorder(net, every=1, sample_size=100)
        criterion, optimizer = npnet.CrossEntropyLoss(), npnet.SGD(net.parameters(), lr=0.1)
        for _ in range(3):
            train_step(net, criterion, optimizer, *images())
        rec.remove()
        recorders[f"batch_norm={batch_norm}"] = rec
    plot_activation_stats(recorders, tmp_path / "stats.png")
    plot_gradient_norms(recorders, tmp_path / "grads.png")
    figure = plot_activation_histograms(recorders, tmp_path / "hist.png", steps=[0, 2])
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 2 * 4  # 4 Sigmoids each
    for name in ("stats.png", "grads.png", "hist.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
