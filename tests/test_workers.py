"""Workers: a batch cut into parts, each run on a thread of its own (npnet/fast/workers.py).

The results must be the one-worker results to float rounding: BatchNorm's statistics are over
the whole batch, its gradients too, every parameter gradient is the sum of the parts', and
the moving averages move once per step. Where sharing is not safe (hooks, Dropout, a
learner's own layer), the network runs on one worker and says nothing.
"""

import copy

import numpy as np
import pytest

import npnet
from conftest import DTYPE_IDS, DTYPES, assert_same, step_results, twins
from npnet.fast import FastNet
from npnet.fast.workers import Exchange, default_workers, run_workers
from npnet.models import densenet, lenet, resnet

NETWORKS = {
    "lenet-bn": (lambda: lenet(batch_norm=True), (1, 28, 28)),
    "lenet": (lambda: lenet(batch_norm=False), (1, 28, 28)),
    "resnet": (lambda: resnet(), (1, 28, 28)),
    "densenet": (lambda: densenet(), (1, 28, 28)),
}


def batch(shape, count=48, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.random((count, *shape)).astype(dtype), rng.integers(0, 10, count)


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_two_workers_give_the_one_worker_results(name, training, dtype):
    make, shape = NETWORKS[name]
    one, two = twins(make, dtype=dtype, training=training)
    x, labels = batch(shape, dtype=dtype)
    split, alone = FastNet(two, input_grad=True, workers=2), FastNet(one, input_grad=True,
                                                                       workers=1)
    expected = step_results(alone, x, labels)
    got = step_results(split, x, labels)
    assert len(split._helpers) == 1  # it did run on two
    if dtype == np.float32 and name in ("resnet", "densenet"):
        assert_same_but_at_relu_kinks(expected, got)
    else:
        assert_same(expected, got, dtype)


def assert_same_but_at_relu_kinks(expected: dict, got: dict) -> None:
    """float32 rounding that differs in the last bit moves a few ReLU inputs across 0, which
    routes those entries' gradients otherwise, and the weight gradients before them sum that
    up. The forward's numbers (continuous at a kink) must be equal to float32 rounding, the
    gradients close as whole arrays (the float64 runs prove them entry by entry)."""
    assert expected.keys() == got.keys()
    # a bias before a BatchNorm has a gradient that is rounding noise: judged on the scale
    # of the network's gradients
    floor = 1e-3 * max(np.linalg.norm(a) for k, a in expected.items() if k.startswith("dL/d"))
    for key, want in expected.items():
        assert got[key].dtype == np.float32, key
        if key.startswith("dL/d"):
            difference = np.linalg.norm(got[key] - want)
            assert difference <= 1e-2 * max(np.linalg.norm(want), floor), key
        else:
            np.testing.assert_allclose(got[key], want, rtol=2e-5,
                                       atol=2e-5 * float(np.abs(want).max()), err_msg=key)


def test_uneven_parts_and_three_workers_in_float64():
    one, three = twins(lambda: lenet(batch_norm=True))
    x, labels = batch((1, 28, 28), count=53)  # 18 + 18 + 17
    runners = FastNet(one, input_grad=True, workers=1), FastNet(three, input_grad=True,
                                                                 workers=3)
    expected, got = (step_results(runner, x, labels) for runner in runners)
    assert len(runners[1]._helpers) == 2
    assert_same(expected, got, np.float64)


def test_every_plan_is_made_on_the_calling_thread(monkeypatch):
    """A block's branches plan (and prove) their kernels at their first pass; were that on a
    worker's thread, the proof's BatchNorm would join the workers' exchange. The first pass
    is split like every other (a resumed run splits as the run it continues)."""
    import threading

    from npnet.fast.chain import Planner
    threads = []
    original = Planner._make_plan
    monkeypatch.setattr(Planner, "_make_plan", lambda self, *args: (
        threads.append(threading.current_thread().name), original(self, *args))[1])
    npnet.manual_seed(0)
    fast = FastNet(resnet(), workers=2)
    x, labels = batch((1, 28, 28), count=40)
    step_results(fast, x, labels)
    assert len(fast._helpers) == 1  # split at once
    step_results(fast, x, labels)
    assert set(threads) == {threading.current_thread().name}


def test_a_layer_run_as_written_keeps_the_batch_on_one_worker(monkeypatch):
    """An edited BatchNorm runs as written; on half a batch it would take half a batch's
    statistics, so the whole network stays on one worker, and gives the one-worker numbers."""
    import warnings

    from npnet import batchnorm
    original = batchnorm.batch_norm_backward
    monkeypatch.setattr(batchnorm, "batch_norm_backward",
                        lambda grad_out, cache: tuple(2 * g for g in original(grad_out, cache)))
    one, two = twins(lambda: lenet(batch_norm=True))
    x, labels = batch((1, 28, 28))
    runners = FastNet(one, workers=1), FastNet(two, workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", npnet.FastPathWarning)
        expected, got = (step_results(runner, x, labels) for runner in runners)
    assert runners[1]._helpers == []
    assert_same(expected, got, np.float64)


def test_several_steps_with_an_optimizer_stay_together():
    """An optimizer replaces nothing but writes into .data; the twins see every step."""
    one, two = twins(lambda: resnet(), dtype=np.float64)
    x, labels = batch((1, 28, 28), count=40, seed=3)
    runners = [FastNet(one, workers=1), FastNet(two, workers=2)]
    optimizers = [npnet.SGD(net.parameters(), lr=0.1, momentum=0.9) for net in (one, two)]
    criterion = npnet.CrossEntropyLoss()
    for _ in range(4):
        for runner, optimizer in zip(runners, optimizers):
            optimizer.zero_grad()
            criterion(runner(x), labels)
            runner.backward(criterion.backward())
            optimizer.step()
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_wrong_batchnorm_exchange_would_be_caught():
    """The test above can fail: with each worker's statistics over its own part only (no
    exchange), the two-worker results differ from the one-worker results."""
    from npnet.fast import workers

    one, two = twins(lambda: lenet(batch_norm=True))
    x, labels = batch((1, 28, 28))
    alone, split = FastNet(one, workers=1), FastNet(two, workers=2)
    expected = step_results(alone, x, labels)
    original = workers.batch_total
    try:
        import npnet.fast.batchnorm as fast_batchnorm
        fast_batchnorm.batch_total = lambda *arrays: arrays  # each part on its own
        got = step_results(split, x, labels)
    finally:
        fast_batchnorm.batch_total = original
    assert len(split._helpers) == 1
    assert not np.allclose(got["logits"], expected["logits"], rtol=1e-6)


@pytest.mark.parametrize("why", ["hook", "dropout", "own layer", "small batch"])
def test_unsafe_networks_and_small_batches_run_on_one_worker(why):
    npnet.manual_seed(0)
    net = lenet(batch_norm=True)
    count = 48
    if why == "hook":
        net[3].register_forward_hook(lambda *args: None)
    elif why == "dropout":
        net.layers.insert(9, npnet.Dropout(0.2))
    elif why == "own layer":
        class Doubled(npnet.Sigmoid):
            def forward(self, x):
                return super().forward(x)
        net.layers[2] = Doubled()
    else:
        count = 20  # two parts of 10: below MIN_SAMPLES_PER_WORKER
    fast = FastNet(net, workers=2)
    x, _ = batch((1, 28, 28), count=count, dtype=np.float32)
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", npnet.FastPathWarning)
            fast(x)
    assert fast._helpers == []  # no twin was made: one worker ran it


def test_an_error_in_one_worker_is_raised_and_releases_the_other():
    def work(k):
        if k == 1:
            raise ValueError("worker 1 failed")
        return Exchange_total_waits_for(k)

    shared = {}

    def Exchange_total_waits_for(k):  # noqa: N802 - a stand-in that waits like a BatchNorm
        from npnet.fast.workers import batch_total
        shared[k] = "waiting"
        return batch_total(np.ones(3))

    with pytest.raises(ValueError, match="worker 1 failed"):
        run_workers(work, 2)
    results = run_workers(lambda k: Exchange_total_waits_for(k), 2)  # the pool still works
    np.testing.assert_array_equal(results[0][0], np.full(3, 2.0))


def test_the_exchange_adds_in_worker_order():
    exchange = Exchange(1)
    assert exchange.total(0, (np.ones(2),))[0].tolist() == [1.0, 1.0]
    totals = run_workers(lambda k: __import__("npnet.fast.workers", fromlist=["batch_total"])
                         .batch_total(np.full(2, float(k + 1))), 3)
    assert all(total[0].tolist() == [6.0, 6.0] for total in totals)


def test_workers_setting(monkeypatch):
    monkeypatch.setenv("NPNET_THREADS", "1")
    assert default_workers() == 1 and FastNet(lenet()).workers == 1
    monkeypatch.setenv("NPNET_THREADS", "two")
    with pytest.raises(ValueError, match="NPNET_THREADS must be a whole number"):
        default_workers()
    monkeypatch.delenv("NPNET_THREADS")
    assert 1 <= default_workers() <= 2  # the cores this process may use, at most 2
    with pytest.raises(ValueError, match="FastNet expects workers >= 1"):
        FastNet(lenet(), workers=0)


def test_gradcheck_through_two_workers():
    npnet.manual_seed(0)
    net = lenet(batch_norm=True)
    x, labels = batch((1, 28, 28), count=32)
    result = npnet.gradcheck(FastNet(net, input_grad=True, workers=2), x,
                             loss=npnet.CrossEntropyLoss(), labels=labels, training=True,
                             max_entries=3)
    assert result.verdict == "correct", str(result)


def test_two_worker_steps_are_bitwise_repeatable():
    """The same step twice gives the same bits: the parts, the order of the exchange's sums
    and OpenBLAS's one thread per worker (held until the last worker is done: a product that
    ran after the limit was lifted took two threads and rounded otherwise, 1 step in 4 on
    numpy 1.24) do not depend on how the threads happen to run."""
    npnet.manual_seed(0)
    base = lenet(batch_norm=True)
    x, labels = batch((1, 28, 28), count=256, dtype=np.float32)
    first = None
    for _ in range(6):
        results = step_results(FastNet(copy.deepcopy(base), workers=2), x, labels)
        first = first or results
        for key in first:
            np.testing.assert_array_equal(results[key], first[key], err_msg=key)
