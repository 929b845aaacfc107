"""Workers: a batch cut into parts, worker 0's run here and the others' in helper processes
(npnet/fast/workers.py, helper.py, channel.py).

The results must be the one-worker results to float rounding: BatchNorm's statistics are over
the whole batch, its gradients too, every parameter gradient is the sum of the parts', and
the moving averages move once per step. Where sharing is not safe (hooks, Dropout, a
learner's own layer), the network runs on one worker and says nothing.
"""

import copy
import os

import numpy as np
import pytest

import npnet
from conftest import DTYPE_IDS, DTYPES, assert_same, step_results, twins
from npnet.fast import FastNet
from npnet.fast import workers
from npnet.fast.workers import add_in_order, default_workers
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
    assert split._splits == 1  # it did run on two
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
    # a bias before a BatchNorm has a gradient that is rounding noise, and one ReLU input
    # that rounds to the other side of 0 moves a small gradient (a BatchNorm's beta before a
    # residual sum: seen, 1.1e-4 against a norm of 0.0085): both judged on the scale of the
    # network's gradients as well
    scale = max(np.linalg.norm(a) for k, a in expected.items() if k.startswith("dL/d"))
    for key, want in expected.items():
        assert got[key].dtype == np.float32, key
        if key.startswith("dL/d"):
            difference = np.linalg.norm(got[key] - want)
            assert difference <= 1e-2 * max(np.linalg.norm(want), 1e-3 * scale) \
                + 2e-4 * scale, key
        else:
            np.testing.assert_allclose(got[key], want, rtol=2e-5,
                                       atol=2e-5 * float(np.abs(want).max()), err_msg=key)


def test_uneven_parts_and_three_workers_in_float64():
    one, three = twins(lambda: lenet(batch_norm=True))
    x, labels = batch((1, 28, 28), count=53)  # 18 + 18 + 17
    runners = FastNet(one, input_grad=True, workers=1), FastNet(three, input_grad=True,
                                                                 workers=3)
    expected, got = (step_results(runner, x, labels) for runner in runners)
    assert runners[1]._splits == 1 and len(workers._pool) >= 2
    assert_same(expected, got, np.float64)


def test_every_plan_is_made_on_the_calling_thread(monkeypatch):
    """A block's branches plan (and prove) their kernels at their first pass; that is done
    ahead, on two samples, on the calling thread, where a proof's BatchNorm cannot join the
    workers' exchange. The first pass is split like every other (a resumed run splits as the
    run it continues)."""
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
    assert fast._splits == 1  # split at once
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
    assert runners[1]._splits == 0
    assert_same(expected, got, np.float64)


def test_several_steps_with_an_optimizer_stay_together():
    """An optimizer replaces nothing but writes into .data; the twins see every step."""
    one, two = twins(lambda: resnet(), dtype=np.float64)
    x, labels = batch((1, 28, 28), count=40, seed=3)
    train_side_by_side([FastNet(one, workers=1), FastNet(two, workers=2)], x, labels, 4)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=name)


def train_side_by_side(runners: list, x, labels, steps: int) -> list:
    """``steps`` SGD steps (momentum 0.9) of each runner in turn on the same batch; returns
    how the last runner ran each step (its ``_way``)."""
    optimizers = [npnet.SGD(runner.parameters(), lr=0.1, momentum=0.9) for runner in runners]
    criterion = npnet.CrossEntropyLoss()
    ways = []
    for _ in range(steps):
        for runner, optimizer in zip(runners, optimizers):
            optimizer.zero_grad()
            criterion(runner(x), labels)
            runner.backward(criterion.backward())
            optimizer.step()
        ways.append(runners[-1]._way)
    return ways


def test_a_wrong_batchnorm_exchange_would_be_caught(monkeypatch):
    """The test above can fail: with each worker's statistics over its own part only (each
    gets its own sums back from the exchange), the two-worker results differ from the
    one-worker results."""
    def own_sums_only(self, worker, arrays):
        for helper in self.helpers:
            sums = helper.recv("sums")[0]["sums"]
            helper.send("sums", sums=sums)  # its own, as if they were worker 0's
        return [tuple(arrays)]

    one, two = twins(lambda: lenet(batch_norm=True))
    x, labels = batch((1, 28, 28))
    alone, split = FastNet(one, workers=1), FastNet(two, workers=2)
    expected = step_results(alone, x, labels)
    monkeypatch.setattr(workers.Team, "gather", own_sums_only)
    got = step_results(split, x, labels)
    assert split._splits == 1
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
    assert fast._splits == 0  # one worker ran it


def step_on_two(seed=0):
    npnet.manual_seed(seed)
    fast = FastNet(lenet(batch_norm=True), workers=2, executor="processes")
    x, labels = batch((1, 28, 28), count=40, dtype=np.float32)
    results = step_results(fast, x, labels)
    assert fast._splits == 1
    return fast, results


def test_an_error_in_a_helper_is_raised_here_and_the_next_pass_starts_afresh():
    fast, _ = step_on_two()
    team = workers.team_for(fast.net, fast._key, False, 1, workers.structure(fast.net))
    helper = team.helpers[0]
    helper.send("forward", {"x": np.zeros((2, 1, 28, 28), np.float32)}, key=-1,
                        settings=[], worker=1)  # a network it was never sent
    with pytest.raises(KeyError) as caught:
        team.results("output")
    assert "raised in npnet's helper process" in "".join(caught.value.__notes__)
    team.stop()
    assert helper not in workers._pool and helper.process.wait(5) is not None
    step_on_two()  # a new helper


def test_a_helper_that_dies_is_reported_and_replaced():
    fast, _ = step_on_two()
    helper = workers._pool[0]
    helper.process.kill()
    helper.process.wait(5)
    x, labels = batch((1, 28, 28), count=40, dtype=np.float32)
    with pytest.raises(RuntimeError, match="helper process stopped answering"):
        step_results(fast, x, labels)
    assert helper not in workers._pool
    step_results(fast, x, labels)  # on a new one
    assert fast._splits == 2


def test_no_shared_memory_file_is_left_behind():
    step_on_two()
    folder = __import__("npnet.fast.channel", fromlist=["shared_folder"]).shared_folder()
    mine = [helper.channel._outbox.path for helper in workers._pool]
    left = [name for name in os.listdir(folder) if name.startswith("npnet-")
            and os.path.join(folder, name) in mine]
    assert left == []  # each side removed the name once both had it mapped


def test_the_exchange_adds_in_worker_order():
    totals = add_in_order([(np.full(2, 1.0), 4), (np.full(2, 2.0), 4), (np.full(2, 3.0), 5)])
    assert totals[0].tolist() == [6.0, 6.0] and totals[1] == 13
    with pytest.raises(RuntimeError, match="workers out of step"):
        add_in_order([(np.ones(2),), (np.ones(3),)])


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


# ------------------------------------------------------------ which way, by timing
def test_the_choice_measures_each_way_then_runs_the_fastest_and_probes_another():
    choice = workers.WorkerChoice(("processes", "one"))
    seen = []
    for _ in range(8):  # each way: a first pass (not timed), then three timed, in turn
        way = choice.pick("plan")
        seen.append(way)
        choice.record("plan", way, "forward", {"processes": 1.0, "one": 3.0}[way])
        choice.record("plan", way, "backward", {"processes": 1.0, "one": 0.5}[way])
    assert seen == ["processes", "one"] * 4
    # processes: 2 s a pass, one: 3.5 s: processes from now on, but for a probe after 16
    # passes, then 32, 64 ... up to 256 while the probes find one slower
    ways = [choice.pick("plan") for _ in range(64)]
    assert [i for i, way in enumerate(ways) if way == "one"] == [15, 47]
    ways = [choice.pick("plan") for _ in range(2000)]
    probes = [i for i, way in enumerate(ways) if way == "one"]
    assert np.diff(probes)[0] == 128 and set(np.diff(probes)[1:]) == {256}
    choice.record("plan", "processes", "forward", 0.5)  # a quicker pass counts at once
    assert choice.cost("plan", "processes") == 1.5
    for _ in range(3):  # the machine got busy: split passes take 9 s now
        choice.record("plan", "processes", "forward", 9.0)
    assert choice.pick("plan") == "one"


def test_probes_take_the_other_ways_in_turn():
    choice = workers.WorkerChoice(("processes", "threads", "one"))
    for _ in range(12):
        way = choice.pick("plan")
        choice.record("plan", way, "forward", {"processes": 1.0, "threads": 1.1, "one": 1.2}[way])
    ways = [choice.pick("plan") for _ in range(112)]  # probes after 16, 32 and 64 passes
    assert [way for way in ways if way != "processes"] == ["threads", "one", "threads"]
    choice.record("plan", "threads", "forward", 0.5)  # threads got faster: probes come soon
    ways = [choice.pick("plan") for _ in range(16)]
    assert ways[:15] == ["threads"] * 15 and ways[15] in ("processes", "one")


def test_a_count_that_is_set_never_runs_on_one_worker(monkeypatch):
    monkeypatch.delenv("NPNET_THREADS", raising=False)
    assert FastNet(lenet(), workers=2)._choice.ways == ("processes", "threads")
    assert FastNet(lenet())._choice.ways == ("processes", "threads", "one")
    monkeypatch.setenv("NPNET_THREADS", "2")
    assert FastNet(lenet())._choice.ways == ("processes", "threads")
    assert FastNet(lenet(), executor="threads")._choice.ways == ("threads",)
    with pytest.raises(ValueError, match="FastNet expects executor"):
        FastNet(lenet(), executor="gpu")


@pytest.mark.parametrize("name", ["lenet-bn", "resnet", "densenet"])
def test_processes_and_threads_give_the_same_bits(name):
    """Steps with an optimizer, the way switching from pass to pass as the timing switches
    it, against each way alone: every parameter and buffer equal bit for bit (float32)."""
    make, shape = NETWORKS[name]
    nets = twins(make, dtype=np.float32, count=3)
    x, labels = batch(shape, count=40, seed=5, dtype=np.float32)
    runners = [FastNet(nets[0], workers=2, executor="processes"),
               FastNet(nets[1], workers=2, executor="threads"), FastNet(nets[2], workers=2)]
    ways = train_side_by_side(runners, x, labels, 5)
    assert runners[0]._way == "processes" and runners[1]._way == "threads"
    assert set(ways) == {"processes", "threads"}  # the timed one ran both
    for state in (nets[1].state_dict(), nets[2].state_dict()):
        for (key, want), got in zip(nets[0].state_dict().items(), state.values()):
            np.testing.assert_array_equal(got, want, err_msg=key)


def test_with_no_count_set_fastnet_times_every_way(monkeypatch):
    monkeypatch.delenv("NPNET_THREADS", raising=False)
    npnet.manual_seed(0)
    fast = FastNet(lenet(batch_norm=True))
    if fast.workers < 2:
        pytest.skip("one core here: nothing to choose")
    x, labels = batch((1, 28, 28), count=40, dtype=np.float32)
    ways = []
    for _ in range(6):
        splits = fast._splits
        step_results(fast, x, labels)
        ways.append(fast._way if fast._splits > splits else "one")
    assert ways == ["processes", "threads", "one"] * 2
    plan = id(fast.plan(x))
    assert {key[:2] for key in fast._choice.seconds} == {
        (plan, "processes"), (plan, "threads"), (plan, "one")}
    assert all(min(seconds) > 0 for seconds in fast._choice.seconds.values())


def test_state_places_are_listed_again_when_an_attribute_comes_or_goes():
    """network_state reads the state from places listed once (StatePlaces); they are listed
    again when a module gains or loses an attribute, or the network's structure changes."""
    net = lenet(batch_norm=True)
    places = workers.StatePlaces(net, workers.structure(net))
    assert places.fits(workers.structure(net))
    assert workers.network_state(net, places)[0] == workers.network_state(net)[0]
    net[1].momentum = 0.5  # a new value in a place already listed: read at the next pass
    index = [id(module) for module in net.modules()].index(id(net[1]))
    assert (index, "momentum", 0.5) in workers.network_state(net, places)[0]
    net[1].extra_setting = 3
    assert not places.fits(workers.structure(net))
    del net[1].extra_setting
    assert places.fits(workers.structure(net))
    del net[1].momentum  # gone, and another in its place: the same count, still read right
    net[1].extra_setting = 3
    assert places.fits(workers.structure(net))
    assert workers.network_state(net, places)[0] == workers.network_state(net)[0]
    net.layers.append(npnet.Sigmoid())
    assert not places.fits(workers.structure(net))


def test_combined_statistics_are_the_whole_batchs():
    """Chan's update of per-part counts, means and centered squares gives the whole batch's
    mean and squared deviations (float64, parts of different sizes and means); one part is
    returned as it is."""
    from npnet.fast.batchnorm import centered, combine_statistics
    rng = np.random.default_rng(3)
    parts = [rng.normal(loc, scale, (4, size)) for loc, scale, size in
             [(0.5, 1.0, 7), (3.0, 0.2, 13), (-2.0, 2.0, 5)]]
    statistics = [(part.shape[1], *centered(part)[:2]) for part in parts]
    whole = np.concatenate(parts, axis=1)
    count, mean, squares = combine_statistics(statistics)
    assert count == 25
    np.testing.assert_allclose(mean[:, 0], whole.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(squares[:, 0], whole.var(axis=1) * 25, rtol=1e-13)
    assert combine_statistics(statistics[:1])[1] is statistics[0][1]


@pytest.mark.parametrize("started", [False, True], ids=["before", "after"])
def test_a_ctrl_c_while_a_worker_thread_starts_is_raised_as_itself(monkeypatch, started):
    """A Ctrl-C that arrives inside Thread.start (seen in CI: SIGINT during training on
    threads) reaches the caller as KeyboardInterrupt, whether or not the thread got going."""
    from npnet.fast import threads
    real_start = threads._Worker.start

    def interrupted(self):
        if started:
            real_start(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(threads._Worker, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        threads.run_threads(lambda k: workers.batch_total(np.ones(2)), 2)
