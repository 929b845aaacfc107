"""Workers taking turns on one core: how a split batch runs when the machine is busy.

A helper process needs a core of its own. Beside a busy program the helper and this process
take turns with one core, and at each BatchNorm one of them waits for the other to be
scheduled again: LeNet's training step took 44 ms split over processes there, against 30 ms
on one worker (benchmarks/README.md, phase 7). Here the same parts run on threads of this
process instead, one at a time: a worker runs until its next BatchNorm exchange and hands the
turn to the next (``Turns``). That is the work of one worker plus a hand-over per exchange,
and it computes what the helper processes compute, bit for bit: the same parts, the same kernels, the same sums added in the same
order. So FastNet can pick either way by timing alone (workers.WorkerChoice).

Worker 0 runs the network's own layers; worker k > 0 runs twins of them (``twin``): shallow
copies whose parameters share the same arrays of values but own their ``.grad``. After
backward, the twins' gradients are added into the layers' own ``.grad``, in worker order.
"""

from __future__ import annotations

import copy
import threading

import numpy as np

from ..module import Module, Parameter
from .workers import TIMEOUT, BlasThreads, _holds_modules, add_in_order, working_as


class Turns:
    """The workers' exchange when they take turns: one runs at a time, and the turn passes
    in worker order (0, 1, ..., 0, ...) at each BatchNorm and at the end of a worker's pass.

    A worker that reaches an exchange puts its sums in its slot. If the others' are all in,
    it adds them up (``add_in_order``: the same numbers as the helper processes' exchange)
    and goes on with the totals, keeping the turn; if not, it passes the turn on and waits
    until the turn is back, by then with the totals. That is one hand-over per exchange for
    two workers, each a thread's wake-up (tens of microseconds)."""

    def __init__(self, workers: int):
        self.count = workers
        self.changed = threading.Condition()
        self.holder = 0  # whose turn it is
        self.done = [False] * workers
        self.rounds = [0] * workers  # exchanges each worker has been through
        self.slots: dict = {}   # round -> each worker's sums
        self.totals: dict = {}  # round -> (the totals, how many workers took them)
        self.broken = False

    def wait_for_turn(self, worker: int) -> None:
        with self.changed:
            while self.holder != worker and not self.broken:
                if not self.changed.wait(TIMEOUT):  # a last resort: never seen
                    self.broken = True
            if self.broken:
                raise threading.BrokenBarrierError  # another worker failed

    def pass_turn(self, worker: int, finished: bool = False) -> None:
        """Give the turn to the next worker (in worker order) that has not finished."""
        with self.changed:
            self.done[worker] = self.done[worker] or finished
            for step in range(1, self.count + 1):
                following = (worker + step) % self.count
                if not self.done[following]:
                    self.holder = following
                    break
            self.changed.notify_all()

    def total(self, worker: int, arrays: tuple) -> tuple:
        round_ = self.rounds[worker]
        self.rounds[worker] += 1
        slots = self.slots.setdefault(round_, [None] * self.count)
        slots[worker] = tuple(arrays)
        if all(slot is not None for slot in slots):
            self.totals[round_] = (add_in_order(slots), 0)  # and how many took them
            del self.slots[round_]
        if round_ not in self.totals:
            self.pass_turn(worker)
            self.wait_for_turn(worker)
        totals, taken = self.totals[round_]
        if taken + 1 == self.count:  # every worker has its totals
            del self.totals[round_]
        else:
            self.totals[round_] = (totals, taken + 1)
        return totals

    def abort(self) -> None:
        """Release the other workers with an error (one worker failed)."""
        with self.changed:
            self.broken = True
            self.changed.notify_all()


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


def run_in_turns(work, count: int) -> list:
    """[work(0), ..., work(count - 1)], each on a thread of its own (work(0) on this one),
    one running at a time, sharing one Exchange, with BLAS at one thread. If one raises, the
    others are released from the exchange and its error is raised here; so is a Ctrl-C,
    which this thread notices within 0.1 s while it waits."""
    exchange = Turns(count)

    def as_worker(k):
        with working_as(exchange, k):
            try:
                exchange.wait_for_turn(k)
                result = work(k)
            except BaseException:
                exchange.abort()  # the others would wait for this one forever
                raise
            exchange.pass_turn(k, finished=True)
            return result

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
