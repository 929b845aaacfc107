"""Module and Parameter: the shell every layer lives in.

A layer in npnet is a small object with two methods that mirror each other:

    y = layer.forward(x)              # compute the output, remember what backward needs
    grad_x = layer.backward(grad_y)   # chain rule: dL/dx from dL/dy, and dL/dparam into .grad

There is no autograd and no tape. ``Sequential`` calls ``forward`` on its layers in order and
``backward`` in reverse order; that is all backpropagation is. (``npnet.fast`` runs the same
network faster, but only where it has shown, on a small batch, that it computes what these
methods compute; see npnet/fast/__init__.py.)

``Module`` also gives the bookkeeping PyTorch users expect: ``parameters()``,
``zero_grad()``, ``train()`` / ``eval()``, ``state_dict()`` / ``load_state_dict()`` and
``astype(dtype)``. Attributes that hold a ``Parameter`` are parameters, attributes that hold a
``Module`` are children, and arrays named with ``register_buffer`` are buffers (state that is
saved but not trained, such as BatchNorm's moving averages).

A cache serves one backward, for the parameters it was made with. ``require_cache`` refuses,
with a message that says why, a backward that would compute wrong gradients silently:

- before any forward, or after ``astype`` dropped the cache;
- a second time after one forward (it would add the same gradients into ``.grad`` again);
- after a parameter changed since the forward (an optimizer step in between): setting
  ``self.cache`` notes each parameter's ``version``, and the backward compares.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter:
    """A trainable array and the gradient of the loss with respect to it.

    - data: the values, any shape S
    - grad: dL/d(data), same shape S and dtype; backward passes *add* into it (as PyTorch
      does), so call ``zero_grad()`` before each backward.
    - version: counts the changes to ``data``. Every assignment ``p.data = ...`` counts,
      and so do ``p.data -= lr * g`` and ``p.data *= 2`` (Python assigns their result back).
      A write into the array, ``p.data[...] = v``, is not an assignment to ``data``: code that
      writes so after a forward adds 1 to ``version`` itself (``load_state_dict`` does).
      A layer's backward refuses to run if a version changed since its forward.
    """

    def __init__(self, data: np.ndarray):
        data = np.asarray(data)
        if data.dtype not in FLOAT_DTYPES:
            data = data.astype(np.float32)
        self.version = 0
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, values: np.ndarray) -> None:
        self._data = values
        self.version += 1

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def astype(self, dtype) -> "Parameter":
        self.data = self.data.astype(dtype)
        self.grad = self.grad.astype(dtype)
        return self

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class CacheState(enum.Enum):
    """What stands in ``Module.cache`` once the forward's cache is gone, so that a backward
    can say why it cannot run (``None``: no forward yet)."""

    SPENT = "used by a backward pass"
    CONVERTED = "dropped by astype"


class Module:
    """Base class of every layer and container.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)``. ``forward`` stores what
    ``backward`` needs in ``self.cache``; ``backward`` takes it with ``require_cache()``,
    which raises a clear error if there is none, and checks ``grad_out`` with
    ``check_grad``, which marks the cache used: one backward per forward.
    """

    def __init__(self):
        # object.__setattr__ so these bookkeeping fields are not mistaken for state
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_buffer_names", [])
        object.__setattr__(self, "_forward_hooks", [])
        object.__setattr__(self, "_backward_hooks", [])
        object.__setattr__(self, "cache", None)

    # ------------------------------------------------------------------ the cache
    @property
    def cache(self):
        """What the last forward kept for backward: None before the first forward, a
        ``CacheState`` once a backward used it or ``astype`` dropped it."""
        return self._cache

    @cache.setter
    def cache(self, value) -> None:
        self._cache = value
        # the version of each parameter this forward computed with, for require_cache
        if value is None or isinstance(value, CacheState):
            self._cache_versions = ()
        else:
            self._cache_versions = [(name, param, param.version)
                                    for name, param in vars(self).items()
                                    if isinstance(param, Parameter)]

    # ----------------------------------------------------------------- the two passes
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``forward``, then the forward hooks. Called from outside any network, the input
        is converted first, as ``network_input`` says (a list, or float64 into float32)."""
        if not _calls.depth:
            x = network_input(self, x)
        with inside_network():  # the layers this one calls get their input as it comes
            out = self.forward(x)
        for hook in self._forward_hooks:
            hook(self, x, out)
        return out

    def run_backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``backward`` plus the backward hooks; containers call this on their children."""
        grad_in = self.backward(grad_out)
        for hook in self._backward_hooks:
            hook(self, grad_out, grad_in)
        return grad_in

    # ------------------------------------------------------------------------ hooks
    def register_forward_hook(self, hook: Callable) -> "HookHandle":
        """Call ``hook(module, input, output)`` after every forward. Returns a handle whose
        ``remove()`` detaches it."""
        self._forward_hooks.append(hook)
        return HookHandle(self._forward_hooks, hook)

    def register_backward_hook(self, hook: Callable) -> "HookHandle":
        """Call ``hook(module, grad_out, grad_in)`` after every backward run by a container
        (``Sequential.backward``). ``grad_in`` is None where the input gradient was not computed
        (the images, when ``npnet.fast`` runs the network with ``input_grad=False``)."""
        self._backward_hooks.append(hook)
        return HookHandle(self._backward_hooks, hook)

    # ----------------------------------------------------------------- bookkeeping
    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep ``array`` as state that is saved and converted by ``astype`` but not trained."""
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        object.__setattr__(self, name, array)

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator["Module"]:
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs. A Parameter that two layers share (tied weights,
        ``b.weight = a.weight``) is listed once, under its first name, as in PyTorch: an
        optimizer that got it twice would move it twice per step."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{module_name}.{name}" if module_name else name), value

    def parameters(self) -> list[Parameter]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name in self._buffer_names:
            yield (f"{prefix}.{name}" if prefix else name), getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    def train(self, mode: bool = True) -> "Module":
        """Training mode (the default): BatchNorm normalizes with batch statistics."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode: BatchNorm normalizes with its moving averages."""
        return self.train(False)

    def astype(self, dtype) -> "Module":
        """Convert every parameter and buffer to ``dtype`` (float32 or float64); returns self."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"{self.short_name()}.astype expects float32 or float64; got {dtype}")
        for module in self.modules():
            for param in [v for v in vars(module).values() if isinstance(v, Parameter)]:
                param.astype(dtype)
            for name in module._buffer_names:
                object.__setattr__(module, name, getattr(module, name).astype(dtype))
            if module.cache is not None and not isinstance(module.cache, CacheState):
                module.cache = CacheState.CONVERTED  # it holds arrays of the old dtype
        return self

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype of the first parameter or buffer (None for a stateless layer)."""
        for _, param in self.named_parameters():
            return param.data.dtype
        for _, buffer in self.named_buffers():
            return buffer.dtype
        return None

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and buffer by dotted name, e.g. ``'1.moving_mean'``."""
        state = OrderedDict()
        for name, param in self.named_parameters():
            state[name] = param.data.copy()
        for name, buffer in self.named_buffers():
            state[name] = np.array(buffer, copy=True)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Copy values from ``state`` into this module's parameters and buffers.

        Every entry must be present with the same shape; nothing is changed unless all fit.
        Values are converted to the module's current dtype.
        """
        own = self.state_dict()
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: state does not fit this network; "
                f"missing entries {missing}, unexpected entries {unexpected}"
            )
        for name, value in own.items():
            got = np.shape(state[name])
            if got != value.shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: entry '{name}' expects shape "
                    f"{value.shape}; got {got}"
                )
        params = dict(self.named_parameters())
        for name, value in state.items():
            if name in params:
                params[name].data[...] = value  # in place: views of it stay valid
                params[name].version += 1  # a write into the array does not count itself
        for module_name, module in self.named_modules():
            for buffer_name in module._buffer_names:
                full = f"{module_name}.{buffer_name}" if module_name else buffer_name
                current = getattr(module, buffer_name)
                object.__setattr__(
                    module, buffer_name, np.array(state[full], dtype=current.dtype, copy=True)
                )

    # --------------------------------------------------------------- presentation
    def extra_repr(self) -> str:
        return ""

    def short_name(self) -> str:
        """How error messages name this layer, e.g. ``Conv2d(1, 6, kernel_size=5)``."""
        return f"{type(self).__name__}({self.extra_repr()})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __getattr__(self, name: str):
        # only called when the usual lookup fails: say why a bookkeeping field is missing
        attribute = getattr(type(self), name, None)
        if isinstance(attribute, property):
            # a property (dtype, cache) that met a missing field: Python hides its error and
            # lands here, so run it again to raise that error, which says what is missing
            attribute.fget(self)
        if name in _SET_BY_MODULE_INIT:
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r}, which Module.__init__ "
                f"sets: {type(self).__name__}.__init__ must call super().__init__() first "
                f"(before it sets any parameter)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------ helpers for layers
    def require_cache(self):
        """The cache the last forward left, or a clear error if backward cannot use it: there
        is none, a backward used it already, or a parameter changed since the forward."""
        cache = self._cache
        if cache is None or isinstance(cache, CacheState):
            raise RuntimeError(no_cache_message(self.short_name(), cache))
        self._check_versions()
        return cache

    def _check_versions(self) -> None:
        """Refuse if a parameter changed since the forward that made the cache: this module's
        own, then every child's (a container's layers, last first, as backward meets them),
        all before any of them adds a gradient, so that a refusal changes nothing."""
        for name, param, version in self._cache_versions:
            if param.version != version:
                raise RuntimeError(parameter_changed_message(
                    f"{self.short_name()}.{name}", version, param.version))
        for _, child in reversed(list(self.named_children())):
            child._check_versions()

    def check_grad(self, grad_out: np.ndarray, expected_shape: tuple) -> np.ndarray:
        """grad_out as an ndarray, checked to have the shape of the last output.

        Once it fits, this backward will run: the cache is marked used, so that a second
        backward is refused instead of adding the same gradients into ``.grad`` again.
        (A grad_out of the wrong shape leaves the cache for a corrected call.)"""
        grad_out = np.asarray(grad_out)
        if grad_out.shape != tuple(expected_shape):
            raise ValueError(
                f"{self.short_name()}.backward expects grad_out of shape "
                f"{tuple(expected_shape)} (the shape of its last output); got {grad_out.shape}"
            )
        self.cache = CacheState.SPENT  # backward keeps its own reference until it returns
        return grad_out

    def check_float(self, x) -> np.ndarray:
        """x as an ndarray, checked to be float32 or float64 (any shape)."""
        x = np.asarray(x)
        if x.dtype not in FLOAT_DTYPES:
            scale = ("; if these are images stored as integers 0-255, scale them to [0, 1] "
                     "first: x.astype(np.float32) / 255" if x.dtype.kind in "iub" else "")
            raise TypeError(
                f"{self.short_name()} expects a float32 or float64 input; got {x.dtype}{scale}"
            )
        return x

    def check_input(self, x, ndim: int, layout: str, channels: int | None = None,
                     channel_axis: int = 1) -> np.ndarray:
        """Check rank, channel count and dtype of an input; return it as an ndarray.

        layout names the axes for the message, e.g. ``'(N, C, H, W)'``.
        """
        x = np.asarray(x)
        if x.ndim != ndim or (channels is not None and x.shape[channel_axis] != channels):
            expected = layout if channels is None else layout.replace("C", str(channels), 1)
            raise ValueError(f"{self.short_name()} expects input {expected}; got {x.shape}")
        check_not_empty(self.short_name(), x.shape)
        x = self.check_float(x)
        own = self.dtype
        if own is not None and x.dtype != own:
            raise TypeError(
                f"{self.short_name()} holds {own} parameters but got a {x.dtype} input. "
                f"Inside a network: the layer before it returned {x.dtype} (a layer must "
                f"return the dtype it is given), or only part of the network was converted "
                f"(net.astype(np.{own}) converts all of it). Calling forward directly: call "
                f"the layer, layer(x), which converts x, or pass x.astype(np.{own})"
            )
        return x


# the fields Module.__init__ sets, which a subclass that forgot super().__init__() lacks
_SET_BY_MODULE_INIT = ("training", "_buffer_names", "_forward_hooks", "_backward_hooks",
                       "_cache", "_cache_versions")


# ------------------------------------------------------------------ a network's entry
class _CallDepth(threading.local):
    depth = 0  # how many module calls this thread is inside: 0 at a network's entry


_calls = _CallDepth()


@contextlib.contextmanager
def inside_network():
    """Within this, calling a module does not convert its input: a layer inside a network
    refuses a dtype that differs from its own instead (a mistake to show, not to hide)."""
    _calls.depth += 1
    try:
        yield
    finally:
        _calls.depth -= 1


def network_input(module, x) -> np.ndarray:
    """x as ``module`` takes it at a network's entry, NumPy habits welcome (as Keras does):

    - a list (or anything array-like) becomes an array of the network's dtype;
    - a float array of another dtype, such as float64 (NumPy's default, ``np.random.rand``)
      into a float32 network, is converted to the network's dtype, silently.

    Anything else goes on as it is, for the first layer to accept or refuse (integers are
    refused: images stored as 0-255 need scaling). A network without parameters or buffers
    (dtype None) takes float arrays as they are.
    """
    own = module.dtype
    if not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=own)
    if own is not None and x.dtype != own and x.dtype.kind == "f":
        x = x.astype(own)
    return x


# ------------------------------------------------------- messages shared with npnet.fast
def no_cache_message(who: str, cache) -> str:
    """Why ``who``.backward has no cache to use (cache: None or a ``CacheState``)."""
    if cache is CacheState.SPENT:
        return (f"{who}.backward called twice after one forward: the first backward used up "
                f"what the forward kept, and its gradients are already in .grad (a second "
                f"would add them again). To accumulate gradients over several batches on "
                f"purpose, run forward and backward once per batch (backward adds into .grad) "
                f"and call optimizer.zero_grad() only between steps")
    if cache is CacheState.CONVERTED:
        return (f"{who}.backward called after the network was converted with astype: what the "
                f"forward pass kept has the old dtype and was dropped; run forward again "
                f"after astype, then backward")
    return (f"{who}.backward called before forward: there is nothing to differentiate yet "
            f"(call forward, then backward once)")


def parameter_changed_message(name: str, old: int, new: int) -> str:
    """A parameter changed between the forward and the backward that would use its cache."""
    return (f"{name} changed (version {old} -> {new}, by an optimizer step, astype or an "
            f"assignment to .data) after the forward pass whose cache this backward would "
            f"use: its gradients would be those of the old values. Call optimizer.step() "
            f"after backward, not between forward and backward, or run forward again")


def check_not_empty(who: str, shape: tuple) -> None:
    """Refuse a batch of no samples (N = 0): it has nothing to compute, and statistics over
    it are NaN (BatchNorm's moving averages would become NaN for good)."""
    if len(shape) > 0 and shape[0] == 0:
        raise ValueError(f"{who} got an empty batch, input of shape {tuple(shape)}; it needs "
                         f"at least one sample (skip empty batches)")


class HookHandle:
    """Returned by ``register_*_hook``; ``remove()`` detaches the hook."""

    def __init__(self, hooks: list, hook: Callable):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)
