"""Workers: the two cores of a laptop used by npnet itself, each on a part of the batch.

OpenBLAS can spread one matrix product over two cores, but LeNet's products are thin, its
threads wait for each other by spinning, and on a machine where something else runs, a
spinning thread that lost its core stalls the other: a busy core then cost npnet 60% of its
speed. Instead, ``FastNet`` cuts a batch into one part per worker (a thread) and runs each
part through the same kernels, with OpenBLAS held to one thread per worker:

    x (N, ...) -> parts x_0 (N_0, ...), x_1 (N_1, ...)      N_0 + N_1 = N
    worker k: the network on x_k, batch-last, its own kernels and caches

Everything but BatchNorm in training mode treats each sample on its own, so the parts need
nothing from each other. BatchNorm's statistics are over the whole batch: at each BatchNorm
the workers add up their per-feature sums (``Exchange.total``), always in worker order, and
go on with the whole batch's mean, variance and, in backward, sum(dL/dy) and
sum(dL/dy * x_hat). The result is the one-worker result up to float rounding.

Worker 0 runs the network's own layers; worker k > 0 runs twins of them (``twin``): shallow
copies whose parameters share the same arrays of values but own their ``.grad``, so two
threads never add into one array. After backward, the twins' gradients are added into the
layers' own ``.grad``, in worker order.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading

import numpy as np

from ..module import Module, Parameter

MIN_SAMPLES_PER_WORKER = 16  # below this, a part is too small to be worth a thread
DEFAULT_MAX_WORKERS = 2  # the most workers a FastNet takes when not told (measured: README, Speed)


def default_workers() -> int:
    """How many workers a FastNet uses when not told: the environment variable NPNET_THREADS
    if set, else the cores this process may run on (``os.sched_getaffinity``), at most
    DEFAULT_MAX_WORKERS."""
    setting = os.environ.get("NPNET_THREADS", "").strip()
    if setting:
        try:
            workers = int(setting)
        except ValueError:
            raise ValueError(f"NPNET_THREADS must be a whole number of threads, e.g. 1 or 2; "
                             f"got {setting!r}") from None
        if workers < 1:
            raise ValueError(f"NPNET_THREADS must be at least 1; got {workers}")
        return workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(DEFAULT_MAX_WORKERS, cores))


# --------------------------------------------------------------------- the exchange
class Exchange:
    """Where ``workers`` threads add up their partial sums: each puts its arrays in, waits
    for the others, and takes the totals, added in worker order (so every worker gets the
    same numbers, whatever order the threads arrive in)."""

    def __init__(self, workers: int):
        # the timeout is a last resort: a worker that never comes (never seen) ends the pass
        # with an error instead of leaving the others waiting for ever
        self.barrier = threading.Barrier(workers, timeout=600)
        self.slots: list = [None] * workers

    def total(self, worker: int, arrays: tuple) -> tuple:
        self.slots[worker] = arrays
        self.barrier.wait()
        shapes = {tuple(np.shape(array) for array in slot) for slot in self.slots}
        if len(shapes) > 1:  # the workers are at different BatchNorms: never add those up
            self.barrier.abort()
            raise RuntimeError(f"npnet.fast workers out of step: partial sums of shapes "
                               f"{sorted(shapes)} met at one exchange")
        totals = []
        for i in range(len(arrays)):
            total = self.slots[0][i]
            for slot in self.slots[1:]:
                total = total + slot[i]
            totals.append(total)
        self.barrier.wait()  # every worker has its totals before a slot is reused
        return tuple(totals)

    def abort(self) -> None:
        """Release the other workers with an error (one worker failed)."""
        self.barrier.abort()


_context = threading.local()  # this thread's (exchange, worker index), while it is a worker


def batch_total(*arrays: np.ndarray) -> tuple:
    """The sums over the whole batch of per-part sums ``arrays``: the same arrays when this
    thread is not a worker of a split batch."""
    exchange = getattr(_context, "exchange", None)
    if exchange is None:
        return arrays
    return exchange.total(_context.worker, arrays)


@contextlib.contextmanager
def working_as(exchange: Exchange | None, worker: int):
    """Within this, ``batch_total`` adds up over the workers of ``exchange``."""
    saved = getattr(_context, "exchange", None), getattr(_context, "worker", 0)
    _context.exchange, _context.worker = exchange, worker
    try:
        yield
    finally:
        _context.exchange, _context.worker = saved


def alone():
    """Within this, this thread sums over its own part only (a proof on a tiny batch)."""
    return working_as(None, 0)


# ------------------------------------------------------------------------- the twins
def twin(module: Module) -> Module:
    """A shallow copy of ``module`` and of every module inside it. Its parameters share the
    original's arrays of values but have a ``.grad`` of their own; ``refresh`` brings it up
    to date with the original (values, buffers, mode, settings) before each use."""
    copied = copy.copy(module)
    for name, value in vars(module).items():
        if isinstance(value, Parameter):
            object.__setattr__(copied, name, _twin_parameter(value))
        elif isinstance(value, Module):
            object.__setattr__(copied, name, twin(value))
        elif _holds_modules(value):
            object.__setattr__(copied, name, [twin(item) for item in value])  # Sequential
    object.__setattr__(copied, "cache", None)
    return copied


def _twin_parameter(param: Parameter) -> Parameter:
    copied = Parameter.__new__(Parameter)
    copied.__dict__.update(_data=param.data, version=param.version, grad=np.zeros_like(param.grad))
    return copied


def _holds_modules(value) -> bool:
    """Whether ``value`` is a list of layers (``Sequential.layers``, ``Concat.branches``)."""
    return isinstance(value, list) and any(isinstance(item, Module) for item in value)


def refresh(original: Module, copied: Module) -> None:
    """Make the twin compute what the original computes now: the same arrays of values (an
    optimizer may have replaced them), buffers, mode and settings (``momentum`` ...)."""
    for source, target in zip(original.modules(), copied.modules()):
        for name, value in vars(source).items():
            if name in ("_cache", "_cache_versions"):
                continue
            if isinstance(value, Parameter):
                mine = vars(target)[name]
                mine.__dict__["_data"], mine.version = value.data, value.version
                if mine.grad.shape != value.grad.shape or mine.grad.dtype != value.grad.dtype:
                    mine.grad = np.zeros_like(value.grad)
            elif not isinstance(value, Module) and not _holds_modules(value):
                object.__setattr__(target, name, value)


def structure(module: Module) -> tuple:
    """What a twin must be rebuilt for when it changes: which modules, in which places."""
    return tuple((name, id(part)) for name, part in module.named_modules())


def add_twin_gradients(original: Module, twins: list) -> None:
    """Add each twin's ``.grad`` into the original's, in worker order, and zero the twin's."""
    params = [param for _, param in original.named_parameters()]
    for copied in twins:
        for param, mine in zip(params, [p for _, p in copied.named_parameters()]):
            param.grad += mine.grad
            mine.grad[...] = 0


# ---------------------------------------------------------------- OpenBLAS threads
class BlasThreads:
    """Holds OpenBLAS (and any BLAS numpy uses) to one thread while the workers run, with
    threadpoolctl; does nothing if threadpoolctl is missing."""

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


# ------------------------------------------------------------------------ running them
class _Worker(threading.Thread):
    """One worker's pass on a daemon thread of its own: a thread that never ends cannot keep
    the program from exiting, nor a Ctrl-C from ending it."""

    def __init__(self, work):
        super().__init__(name="npnet-worker", daemon=True)
        self.work, self.result, self.error = work, None, None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            self.error = error


def run_workers(work, count: int) -> list:
    """[work(0), ..., work(count - 1)], each on a thread of its own (work(0) on this one),
    sharing one Exchange, with BLAS held to one thread until the last is done (a product that
    a worker ran after the limit was lifted would take two threads, and round otherwise). If
    one raises, the others are released from the exchange and its error is raised here; so is
    a Ctrl-C, which this thread notices within 0.1 s while it waits."""
    exchange = Exchange(count)

    def as_worker(k):
        with working_as(exchange, k):
            try:
                return work(k)
            except BaseException:
                exchange.abort()  # the others would wait for this one forever
                raise

    results, errors, threads = [None] * count, [], []
    with BlasThreads.one_per_worker():
        try:
            for k in range(1, count):
                threads.append(_Worker(lambda k=k: as_worker(k)))
                threads[-1].start()
            results[0] = as_worker(0)
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.1)  # a timeout: a Ctrl-C is raised here, between waits
        except BaseException as error:  # noqa: BLE001 - raised below
            exchange.abort()
            errors.append(error)
            for thread in threads:
                thread.join(2.0)  # let the others leave the kernels they are in
    for k, thread in enumerate(threads, 1):
        if thread.error is not None:
            errors.append(thread.error)
        results[k] = thread.result
    if errors:
        # the first error that is not another worker's release from the exchange
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                   errors[0])
    return results
