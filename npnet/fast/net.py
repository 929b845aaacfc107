"""FastNet: a network's layers run by the backend's kernels, where those are proven equal.

    fast = FastNet(net)                  # the same layers, parameters and buffers as net
    logits = fast(x)                     # x (N, C, H, W): moved to (C, H, W, N) once
    fast.backward(grad_logits)           # every .grad, as net.backward would fill it

The network's layers run as one Chain (chain.py), planned and proven once per structure, mode,
input shape and code version; a Residual or Concat block runs each of its branches as a Chain
of its own (branches.py).
"""

from __future__ import annotations

import contextlib
import time
from typing import NamedTuple

import numpy as np

from ..container import Sequential, check_each_layer_once
from ..module import (CacheState, Module, Parameter, check_not_empty, inside_network,
                      network_input, no_cache_message, parameter_changed_message)
from ..dropout import Dropout
from .chain import KERNELS, FastPathWarning, Planner, kernel_for, open_up  # noqa: F401
from .layout import from_batch_last, to_batch_last
from .memory import keep_freed_memory
from .proof import own_methods
from .threads import add_twin_gradients, refresh, run_threads, twin
from .workers import (MIN_SAMPLES_PER_WORKER, BlasThreads, StatePlaces, WorkerChoice, alone,
                      default_workers, network_key, network_state, structure, team_for,
                      threads_setting, working_as)


class LastPass(NamedTuple):
    """What a FastNet's forward leaves for its backward."""

    kernels: list        # the plan that ran, each kernel holding its cache (worker 0's)
    output_shape: tuple  # batch first, for checking grad_out
    versions: list       # (parameter, its version) as the forward computed with it
    sizes: tuple = ()    # the samples in each worker's part, when workers ran the batch


class FastNet:
    """Runs ``net`` on the fast backend. Everything but running it is ``net``'s own:
    ``parameters()``, ``state_dict()``, ``training``, ``dtype``... reach the wrapped network.

    - net: a Sequential (or any single layer)
    - input_grad: whether ``backward`` returns dL/dx. False (the default) for images, which
      need no gradient: the first layer then skips that work, as PyTorch does for inputs that
      do not require grad.
    - workers: how many parts a batch is cut into, each on a core (workers.py). None (the
      default): NPNET_THREADS, else the cores this process may use, at most 2, and each pass
      may also run on one worker when that is faster (a busy machine): two runs then agree to
      float rounding. A number: always split (from 32 samples), every run the same bits.
    - executor: how the other parts run, None (timed), "processes" or "threads" (the same
      bits), or "one"; for tests and benchmarks.
    """

    def __init__(self, net: Module, input_grad: bool = False, workers: int | None = None, *,
                 executor: str | None = None, _quiet: bool = False):
        if not isinstance(net, Module):
            raise TypeError(f"FastNet expects an npnet Module; got {type(net).__name__}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"FastNet expects workers >= 1 (each on a part of the batch); "
                             f"got {workers!r}")
        if executor not in (None, "processes", "threads", "one"):
            raise ValueError(f"FastNet expects executor None (timed), 'processes', 'threads' "
                             f"or 'one'; got {executor!r}")
        keep_freed_memory()  # each step's arrays reuse the last step's pages (memory.py)
        self.net = net
        self.input_grad = input_grad
        self.workers = default_workers() if workers is None else workers
        # split over processes or threads (the same bits), or with no count set on one
        # worker too: whichever is fastest now (workers.WorkerChoice)
        ways = ("processes", "threads")
        if workers is None and not threads_setting():
            ways += ("one",)
        self._choice = WorkerChoice(ways if executor is None else (executor,))
        self._timed = None
        self._planner = Planner(net, announce=not _quiet)  # says each notice once per FastNet
        self._chain = self._planner.chain(self.layers, input_grad)
        # what the last forward left for backward: a LastPass; AS_WRITTEN: the network ran
        # as written, its layers keep their caches; None: no forward (or a failed one); a
        # CacheState: used up by backward, or dropped by astype
        self._last = None
        self._key = network_key()  # how helper processes (workers.py) name their copy of net
        self._way = None  # how the last split pass ran: "processes" or "threads"
        self._team = None  # the helper processes of the last split pass, until its backward
        self._state_places = None  # where the network's state lives (workers.StatePlaces)
        self._twins: list = []  # FastNets over twins of net, for worker threads 1, 2, ...
        self._twins_of = None   # the structure of net they were made for
        self._splits = 0  # passes run split over workers (for tests and benchmarks)
        self._planned_ahead: set = set()  # ids of the plans whose blocks are planned too

    def __getattr__(self, name):
        # only called for names FastNet itself lacks: parameters, state_dict, modules, ...
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)

    def train(self, mode: bool = True) -> "FastNet":
        self.net.train(mode)
        return self

    def eval(self) -> "FastNet":
        return self.train(False)

    def astype(self, dtype) -> "FastNet":
        self.net.astype(dtype)
        if isinstance(self._last, LastPass):  # the kernels kept the old dtype
            self._release()
            self._last = CacheState.CONVERTED
        return self

    def __repr__(self) -> str:
        return f"FastNet({self.net!r})"

    # --------------------------------------------------------------------------- running
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, ...) -> the network's output, batch first. x is converted as at any
        network's entry (``npnet.module.network_input``: a list, float64 into float32)."""
        x = network_input(self.net, x)
        with inside_network():
            return self._forward(x)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        self._release()  # the last pass's caches: a new forward makes them useless
        self._last = None  # until this forward has run through: no backward after a failed one
        self._timed = None  # (plan, way, samples) of a pass timed for the WorkerChoice
        if x.ndim < 2:  # no batch axis to move: nothing to gain
            out = self.net(x)
            self._last = AS_WRITTEN
            return out
        check_not_empty("FastNet", x.shape)  # before any kernel changes any state
        kernels = self.plan(x)
        # the version of every parameter this forward computes with, for backward to check
        versions = [(param, param.version) for param in _parameters(kernels)]
        parts = self._parts(x)
        way = "one"
        if len(parts) > 1:
            self._plan_ahead(kernels, x)
            if not self._planner.announced:  # else a layer runs as written: see _shareable
                way = self._choice.pick(id(kernels))
        start = time.perf_counter()
        if way != "one":
            out = self._forward_parts(parts, kernels, versions, way)
        else:
            with self._blas_threads():
                out = self._chain.forward(to_batch_last(x), kernels)
            out = np.ascontiguousarray(from_batch_last(out))
        if len(parts) > 1:  # a pass that could have gone either way: timed, per sample
            self._timed = (id(kernels), way, len(x))
            self._choice.record(*self._timed[:2], "forward",
                                (time.perf_counter() - start) / len(x))
        if way != "one":
            return out
        if isinstance(self.net, Sequential):  # opened up: the chain ran its layers, not it
            for hook in self.net._forward_hooks:
                hook(self.net, x, out)
        self._last = LastPass(kernels, out.shape, versions)
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """grad_out (shape of the last output) -> dL/dx (None unless ``input_grad``); adds every
        parameter's gradient into its ``.grad``. Refused, as a layer's backward is, before a
        forward, a second time after one, after astype, and after a parameter changed."""
        if self._last is AS_WRITTEN:
            return self.net.backward(grad_out)
        if not isinstance(self._last, LastPass):
            raise RuntimeError(no_cache_message("FastNet", self._last))
        for param, version in self._last.versions:
            if param.version != version:
                raise RuntimeError(parameter_changed_message(self._name_of(param), version,
                                                             param.version))
        out_shape = self._last.output_shape
        grad_out = np.asarray(grad_out)
        if grad_out.shape != out_shape:
            raise ValueError(f"FastNet.backward expects grad_out of shape {out_shape} (the "
                             f"shape of its last output); got {grad_out.shape}")
        start, timed, self._timed = time.perf_counter(), self._timed, None
        if self._last.sizes:
            grads = self._backward_parts(grad_out)
        else:
            with self._blas_threads():
                grad_x = self._chain.backward(to_batch_last(grad_out))
            grads = [None if grad_x is None else from_batch_last(grad_x)]
        if timed is not None:
            plan, way, samples = timed
            self._choice.record(plan, way, "backward", (time.perf_counter() - start) / samples)
        self._release()
        self._last = CacheState.SPENT
        if grads[0] is None or not self.input_grad:
            return None
        return np.ascontiguousarray(grads[0] if len(grads) == 1 else np.concatenate(grads))

    # ------------------------------------------------------------------- the workers
    def _blas_threads(self):
        """With two workers or more, OpenBLAS at one thread in a pass on one worker too: its
        second thread keeps spinning after a product, on the core a helper process needs
        next (a split pass then took 35 ms instead of 24), and beside a busy program it
        waits for a core that is taken (phase 6: 1,700 images/s)."""
        return BlasThreads.one_per_worker() if self.workers > 1 else contextlib.nullcontext()

    def _parts(self, x: np.ndarray) -> list:
        """x cut into one part per worker (workers.py), or [x] when it runs on one: one
        worker asked for, a batch too small to share, or a network that is not safe to run
        on copies (hooks, which must see whole batches; Dropout, whose one generator draws
        the masks in order; a learner's own layer, which may keep state of its own)."""
        count = min(self.workers, len(x) // MIN_SAMPLES_PER_WORKER)
        if count < 2 or not self._shareable():
            return [x]
        return split_batch(x, count)

    def _plan_ahead(self, kernels: list, x: np.ndarray) -> None:
        """Once per plan, before its first pass on workers: run it on two samples of x here,
        on the calling thread, and put every buffer back. The kernels inside residual and
        dense blocks plan (and prove) themselves at their first pass; this keeps that off the
        workers' threads, where a proof's BatchNorm would join the workers' exchange, and
        names any layer that runs as written before the batch is cut."""
        if id(kernels) in self._planned_ahead:
            return
        buffers = [(module, name, getattr(module, name)) for module in self.net.modules()
                   for name in module._buffer_names]
        try:
            with alone():
                self._chain.forward(to_batch_last(x[:2]), kernels)
        finally:
            for module, name, value in buffers:  # BatchNorm replaces its arrays: put back
                object.__setattr__(module, name, value)
            self._chain.release()
        self._planned_ahead.add(id(kernels))

    def _shareable(self) -> bool:
        if self._planner.announced:
            # a layer runs as written (edited, or its kernel disagrees): on a part of the
            # batch, an edited BatchNorm would take statistics of that part only
            return False
        for module in self.net.modules():
            if module._forward_hooks or module._backward_hooks or isinstance(module, Dropout):
                return False
            if kernel_for(module) is None or own_methods(module):
                return False
        return True

    def _forward_parts(self, parts: list, kernels: list, versions: list,
                       way: str) -> np.ndarray:
        """Worker 0's part here, the others' in helper processes (workers.py) or on threads
        (threads.py): the same bits either way."""
        if way == "processes":
            outs = self._forward_in_processes(parts, kernels)
        else:
            outs = self._forward_on_threads(parts, kernels)
        out = np.ascontiguousarray(np.concatenate(outs, axis=0))
        self._way, self._splits = way, self._splits + 1
        self._last = LastPass(kernels, out.shape, versions, tuple(len(part) for part in parts))
        return out

    def _backward_parts(self, grad_out: np.ndarray) -> list:
        """dL/dx of each part (batch first; None if not asked for), the other workers'
        parameter gradients added into the layers' own, in worker order."""
        grad_parts = np.split(grad_out, np.cumsum(self._last.sizes)[:-1])
        if self._way == "processes":
            return self._backward_in_processes(grad_parts)
        return self._backward_on_threads(grad_parts)

    # helper processes (workers.py)
    def _forward_in_processes(self, parts: list, kernels: list) -> list:
        shape = structure(self.net)
        if self._state_places is None or not self._state_places.fits(shape):
            self._state_places = StatePlaces(self.net, shape)
        settings, arrays = network_state(self.net, self._state_places)
        team = team_for(self.net, self._key, self.input_grad, len(parts) - 1, shape)
        try:
            for worker, (helper, part) in enumerate(zip(team.helpers, parts[1:]), 1):
                helper.send("forward", {"x": part, **arrays}, key=self._key,
                            settings=settings, worker=worker, workers=len(parts))
            with BlasThreads.one_per_worker(), working_as(team, 0):
                out = self._chain.forward(to_batch_last(parts[0]), kernels)
            outs = [from_batch_last(out)] + [arrays["y"] for _, arrays in
                                             team.results("output")]
        except BaseException:
            team.stop()  # a helper may be mid-pass: new ones for the next pass
            raise
        self._team = team
        return outs

    def _backward_in_processes(self, grad_parts: list) -> list:
        team, self._team = self._team, None
        try:
            for worker, (helper, grad) in enumerate(zip(team.helpers, grad_parts[1:]), 1):
                helper.send("backward", {"grad": grad}, key=self._key, worker=worker,
                            workers=len(grad_parts), input_grad=self.input_grad)
            with BlasThreads.one_per_worker(), working_as(team, 0):
                grad_x = self._chain.backward(to_batch_last(grad_parts[0]))
            results = [arrays for _, arrays in team.results("grads")]
        except BaseException:
            team.stop()
            raise
        params = self.net.parameters()
        for arrays in results:
            for i, param in enumerate(params):
                param.grad += arrays[f"{i}"]
        return [None if grad_x is None else from_batch_last(grad_x)] + \
            [arrays.get("dL/dx") for arrays in results]

    # threads (threads.py)
    def _twin_nets(self, count: int) -> list:
        """FastNets over ``count`` twins of the network, up to date."""
        shape = structure(self.net)
        if self._twins_of != shape or len(self._twins) != count:
            self._twins = [FastNet(twin(self.net), self.input_grad, workers=1, _quiet=True)
                           for _ in range(count)]
            self._twins_of = shape
        for helper in self._twins:
            refresh(self.net, helper.net)
        return self._twins

    def _forward_on_threads(self, parts: list, kernels: list) -> list:
        helpers = self._twin_nets(len(parts) - 1)
        chains = [self._chain] + [helper._chain for helper in helpers]
        plans = [kernels]
        for helper, part in zip(helpers, parts[1:]):
            plans.append(helper.plan(part))
            helper._plan_ahead(plans[-1], part)
        outs = run_threads(lambda k: chains[k].forward(to_batch_last(parts[k]), plans[k]),
                           len(parts))
        return [from_batch_last(out) for out in outs]

    def _backward_on_threads(self, grad_parts: list) -> list:
        chains = [self._chain] + [helper._chain for helper in self._twins]
        grads = run_threads(lambda k: chains[k].backward(to_batch_last(grad_parts[k])),
                            len(chains))
        for helper in self._twins:
            helper._chain.release()
        add_twin_gradients(self.net, [helper.net for helper in self._twins])
        return [None if grad is None else from_batch_last(grad) for grad in grads]

    def _release(self) -> None:
        """Drop what the kernels of the last pass kept for backward (the activations)."""
        if isinstance(self._last, LastPass):
            self._chain.release()  # (a helper process releases its own after backward, or
            # at its next forward)
            if self._last.sizes and self._way == "threads":
                for helper in self._twins:
                    helper._chain.release()

    def _name_of(self, param: Parameter) -> str:
        """'Linear(256, 120).weight (layer 9)': how an error names a parameter."""
        for module_name, module in self.net.named_modules():
            for name, value in vars(module).items():
                if value is param:
                    where = f" (layer {module_name})" if module_name else ""
                    return f"{module.short_name()}.{name}{where}"
        return repr(param)  # no longer in the network

    # -------------------------------------------------------------------------- planning
    def layers(self) -> list:
        """The layers in the order they run: nested Sequentials opened (unless hooked). A
        layer object at two places is refused, as Sequential refuses it."""
        check_each_layer_once(self.net, "FastNet")
        if isinstance(self.net, Sequential):
            return [leaf for layer in self.net.layers for leaf in open_up(layer)]
        return [self.net]

    def plan(self, x: np.ndarray) -> list:
        """The kernels that run a batch like x (batch first), made (and proven) on first use."""
        return self._chain.plan(x.shape[1:], x.dtype)


# Worker 0 takes this many samples more than the others: a helper starts later (its message,
# the network's state), and worker 0 would otherwise wait for it at the end of every pass, and
# a process that waits sleeps and is slow to wake. LeNet's evaluation at batch 256 took 5.3 ms
# with worker 0 on 55% of the batch, 7.3 ms on 50% (benchmarks/README.md, phase 7). A fixed
# number, not a share: on a long pass (a ResNet at batch 1000) the lag is nothing.
FIRST_PART_EXTRA = 24


def split_batch(x: np.ndarray, count: int) -> list:
    """x cut into ``count`` parts along the batch axis: the first FIRST_PART_EXTRA samples
    larger than each of the others, which keep MIN_SAMPLES_PER_WORKER at least (the same
    sizes for the same batch size, every time)."""
    first = min((len(x) + (count - 1) * FIRST_PART_EXTRA) // count,
                len(x) - (count - 1) * MIN_SAMPLES_PER_WORKER)
    first = max(first, len(x) // count)
    return [x[:first]] + np.array_split(x[first:], count - 1)


AS_WRITTEN = "as written"  # FastNet._last when the network ran as written (input of ndim < 2)


def _parameters(kernels) -> list:
    """The parameters of the layers the kernels stand for (those inside blocks too), in the
    order backward meets the layers (last layer first, as Sequential's backward checks them)."""
    return [param for kernel in reversed(kernels) for layer in reversed(kernel.layers)
            for param in layer.parameters()]
