"""Workers on threads of this process: the other way workers.py runs a split batch.

Threads of one process hand Python's GIL to each other at every NumPy call, and each
hand-over wakes the other thread: LeNet's many short operations ran 1.7x slower per half batch
on two threads than on one (benchmarks/README.md, phase 7), so its parts run faster in helper
processes. A ResNet's operations are long (3x3 convolutions over 28 x 28 images), the GIL is
seldom wanted, and threads, which need no copy of the network's state, were the faster way
there. FastNet times both and runs the faster (workers.WorkerChoice): they run the same parts
through the same kernels and add the same sums in the same order, so they give the same bits.

Worker 0 runs the network's own layers; worker k > 0 runs twins of them (``twin``): shallow
copies whose parameters share the same arrays of values but own their ``.grad``, so two
threads never add into one array. After backward, the twins' gradients are added into the
layers' own ``.grad``, in worker order.
"""

from __future__ import annotations

import copy
import threading

import numpy as np

from ..module import Module, Parameter
from .workers import TIMEOUT, BlasThreads, holds_modules, own_state, working_as


class Exchange:
    """Where worker threads trade their partial sums: each puts its sums in, waits for the
    others, and takes every worker's, in worker order (the same parts as the helper
    processes' exchange)."""

    def __init__(self, workers: int):
        # the timeout is a last resort: a worker that never comes (never seen) ends the pass
        # with an error instead of leaving the others waiting for ever
        self.barrier = threading.Barrier(workers, timeout=TIMEOUT)
        self.slots: list = [None] * workers

    def gather(self, worker: int, arrays: tuple) -> list:
        self.slots[worker] = tuple(arrays)
        self.barrier.wait()
        parts = list(self.slots)
        self.barrier.wait()  # every worker has the parts before a slot is reused
        return parts

    def abort(self) -> None:
        """Release the other workers with an error (one worker failed)."""
        self.barrier.abort()


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
        elif holds_modules(value):
            object.__setattr__(copied, name, [twin(item) for item in value])  # Sequential
    object.__setattr__(copied, "cache", None)
    return copied


def _twin_parameter(param: Parameter) -> Parameter:
    copied = Parameter.__new__(Parameter)
    copied.__dict__.update(_data=param.data, version=param.version, grad=np.zeros_like(param.grad))
    return copied


def refresh(original: Module, copied: Module) -> None:
    """Make the twin compute what the original computes now: the same arrays of values (an
    optimizer may have replaced them), buffers, mode and settings (``momentum`` ...)."""
    for source, target in zip(original.modules(), copied.modules()):
        for name, value in own_state(source):
            if isinstance(value, Parameter):
                mine = vars(target)[name]
                mine.__dict__["_data"], mine.version = value.data, value.version
                if mine.grad.shape != value.grad.shape or mine.grad.dtype != value.grad.dtype:
                    mine.grad = np.zeros_like(value.grad)
            else:
                object.__setattr__(target, name, value)


def add_twin_gradients(original: Module, twins: list) -> None:
    """Add each twin's ``.grad`` into the original's, in worker order, and zero the twin's."""
    params = original.parameters()
    for copied in twins:
        for param, mine in zip(params, copied.parameters()):
            param.grad += mine.grad
            mine.grad[...] = 0


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


def run_threads(work, count: int) -> list:
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
                thread = _Worker(lambda k=k: as_worker(k))
                # listed once started: a Ctrl-C inside start() leaves a thread that may never
                # run, and joining it would raise instead of the Ctrl-C (a started one that is
                # not listed is released by exchange.abort below; it is a daemon)
                thread.start()
                threads.append(thread)
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
