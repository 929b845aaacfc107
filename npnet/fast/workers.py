"""Workers: the two cores of a laptop used by npnet itself, each on a part of the batch.

OpenBLAS can spread one matrix product over two cores, but LeNet's products are thin, its
threads wait for each other by spinning, and on a machine where something else runs, a
spinning thread that lost its core stalls the other: a busy core then cost npnet 60% of its
speed. Instead, ``FastNet`` cuts a batch into one part per worker and runs each part through
the same kernels, with OpenBLAS held to one thread per worker:

    x (N, ...) -> parts x_0 (N_0, ...), x_1 (N_1, ...)      N_0 + N_1 = N
    worker 0: the network's own layers on x_0, in this process
    worker k: a copy of the network on x_k, in a helper process (helper.py), or twins of the
              layers on a thread of this process (threads.py)

Why processes: every NumPy call hands Python's GIL to the other thread and takes it back, and
each hand-over wakes a sleeping thread. Two threads each running half a batch of LeNet ran each
half 1.7x slower than one thread alone; two processes ran at full speed (benchmarks/README.md,
phase 7). A ResNet's long products seldom want the GIL, and threads copy nothing: which of the
two runs, or (with the count not set) one worker on a busy machine, is timed (WorkerChoice).

Everything but BatchNorm in training mode treats each sample on its own, so the parts need
nothing from each other. BatchNorm's statistics are over the whole batch: at each BatchNorm
every worker gets every worker's per-feature statistics (``batch_parts``; ``Team.gather``
between processes) and combines them the same way, in worker order: in forward each part's
count, mean and squared deviations from its mean, combined into the whole batch's mean and
variance by Chan's update (batchnorm.combine_statistics: one exchange, where sums and then
centered squares took two), and in backward sum(dL/dy) and sum(dL/dy * x_hat), added up
(``batch_total``). The result is the one-worker result up to float rounding.

Before each pass worker 0 sends each helper the network's state (``network_state``: every
parameter, buffer and setting); after backward, the helpers' parameter gradients are added
into the layers' own ``.grad``, in worker order.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection

import numpy as np

from ..module import Module, Parameter
from .channel import Channel
from .proof import bare_copy

MIN_SAMPLES_PER_WORKER = 16  # below this, a part is too small to be worth a worker
DEFAULT_MAX_WORKERS = 2  # the most workers a FastNet takes when not told (measured: README, Speed)
KEPT_NETWORKS = 4  # copies of networks a helper process keeps (one per FastNet, the latest)
TIMEOUT = 600  # seconds a worker waits for another before it gives up (a last resort)


def default_workers() -> int:
    """How many workers a FastNet uses when not told: the environment variable NPNET_THREADS
    if set, else the cores this process may run on (``os.sched_getaffinity``), at most
    DEFAULT_MAX_WORKERS; 1 where helper processes cannot be started (not POSIX)."""
    setting = threads_setting()
    if setting:
        try:
            workers = int(setting)
        except ValueError:
            raise ValueError(f"NPNET_THREADS must be a whole number of threads, e.g. 1 or 2; "
                             f"got {setting!r}") from None
        if workers < 1:
            raise ValueError(f"NPNET_THREADS must be at least 1; got {workers}")
        return workers
    if os.name != "posix":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(DEFAULT_MAX_WORKERS, cores))


def threads_setting() -> str:
    """NPNET_THREADS as set ('' if not)."""
    return os.environ.get("NPNET_THREADS", "").strip()


class WorkerChoice:
    """How each pass of a plan runs, by measurement: split over helper processes
    ("processes", here), split over threads of this process ("threads", threads.py), or on
    one worker ("one", only when the count of workers was not set).

    - Processes suit LeNet: its many short NumPy calls would hand Python's GIL between two
      threads at every call (each half batch ran 1.7x slower on two threads than alone).
    - Threads suit a ResNet: its long products seldom want the GIL, and threads need no copy
      of the network's state. The two give the same bits, so a run that sets the count
      (``--threads``, NPNET_THREADS, ``FastNet(workers=k)``) may switch between them freely
      and still repeats bit for bit.
    - One worker suits a busy machine: beside one busy program, the helper process and this
      one take turns with a core and wait for each other at every BatchNorm (LeNet's step
      took 44 ms split, 30 ms on one worker). One worker adds BatchNorm's sums over other
      parts than a split pass, so its results differ in float rounding: it is a way only when
      the count was not set.

    Each plan's passes are timed each way, per sample, forward and backward: after a first
    pass each way (it starts processes and plans kernels), the ways in turn until each has
    KEPT timings; then the way whose least recent timing is shortest runs, and now and then
    another, in turn (a probe), to notice when the machine gets busy or quiet again, or a way
    whose first timings were taken in a bad moment (benchmarks/README.md, phases 7 and 8).
    The first probe comes PROBE_EVERY passes after the fastest way changed, and each probe
    that leaves it the fastest doubles the wait, up to PROBE_EVERY_MOST passes: beside a busy
    program a split pass can take three times as long, and probing every 16th cost LeNet's
    evaluation a quarter of its speed there."""

    PROBE_EVERY, PROBE_EVERY_MOST = 16, 256
    KEPT = 3  # timings kept per way: the least of them is its cost (noise only adds time)

    def __init__(self, ways: tuple):
        self.ways = ways
        self.seconds: dict = {}  # (plan, way, "forward" or "backward") -> the last KEPT times
        self.runs: dict = {}     # (plan, way) -> passes run
        self.probing: dict = {}  # plan -> [fastest way, passes since it or the last probe,
        #                                    passes between probes, probes made]

    def pick(self, plan) -> str:
        if len(self.ways) == 1:
            return self.ways[0]
        runs = [self.runs.get((plan, way), 0) for way in self.ways]
        if min(runs) <= self.KEPT:  # a first pass each way (not timed), then KEPT each
            return self.ways[runs.index(min(runs))]
        best, *others = sorted(self.ways, key=lambda way: self.cost(plan, way))
        probing = self.probing.get(plan)
        if probing is None or probing[0] != best:  # a new fastest way: probe soon
            probing = self.probing[plan] = [best, 0, self.PROBE_EVERY, 0]
        probing[1] += 1
        if probing[1] < probing[2]:
            return best
        probing[1], probing[2] = 0, min(2 * probing[2], self.PROBE_EVERY_MOST)
        probing[3] += 1
        return others[(probing[3] - 1) % len(others)]

    def cost(self, plan, way: str) -> float:
        return sum(min(self.seconds.get((plan, way, half), [0.0]))
                   for half in ("forward", "backward"))

    def record(self, plan, way: str, half: str, seconds: float) -> None:
        if len(self.ways) == 1:
            return
        if half == "forward":
            self.runs[(plan, way)] = self.runs.get((plan, way), 0) + 1
        if self.runs.get((plan, way), 0) > 1:
            kept = self.seconds.setdefault((plan, way, half), [])
            kept.append(seconds)
            del kept[:-self.KEPT]


# --------------------------------------------------------------------- the exchange
_context = threading.local()  # this thread's (exchange, worker index), while it is a worker


def batch_parts(*arrays) -> list:
    """Every worker's ``arrays`` (its per-part sums or statistics), in worker order: [arrays]
    when this thread is not a worker of a split batch. Parts of different shapes mean the
    workers are at different BatchNorms: refused."""
    exchange = getattr(_context, "exchange", None)
    if exchange is None:
        return [arrays]
    parts = exchange.gather(_context.worker, arrays)
    check_in_step(parts)
    return parts


def batch_total(*arrays: np.ndarray) -> tuple:
    """The sums over the whole batch of per-part sums ``arrays``: the same arrays when this
    thread is not a worker of a split batch."""
    return add_in_order(batch_parts(*arrays))


@contextlib.contextmanager
def working_as(exchange, worker: int):
    """Within this, ``batch_parts`` and ``batch_total`` reach the workers of ``exchange`` (an
    object with ``gather(worker, arrays) -> every worker's arrays``)."""
    saved = getattr(_context, "exchange", None), getattr(_context, "worker", 0)
    _context.exchange, _context.worker = exchange, worker
    try:
        yield
    finally:
        _context.exchange, _context.worker = saved


def alone():
    """Within this, this thread sums over its own part only (a proof on a tiny batch)."""
    return working_as(None, 0)


def check_in_step(parts: list) -> None:
    """Refuse parts of different shapes: the workers are at different BatchNorms."""
    shapes = {tuple(np.shape(array) for array in part) for part in parts}
    if len(shapes) > 1:
        raise RuntimeError(f"npnet.fast workers out of step: partial sums of shapes "
                           f"{sorted(shapes)} met at one exchange")


def add_in_order(parts: list) -> tuple:
    """parts[0] + parts[1] + ..., array by array, always in worker order (so every worker gets
    the same numbers). Parts of different shapes are refused, never added."""
    check_in_step(parts)
    totals = []
    for i in range(len(parts[0])):
        total = parts[0][i]
        for part in parts[1:]:
            total = total + part[i]
        totals.append(total)
    return tuple(totals)


class HelperExchange:
    """A helper's side of the exchange (see ``Team.gather``): send its part's sums to worker
    0, receive worker 0's, and with more than one helper, every worker's."""

    def __init__(self, channel: Channel, workers: int):
        self.channel, self.workers = channel, workers

    def gather(self, worker: int, arrays: tuple) -> list:
        self.channel.send("sums", sums=tuple(arrays))
        first = self._recv("sums")["sums"]  # worker 0's
        if self.workers == 2:
            return [first, tuple(arrays)]
        return self._recv("parts")["parts"]

    def _recv(self, expected: str) -> dict:
        kind, fields, _ = self.channel.recv(TIMEOUT)
        if kind != expected:
            raise RuntimeError(f"npnet.fast helper expected {expected!r}, got {kind!r}")
        return fields


# ------------------------------------------------------------ the network's state
class StatePlaces:
    """Where ``net``'s state lives: (module index, module, attribute name) of everything
    ``own_state`` yields, listed once and reused while the modules and their attributes stay
    the same (``fits``): walking them every pass took 0.2 ms, before the helpers could start."""

    def __init__(self, net: Module, shape: tuple):
        self.shape = shape  # structure(net)
        modules = list(net.modules())
        self.places = [(index, module, name) for index, module in enumerate(modules)
                       for name, _ in own_state(module)]
        self.sizes = [(module, len(vars(module))) for module in modules]

    def fits(self, shape: tuple) -> bool:
        """Whether these are still the places, for a network of structure ``shape``: the same
        modules, none of which has gained or lost an attribute."""
        return shape == self.shape and all(len(vars(module)) == size
                                           for module, size in self.sizes)


def network_state(net: Module, places: StatePlaces | None = None) -> tuple[list, dict]:
    """What a helper's copy needs to compute what ``net`` computes now: (settings, arrays).
    arrays: every parameter's values and every array attribute (BatchNorm's moving
    statistics), named 'state <module index>.<name>'; settings: every other attribute (mode,
    momentum, ...). ``places``: where to read them (listed afresh if not given)."""
    if places is None:
        places = StatePlaces(net, structure(net))
    settings, arrays = [], {}
    for index, module, name in places.places:
        value = vars(module).get(name, places)
        if value is places:  # an attribute went and another came: list them again
            return network_state(net)
        if isinstance(value, Parameter):
            arrays[f"state {index}.{name}"] = value.data
            settings.append((index, name, ("parameter", value.version)))
        elif isinstance(value, np.ndarray):
            arrays[f"state {index}.{name}"] = value
        else:
            settings.append((index, name, value))
    return settings, arrays


def set_network_state(net: Module, settings: list, arrays: dict,
                      modules: list | None = None) -> None:
    """Make ``net`` (a helper's copy) hold ``network_state``'s values; ``modules``:
    ``list(net.modules())``, if the caller keeps it."""
    modules = list(net.modules()) if modules is None else modules
    for index, name, value in settings:
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "parameter":
            param, data = vars(modules[index])[name], arrays[f"state {index}.{name}"]
            param.__dict__["_data"], param.version = data, value[1]
            if param.grad.shape != data.shape or param.grad.dtype != data.dtype:
                param.grad = np.zeros_like(data)
        else:
            object.__setattr__(modules[index], name, value)
    for key, data in arrays.items():
        if not key.startswith("state "):  # the message's own arrays (the part of the batch)
            continue
        index, name = key[len("state "):].split(".", 1)
        if not isinstance(vars(modules[int(index)]).get(name), Parameter):
            object.__setattr__(modules[int(index)], name, data)


def own_state(module: Module):
    """(name, value) of what ``module`` itself holds that a copy must follow: parameters,
    buffers, mode and settings; not its cache, nor the modules inside it."""
    for name, value in vars(module).items():
        if name not in ("_cache", "_cache_versions") and not isinstance(value, Module) \
                and not holds_modules(value):
            yield name, value


def holds_modules(value) -> bool:
    """Whether ``value`` is a list of layers (``Sequential.layers``, ``Concat.branches``)."""
    return isinstance(value, list) and any(isinstance(item, Module) for item in value)


def structure(module: Module) -> tuple:
    """What a helper's copy must be rebuilt for when it changes: which modules, in which
    places."""
    return tuple((name, id(part)) for name, part in module.named_modules())


# --------------------------------------------------------------- OpenBLAS threads
class BlasThreads:
    """Holds OpenBLAS (and any BLAS numpy uses) to one thread in this process while the
    helpers run, with threadpoolctl; does nothing if threadpoolctl is missing."""

    _controller = None

    @classmethod
    def one_per_worker(cls):
        if cls._controller is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                return contextlib.nullcontext()
            cls._controller = ThreadpoolController()
        return cls._controller.limit(limits=1, user_api="blas")


# ------------------------------------------------------------- the helper processes
class HelperProcess:
    """One helper process (helper.py), started with the same Python and the same npnet, its
    OpenBLAS at one thread, in a session of its own (a Ctrl-C in the terminal reaches this
    process only, which stops the helper). It ends when this process closes the channel or
    ends."""

    def __init__(self):
        ours, theirs = socket.socketpair()
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", NPNET_THREADS="1",
                   PYTHONPATH=os.pathsep.join([package_parent]
                                              + os.environ.get("PYTHONPATH", "").split(
                                                  os.pathsep)).rstrip(os.pathsep))
        # sys.path[0] is the package's folder, not the working directory that ``-c`` puts
        # first: a folder named npnet there would otherwise be the helper's npnet
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.path[0] = sys.argv[2]; "
             "from npnet.fast.helper import main; main(int(sys.argv[1]))",
             str(theirs.fileno()), package_parent],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
            start_new_session=True)
        theirs.close()
        self.channel = Channel(Connection(ours.detach()))
        self.networks: dict = {}  # key -> structure it was sent for

    def send(self, kind: str, arrays: dict | None = None, **fields) -> None:
        try:
            self.channel.send(kind, arrays, **fields)
        except OSError as error:
            self._stopped_answering(error)

    def _stopped_answering(self, error: Exception):
        code = self.process.poll()
        raise RuntimeError(f"npnet.fast: a helper process stopped answering ("
                           f"{type(error).__name__}{'' if code is None else f', exit code {code}'}"
                           f"); the next pass starts a new one") from None

    def recv(self, expected: str):
        """The fields and arrays of the helper's next message, which must be ``expected``;
        an error in the helper is raised here."""
        try:
            kind, fields, arrays = self.channel.recv(TIMEOUT)
        except (EOFError, OSError, TimeoutError) as error:
            self._stopped_answering(error)
        if kind == "error":
            raise fields["error"]
        if kind != expected:
            raise RuntimeError(f"npnet.fast: a helper process sent {kind!r}, not {expected!r}")
        return fields, arrays

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()  # first: a helper told by a closed socket might still print
            self.process.wait(5)
        with contextlib.suppress(Exception):
            self.channel.close()


class Team:
    """Worker 0 (this process) and helper processes 1 .. k for one pass: sends them their
    parts, is worker 0's exchange, collects their results. Any failure stops the helpers
    (``stop``): a new pass starts new ones."""

    def __init__(self, helpers: list):
        self.helpers = helpers

    def gather(self, worker: int, arrays: tuple) -> list:
        """Every worker's sums, in worker order. Worker 0 sends its own before it waits for
        the helpers', so that with one helper (two cores) each side waits for one message
        from the other, sent at about the same time, not for a round trip through worker 0
        (eight exchanges a LeNet training step: 3.7 ms of waiting on each side, phase 8)."""
        parts = [tuple(arrays)]
        for helper in self.helpers:
            helper.send("sums", sums=parts[0])
        parts += [helper.recv("sums")[0]["sums"] for helper in self.helpers]
        if len(self.helpers) > 1:  # each helper has worker 0's sums and its own: send all
            for helper in self.helpers:
                helper.send("parts", parts=parts)
        return parts

    def results(self, expected: str) -> list:
        return [helper.recv(expected) for helper in self.helpers]

    def stop(self) -> None:
        for helper in self.helpers:
            helper.stop()
        _pool[:] = [helper for helper in _pool if helper not in self.helpers]


_pool: list = []  # the helper processes of this process, shared by every FastNet
_keys = itertools.count()


def network_key() -> int:
    """A number for a FastNet, unique in this process (ids are reused)."""
    return next(_keys)


def team_for(net: Module, key: int, input_grad: bool, count: int, shape: tuple) -> Team:
    """``count`` helper processes that hold a copy of ``net`` (sent when new to them or when
    its structure, ``shape = structure(net)``, changed), started if there are fewer."""
    while len(_pool) < count:
        _pool.append(HelperProcess())
    helpers = _pool[:count]
    for helper in helpers:
        if helper.networks.get(key) != shape:
            helper.send("network", key=key, input_grad=input_grad,
                                network=pickle.dumps(bare_copy(net)))
            remember(helper.networks, key, shape)
    return Team(helpers)


def remember(networks: dict, key: int, value) -> None:
    """networks[key] = value, forgetting the oldest beyond KEPT_NETWORKS: the same rule on
    both sides, so that this process knows which networks a helper still holds."""
    networks[key] = value
    while len(networks) > KEPT_NETWORKS:
        del networks[next(iter(networks))]


@atexit.register
def _stop_pool() -> None:
    for helper in _pool:
        helper.stop()
    _pool.clear()
